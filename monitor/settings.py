"""Settings: one TOML file plus environment overrides, read once into frozen, validated objects.

Only the CLI calls :func:`load_settings`; every other module receives what it needs. Secrets come
from the environment or from files (``…_FILE``), never from the TOML file, and are held as
:class:`Secret`, whose ``repr`` and ``str`` never show the value.

Environment overrides: ``BEARWATCH_<SECTION>_<KEY>`` (upper case), e.g. ``BEARWATCH_KAFKA_BOOTSTRAP``;
``BEARWATCH_ES_…`` also works for the elasticsearch section (``BEARWATCH_ES_URL``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from monitor.errors import SettingsError


class Secret:
    """A credential. Its value is reachable only through :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = "127.0.0.1:19092"
    news_topic: str = "bearwatch.news"
    scored_topic: str = "bearwatch.news.scored"
    dlq_topic: str = "bearwatch.news.dlq"
    group: str = "bearwatch-score"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    create_topics: bool = True  # create missing topics at start-up (partitions below)
    partitions: int = 3
    connect_timeout_seconds: float = 30.0  # how long a client waits for the first broker at start-up
    # The longest pause between reconnection attempts (kafka-python's default is 30 s): after a broker
    # restart, scoring resumes within this long of the broker being back.
    reconnect_backoff_max_seconds: float = 5.0

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by kafka-python's consumer, producer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
            "bootstrap_timeout_ms": int(self.connect_timeout_seconds * 1000),
            "reconnect_backoff_max_ms": int(self.reconnect_backoff_max_seconds * 1000),
        }
        if self.sasl_mechanism:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.reveal() if self.sasl_password else None,
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                options[name] = getattr(self, name)
        return options


@dataclass(frozen=True)
class ElasticsearchSettings:
    url: str = "http://127.0.0.1:19200"
    index_prefix: str = "bearwatch"
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0

    def index(self, name: str) -> str:
        return f"{self.index_prefix}-{name}"


@dataclass(frozen=True)
class ModelSettings:
    path: str = ""  # a model directory, or a registry (its CURRENT version); empty: the model the package ships
    device: str = "auto"  # auto | cpu | cuda (cuda: a missing GPU is fatal)
    variant: str | None = None  # fp32 | int8; default: what the manifest serves
    threads: int = 0  # CPU threads for ONNX Runtime (0: every CPU this process may use)
    batch_size: int = 0  # 0: each item its own run on CPU (scores independent of batch-mates), 64 on a GPU
    reload_check_seconds: float = 10.0


@dataclass(frozen=True)
class MonitorSettings:
    batch_size: int = 256  # messages per poll
    poll_timeout_seconds: float = 1.0
    dedup_window_hours: float = 24.0
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    progress_seconds: float = 30.0  # a progress log line (items/s, lag, batches) this often; 0: none


@dataclass(frozen=True)
class RetrievalSettings:
    history: str = "bm25"  # off | bm25 | knn | both: related history recorded with each item
    k: int = 3
    lookback_hours: float = 72.0
    memory: bool = True  # analysts' labels (the labels index) move the scores of models with memory fusion
    memory_search: str = "mirror"  # mirror (in the daemon, kept current) | knn (a kNN request per item)


@dataclass(frozen=True)
class DetectionSettings:
    bucket_minutes: float = 15.0
    lateness_minutes: float = 2.0
    alpha: float = 1e-3  # tail probability under which a window is a spike (lower: fewer, later alerts)
    early_check_minutes: float = 1.0  # the open bucket is also checked this often (0: at its close only)
    min_confidence: float = 0.85  # a negative alert needs its top 3 items' mean p(bearish) at least this
    snapshot_every_batches: int = 10
    batch_size: int = 500


@dataclass(frozen=True)
class SlackAlertSettings:
    channel: str | None = None  # with a bot token (BEARWATCH_SLACK_TOKEN): chat.postMessage
    token: Secret | None = None
    webhook_url: Secret | None = None  # or an incoming webhook (BEARWATCH_SLACK_WEBHOOK_URL)
    base_url: str = "https://slack.com/api/"
    kibana_url: str | None = None  # links in alerts open the drill-down dashboard here
    timeout_seconds: float = 10.0  # one Slack request; a timeout is retried like a 5xx


