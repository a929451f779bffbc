"""Settings: one TOML file plus environment overrides, read once into frozen, validated objects.

Only the CLI calls :func:`load_settings`; every other module receives what it needs. Secrets come
from the environment or from files (``…_FILE``), never from the TOML file, and are held as
:class:`Secret`, whose ``repr`` and ``str`` never show the value.

Environment overrides: ``BEARWATCH_<SECTION>_<KEY>`` (upper case), e.g. ``BEARWATCH_KAFKA_BOOTSTRAP``;
``BEARWATCH_ES_…`` also works for the elasticsearch section (``BEARWATCH_ES_URL``). Without a path,
``BEARWATCH_CONFIG`` names the settings file.

Every section is a pydantic dataclass: each value is checked against its type, range or set of
choices as it is loaded (from the file, the environment or a ``dataclasses.replace``), and the
first bad one ends the load with one :class:`SettingsError` line that names the setting, where it
came from and what it must be.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import core_schema

from monitor.errors import SettingsError

# Value types shared by the sections: what each range means is in the name.
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]  # 0: no endpoint
Fraction = Annotated[float, Field(ge=0, lt=1)]
Probability = Annotated[float, Field(gt=0, lt=1)]
Text = Annotated[str, Field(min_length=1)]

# Unknown keyword arguments are refused. Values are parsed as pydantic's lax mode does, because the
# environment gives only strings: "8" is a number, "true"/"on"/"1" a boolean, "three" is refused.
_STRICT = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=True)


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

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        # A secret setting holds a Secret, made by load_settings from the environment or a file.
        return core_schema.is_instance_schema(cls)


@dataclass(frozen=True, config=_STRICT)
class KafkaSettings:
    bootstrap: Text = "127.0.0.1:19092"
    news_topic: Text = "bearwatch.news"
    scored_topic: Text = "bearwatch.news.scored"
    dlq_topic: Text = "bearwatch.news.dlq"
    group: Text = "bearwatch-score"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    create_topics: bool = True  # create missing topics at start-up (partitions and replication below)
    partitions: AtLeastOne = 3
    # Replicas of each topic it creates: 1 suits one local broker; production clusters want 3
    # (with min.insync.replicas 2 on the broker, so acks=all survives the loss of one).
    replication_factor: AtLeastOne = 1
    connect_timeout_seconds: Positive = 30.0  # how long a client waits for the first broker at start-up
    # The longest pause between reconnection attempts (kafka-python's default is 30 s): after a broker
    # restart, scoring resumes within this long of the broker being back.
    reconnect_backoff_max_seconds: Positive = 5.0

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


@dataclass(frozen=True, config=_STRICT)
class ElasticsearchSettings:
    url: Annotated[str, Field(pattern=r"^https?://")] = "http://127.0.0.1:19200"
    index_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.+-]*$")] = "bearwatch"
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: Positive = 30.0
    # How soon a scored document becomes searchable (the news index's refresh_interval; Kibana sees
    # it then). The scoring daemon refreshes the index itself at most this often while it writes,
    # and answers dedup lookups from its own writes in between. Elasticsearch's own 1 s refreshed
    # the index 41 times in a 10,000-item backlog where 10 s refreshes it 6 times (docs/benchmarks.md).
    refresh_seconds: Positive = 10.0

    def index(self, name: str) -> str:
        return f"{self.index_prefix}-{name}"


@dataclass(frozen=True, config=_STRICT)
class ModelSettings:
    path: str = ""  # a model directory, or a registry (its CURRENT version); empty: the model the package ships
    device: Literal["auto", "cpu", "cuda"] = "auto"  # cuda: a missing GPU is fatal
    variant: Literal["fp32", "int8"] | None = None  # default: what the manifest serves
    threads: Count = 0  # CPU threads for ONNX Runtime (0: every CPU this process may use)
    batch_size: Count = 0  # 0: each item its own run on CPU (scores independent of batch-mates), 64 on a GPU
    reload_check_seconds: NonNegative = 10.0


@dataclass(frozen=True, config=_STRICT)
class MonitorSettings:
    batch_size: AtLeastOne = 256  # messages per poll
    poll_timeout_seconds: Positive = 1.0
    dedup_window_hours: NonNegative = 24.0
    retry_initial_seconds: Positive = 0.5
    retry_max_seconds: Positive = 30.0
    progress_seconds: NonNegative = 30.0  # a progress log line (items/s, lag, batches) this often; 0: none
    # Poll the next batch (if the source holds one already) and start the encoder on it while this
    # batch's history, documents and writes go on (per-item CPU scoring: the same scores either way).
    prefetch: bool = True


@dataclass(frozen=True, config=_STRICT)
class RetrievalSettings:
    history: Literal["off", "bm25", "knn", "both"] = "bm25"  # related history recorded with each item
    k: AtLeastOne = 3
    lookback_hours: Positive = 72.0
    memory: bool = True  # analysts' labels (the labels index) move the scores of models with memory fusion
    # mirror: in the daemon, kept current; knn: a kNN request per item
    memory_search: Literal["mirror", "knn"] = "mirror"


@dataclass(frozen=True, config=_STRICT)
class DetectionSettings:
    bucket_minutes: Positive = 15.0
    lateness_minutes: NonNegative = 2.0
    alpha: Probability = 1e-3  # tail probability under which a window is a spike (lower: fewer, later alerts)
    early_check_minutes: NonNegative = 1.0  # the open bucket is also checked this often (0: at its close only)
    min_confidence: Fraction = 0.85  # a negative alert needs its top 3 items' mean p(bearish) at least this
    paged_memory_hours: NonNegative = 24.0  # a key's new episode is tested without what it paged this recently (0: off)
    snapshot_every_batches: AtLeastOne = 10
    batch_size: AtLeastOne = 500


@dataclass(frozen=True, config=_STRICT)
class SlackAlertSettings:
    channel: str | None = None  # with a bot token (BEARWATCH_SLACK_TOKEN): chat.postMessage
    token: Secret | None = None
    webhook_url: Secret | None = None  # or an incoming webhook (BEARWATCH_SLACK_WEBHOOK_URL)
    base_url: Annotated[str, Field(pattern=r"^https?://")] = "https://slack.com/api/"
    # With the Slack app's signing secret, alerts carry "False alarm" and "Wrong sentiment" controls,
    # answered at POST /slack/actions on the detector's HTTP server (the app's Request URL)
    signing_secret: Secret | None = None
    kibana_url: str | None = None  # links in alerts open the drill-down dashboard here
    timeout_seconds: Positive = 10.0  # one Slack request; a timeout is retried like a 5xx


@dataclass(frozen=True, config=_STRICT)
class TrainerSettings:
    registry: Text = "registry"  # the model registry the monitor serves from (model.path)
    recipe: Text = "training/configs/default.toml"
    workdir: Text = "runs/trainer"
    schedule: Text = "interval:6h"  # "interval:<n>h|m" or a 5-field cron expression ("0 3 * * 1-5")
    timezone: Text = "UTC"
    misfire_grace_seconds: AtLeastOne = 3600  # a run up to an hour late still runs (APScheduler's default is 1 s)
    min_new_labels: Count = 50  # labels added or corrected since the current model before it retrains
    eval_files: str = ""  # fixed evaluation set, never trained on: "path:task,path:task"
    # The candidate's mean macro-F1 must beat the current one's by this much (negative: may lose this much)
    margin: float = 0.005
    tolerance: NonNegative = 0.01  # and no head may lose more than this
    lock_stale_seconds: AtLeastOne = 6 * 3600
    inbox: str = ""  # a folder whose labelled files (CSV/JSONL) are imported as labels; "" = none
    inbox_poll_seconds: AtLeastOne = 60  # how often `trainer run` looks in the inbox (a cycle also looks first)
    notify_slack: Literal["off", "promoted", "all"] = "off"  # all: promoted and rejected, through [slack]

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from apscheduler.triggers.cron import CronTrigger

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"trainer.timezone {self.timezone!r} is not a time zone (UTC, Europe/London)") from None
        if self.schedule.startswith("interval:"):
            if not re.fullmatch(r"interval:\s*\d+(\.\d+)?[hms]", self.schedule):
                raise SettingsError(f"trainer.schedule {self.schedule!r}: use interval:<number>h|m|s")
        else:
            try:
                CronTrigger.from_crontab(self.schedule, timezone=self.timezone)
            except ValueError as exc:
                raise SettingsError(
                    f"trainer.schedule {self.schedule!r} is neither interval:<n>h|m|s nor a 5-field cron expression "
                    f"({exc})"
                ) from None


@dataclass(frozen=True, config=_STRICT)
class MetricsSettings:
    port: Port = 9108  # 0: no HTTP endpoint
    host: Text = "127.0.0.1"


@dataclass(frozen=True, config=_STRICT)
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
        # Checks across settings; each value's own type and range were checked as it was loaded.
        if self.elasticsearch.api_key and self.elasticsearch.username:
            raise SettingsError("give either an Elasticsearch API key or a username/password, not both")
        d = self.detection
        if d.early_check_minutes >= d.bucket_minutes:
            raise SettingsError(
                f"detection.early_check_minutes ({d.early_check_minutes:g}) must be 0 (off) or less than "
                f"bucket_minutes ({d.bucket_minutes:g})"
            )
        k = self.kafka
        if k.security_protocol.startswith("SASL_") and not (k.sasl_mechanism and k.sasl_username and k.sasl_password):
            raise SettingsError(
                f"kafka.security_protocol {k.security_protocol} needs kafka.sasl_mechanism, kafka.sasl_username "
                "and BEARWATCH_KAFKA_SASL_PASSWORD (or …_FILE)"
            )
        if self.monitor.retry_initial_seconds > self.monitor.retry_max_seconds:
            raise SettingsError("monitor.retry_initial_seconds must not exceed monitor.retry_max_seconds")


SECRETS = {
    ("kafka", "sasl_password"): "BEARWATCH_KAFKA_SASL_PASSWORD",
    ("elasticsearch", "api_key"): "BEARWATCH_ES_API_KEY",
    ("elasticsearch", "password"): "BEARWATCH_ES_PASSWORD",
    ("slack", "token"): "BEARWATCH_SLACK_TOKEN",
    ("slack", "webhook_url"): "BEARWATCH_SLACK_WEBHOOK_URL",
    ("slack", "signing_secret"): "BEARWATCH_SLACK_SIGNING_SECRET",
}


def _explain(error: ValidationError, section: str, sources: Mapping[str, str]) -> SettingsError:
    """One line for the first bad value: the setting, where it came from, what it must be."""
    first = error.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    where = f" (from {sources[name]})" if name in sources else ""
    message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if "input" in first and first["type"] != "value_error":
        message = f"{message}, not {first['input']!r}"
    more = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    return SettingsError(f"{section}.{name}{where}: {message}{more}" if name else f"{message}{more}")


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
    """Defaults, then the TOML file (``path``, else ``$BEARWATCH_CONFIG``, else none), then the environment."""
    env = os.environ if env is None else env
    if path is None and env.get("BEARWATCH_CONFIG"):
        path = env["BEARWATCH_CONFIG"]
    raw: dict[str, dict] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
    sections = {}
    for section in fields(Settings):
        cls: Any = section.default_factory  # every section is a dataclass with a default factory
        given = raw.pop(section.name, {})
        if not isinstance(given, dict):
            raise SettingsError(f"{section.name} in {path} must be a [{section.name}] table, not a value")
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s) in [{section.name}]: {', '.join(sorted(unknown))}")
        prefixes = [f"BEARWATCH_{section.name.upper()}_"] + (
            ["BEARWATCH_ES_"] if section.name == "elasticsearch" else []
        )
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
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
            if variable is not None:  # a string: pydantic parses it as the field's type ("8", "true", "0.5")
                values[f.name], sources[f.name] = env[variable], variable
            elif f.name in given:
                values[f.name], sources[f.name] = given[f.name], str(path)
        try:
            sections[section.name] = cls(**values)
        except ValidationError as exc:
            raise _explain(exc, section.name, sources) from None
    if raw:
        raise SettingsError(f"unknown section(s): {', '.join(sorted(raw))}")
    try:
        return Settings(**sections)
    except ValidationError as exc:
        raise SettingsError(exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")) from None