@dataclass(frozen=True)
class TrainerSettings:
    registry: str = "registry"  # the model registry the monitor serves from (model.path)
    recipe: str = "training/configs/default.toml"
    workdir: str = "runs/trainer"
    schedule: str = "interval:6h"  # "interval:<n>h|m" or a 5-field cron expression ("0 3 * * 1-5")
    timezone: str = "UTC"
    misfire_grace_seconds: int = 3600  # a run up to an hour late still runs (APScheduler's default is 1 s)
    min_new_labels: int = 50  # labels added or corrected since the current model before it retrains
    eval_files: str = ""  # fixed evaluation set, never trained on: "path:task,path:task"
    margin: float = 0.005  # the candidate's mean macro-F1 must beat the current one's by this much
    tolerance: float = 0.01  # and no head may lose more than this
    lock_stale_seconds: int = 6 * 3600
    inbox: str = ""  # a folder whose labelled files (CSV/JSONL) are imported as labels; "" = none
    inbox_poll_seconds: int = 60  # how often `trainer run` looks in the inbox (a cycle also looks first)
    notify_slack: str = "off"  # "off", "promoted" or "all" (promoted and rejected), through the [slack] settings


@dataclass(frozen=True)
class MetricsSettings:
    port: int = 9108  # 0: no HTTP endpoint
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    slack: SlackAlertSettings = field(default_factory=SlackAlertSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)

    def __post_init__(self) -> None:
        if self.model.device not in ("auto", "cpu", "cuda"):
            raise SettingsError(f"model.device must be auto, cpu or cuda, not {self.model.device!r}")
        if self.retrieval.memory_search not in ("mirror", "knn"):
            raise SettingsError(f"retrieval.memory_search must be mirror or knn, not {self.retrieval.memory_search!r}")
        if self.retrieval.history not in ("off", "bm25", "knn", "both"):
            raise SettingsError(f"retrieval.history must be off, bm25, knn or both, not {self.retrieval.history!r}")
        if self.monitor.batch_size < 1 or self.model.batch_size < 0:
            raise SettingsError("monitor.batch_size must be at least 1, model.batch_size at least 0")
        if self.trainer.notify_slack not in ("off", "promoted", "all"):
            raise SettingsError(f"trainer.notify_slack must be off, promoted or all, not {self.trainer.notify_slack!r}")
        if self.elasticsearch.api_key and self.elasticsearch.username:
            raise SettingsError("give either an Elasticsearch API key or a username/password, not both")
        d = self.detection
        if not (0 < d.alpha < 1 and d.bucket_minutes > 0 and d.lateness_minutes >= 0):
            raise SettingsError("detection.alpha must be in (0, 1), bucket_minutes above 0, lateness_minutes 0 or more")
        if not 0 <= d.early_check_minutes < d.bucket_minutes or not 0 <= d.min_confidence < 1:
            raise SettingsError(
                "detection.early_check_minutes must be 0 (off) or less than bucket_minutes, min_confidence in [0, 1)"
            )


SECRETS = {
    ("kafka", "sasl_password"): "BEARWATCH_KAFKA_SASL_PASSWORD",
    ("elasticsearch", "api_key"): "BEARWATCH_ES_API_KEY",
    ("elasticsearch", "password"): "BEARWATCH_ES_PASSWORD",
    ("slack", "token"): "BEARWATCH_SLACK_TOKEN",
    ("slack", "webhook_url"): "BEARWATCH_SLACK_WEBHOOK_URL",
}


def _convert(value: str, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={value!r} is not a boolean")
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number") from None
    return value


def _secret_from_env(env: Mapping[str, str], variable: str) -> Secret | None:
    if env.get(variable):
        return Secret(env[variable])
    if env.get(variable + "_FILE"):
        try:
            return Secret(Path(env[variable + "_FILE"]).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise SettingsError(f"{variable}_FILE: cannot read {env[variable + '_FILE']}: {exc.strerror}") from None
    return None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    raw: dict[str, dict] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    sections = {}
    for section in fields(Settings):
        cls: Any = section.default_factory  # every section is a dataclass with a default factory
        current = cls()
        given = dict(raw.pop(section.name, {}))
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        prefixes = [f"BEARWATCH_{section.name.upper()}_"] + (
            ["BEARWATCH_ES_"] if section.name == "elasticsearch" else []
        )
        values = {}
        for f in fields(cls):
            if (section.name, f.name) in SECRETS:
                if f.name in given:
                    raise SettingsError(
                        f"{section.name}.{f.name} is a secret: set {SECRETS[(section.name, f.name)]} (or …_FILE), "
                        "not the settings file"
                    )
                values[f.name] = _secret_from_env(env, SECRETS[(section.name, f.name)])
                continue
            variable = next((p + f.name.upper() for p in prefixes if p + f.name.upper() in env), None)
            if variable is not None:
                values[f.name] = _convert(env[variable], getattr(current, f.name), variable)
            elif f.name in given:
                values[f.name] = given[f.name]
        sections[section.name] = replace(current, **values)
    if raw:
        raise SettingsError(f"unknown section(s): {', '.join(sorted(raw))}")
    return Settings(**sections)
