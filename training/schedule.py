"""Scheduled retraining: one cycle (`run_once`) and the APScheduler daemon around it.

A cycle: take the lock → enough new labels since the current model? → base data plus every label
(labels win over the base data on the same text) → train with the recipe → evaluate the candidate
and the current model on the same fixed evaluation set → register the candidate and promote it
only if its mean macro-F1 beats the current one's by `margin` and no head loses more than
`tolerance`; otherwise it stays in the registry, rejected, with the reason. A cycle that fails
leaves the current model serving and a ``failed`` event in the registry; the next one tries again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from monitor.labels import TASKS
from monitor.model_artifact import ModelArtifact
from monitor.registry import ModelRegistry
from monitor.settings import TrainerSettings

log = logging.getLogger("bearwatch.trainer")
LOCK = ".trainer.lock"


@dataclass(frozen=True)
class CycleResult:
    outcome: str  # skipped | promoted | rejected | failed
    reason: str
    candidate: str | None = None
    metrics: dict | None = None


class TrainerLock:
    """One trainer at a time: an exclusive lock file with the holder's pid and start time.
    A lock whose holder is gone, or older than `stale_s`, is taken over."""

    def __init__(self, root: Path, stale_s: float) -> None:
        self.path, self.stale_s = root / LOCK, stale_s

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale():
                    return False
                log.warning("taking over a stale trainer lock: %s", self.path.read_text(errors="replace").strip())
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "since": time.time()}))
            return True
        return False

    def _stale(self) -> bool:
        try:
            held = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return True
        if time.time() - float(held.get("since", 0)) > self.stale_s:
            return True
        try:
            os.kill(int(held["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def eval_sets(spec: str) -> list[tuple[str, str]]:
    """'path:task,path:task' -> [(path, task)]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        path, _, task = part.rpartition(":")
        if task not in TASKS or not path:
            raise ValueError(f"eval_files entry {part!r} is not path:task (task: {', '.join(TASKS)})")
        out.append((path, task))
    return out


def evaluate_model(model_dir: Path, sets: list[tuple[str, str]]) -> dict[str, dict]:
    from monitor.evaluation import evaluate_file
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer.load(ModelArtifact.load(model_dir), device="cpu")
    reports: dict[str, dict] = {}
    for path, task in sets:
        r = evaluate_file(scorer, path, task)
        reports.setdefault(task, {"accuracy": 0.0, "macro_f1": 0.0, "n": 0, "files": []})
        reports[task]["files"].append(
            {"path": Path(path).name, "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}
        )
    for entry in reports.values():  # per head: mean over its files
        files = entry["files"]
        entry.update(
            accuracy=sum(f["accuracy"] for f in files) / len(files),
            macro_f1=sum(f["macro_f1"] for f in files) / len(files),
            n=sum(f["n"] for f in files),
        )
    return reports


def gate(candidate: dict, current: dict | None, margin: float, tolerance: float) -> tuple[bool, str]:
    """Promote only if better by `margin` on the mean macro-F1 and no head worse beyond `tolerance`."""
    if current is None:
        return True, "no current model"
    primary = {
        name: sum(m["macro_f1"] for m in r.values()) / len(r)
        for name, r in (("candidate", candidate), ("current", current))
    }
    gain = primary["candidate"] - primary["current"]
    for task in current:
        drop = current[task]["macro_f1"] - candidate.get(task, {}).get("macro_f1", 0.0)
        if drop > tolerance:
            return False, f"{task} macro-F1 falls by {drop:.4f} (tolerance {tolerance})"
    if gain < margin:
        return False, f"mean macro-F1 gain {gain:+.4f} is below the margin {margin}"
    return True, f"mean macro-F1 gain {gain:+.4f}"


def run_once(
    settings: TrainerSettings,
    labels,
    train: Callable | None = None,
    now: datetime | None = None,
    notify: Callable[[CycleResult], None] | None = None,
) -> CycleResult:
    """One retraining cycle. `labels` is the labels store; `train(config) -> model_dir` defaults to
    the recipe; `notify(result)` (the Slack notice) is told of a promotion or rejection."""
    registry = ModelRegistry(settings.registry)
    lock = TrainerLock(Path(settings.registry), settings.lock_stale_seconds)
    if not lock.acquire():
        return CycleResult("skipped", "another trainer holds the lock")
    try:
        if settings.inbox:
            poll_inbox(settings, labels)
        result = _cycle(settings, registry, labels, train, now or datetime.now(timezone.utc))
    except Exception as exc:  # any failure: record it, keep serving the current model, try again next time
        log.exception("retraining cycle failed")
        registry.record_failure(f"{type(exc).__name__}: {exc}")
        return CycleResult("failed", f"{type(exc).__name__}: {exc}")
    finally:
        lock.release()
    if notify is not None and result.outcome in ("promoted", "rejected"):
        try:
            notify(result)
        except Exception:  # the decision stands whether or not Slack heard of it; the log says it did not
            log.exception("the Slack notice of %s %s was not delivered", result.outcome, result.candidate)
    return result


def poll_inbox(settings: TrainerSettings, labels) -> int:
    """Import the labelled files waiting in the inbox; returns the number of labels stored."""
    from monitor.labels_store import import_inbox

    stored = 0
    for f in import_inbox(settings.inbox, labels):
        stored += f.written
        level = logging.WARNING if f.rejected else logging.INFO
        log.log(
            level,
            "inbox: %s → %d label(s) stored, %d row(s) rejected (%s)",
            f.name,
            f.written,
            len(f.rejected),
            f.moved_to,
        )
    return stored


def notice(result: CycleResult) -> tuple[str, list[dict]]:
    """The Slack text and Block Kit blocks telling a channel that a model was promoted or rejected."""
    from monitor.alerting.message import escape

    metrics = result.metrics or {}
    candidate, current = metrics.get("candidate") or {}, metrics.get("current") or {}
    verb = "promoted" if result.outcome == "promoted" else "rejected"
    text = f"bearwatch model {result.candidate} {verb}: {result.reason}"
    rows = []
    for task in sorted(set(candidate) | set(current)):
        new, old = candidate.get(task, {}), current.get(task, {})
        before = f"{100 * old['macro_f1']:.1f}" if old else "–"
        rows.append(
            f"*{task}* macro-F1 {before} → {100 * new.get('macro_f1', 0.0):.1f}  (accuracy "
            f"{100 * new.get('accuracy', 0.0):.1f}, n={new.get('n', 0)})"
        )
    icon = "white_check_mark" if verb == "promoted" else "no_entry_sign"
    header = f":{icon}: Model `{escape(str(result.candidate))}` {verb}"
    serving = result.candidate if verb == "promoted" else metrics.get("current_version")
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{header}\n{escape(result.reason)}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(rows) or "no metrics"}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"now serving: `{escape(str(serving))}` · "
                    f"vs. `{escape(str(metrics.get('current_version')))}`",
                }
            ],
        },
    ]
    return text, blocks


def slack_notifier(delivery, level: str) -> Callable[[CycleResult], None] | None:
    """A `notify` for run_once that posts through the alerting sink, or None when switched off."""
    if delivery is None or level == "off":
        return None

    def notify(result: CycleResult) -> None:
        if result.outcome == "promoted" or level == "all":
            text, blocks = notice(result)
            delivery.post_retrying(f"model-{result.candidate}-{result.outcome}", text, blocks)

    return notify


def _cycle(settings: TrainerSettings, registry: ModelRegistry, labels, train, now: datetime) -> CycleResult:
    from training.train import TrainConfig

    current = registry.current() if registry.current_version() else None
    since = (current.manifest.created_at if current else None) or datetime(1970, 1, 1, tzinfo=timezone.utc)
    new = labels.since(since)
    if new < settings.min_new_labels:
        return CycleResult("skipped", f"{new} new label(s) since the current model (need {settings.min_new_labels})")
    sets = eval_sets(settings.eval_files)
    if not sets:
        raise ValueError("trainer.eval_files is empty: a candidate cannot be judged without a fixed evaluation set")
    run_dir = Path(settings.workdir) / f"run-{now:%Y%m%d-%H%M%S}"
    exported = labels.export(run_dir / "labels")
    config = TrainConfig.from_toml(settings.recipe, output=str(run_dir))
    from training.data import DataSource, file_sha256

    held_out = {file_sha256(p) for p, _ in sets}
    if any(file_sha256(s.path) in held_out for s in config.sources):
        raise ValueError("an evaluation file is also a training source: the comparison would be meaningless")
    sources = config.sources + tuple(
        DataSource(str(p), task, f"labels-{task}", overrides=True) for task, p in exported.items() if _has_rows(p)
    )
    config = replace(config, sources=sources)
    log.info("retraining on %d sources (%d new labels since %s)", len(sources), new, since.isoformat())
    model_dir = Path((train or _train)(config))
    candidate_metrics = evaluate_model(model_dir, sets)
    current_metrics = evaluate_model(current.path, sets) if current else None
    promote, reason = gate(candidate_metrics, current_metrics, settings.margin, settings.tolerance)
    version = registry.register(model_dir)
    metrics = {
        "candidate": candidate_metrics,
        "current": current_metrics,
        "current_version": current.version if current else None,
    }
    (Path(settings.registry) / "versions" / version / "comparison.json").write_text(json.dumps(metrics, indent=2))
    if promote:
        registry.promote(version, reason)
        return CycleResult("promoted", reason, version, metrics)
    registry.reject(version, reason)
    return CycleResult("rejected", reason, version, metrics)


def _has_rows(path: Path) -> bool:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for _ in fh) > 1


def _train(config) -> Path:
    from training.recipe import train_model

    return train_model(config)


def trigger(spec: str, timezone_name: str):
    """An APScheduler trigger from "interval:6h" / "interval:30m" or a 5-field cron expression."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if spec.startswith("interval:"):
        value = spec.split(":", 1)[1].strip()
        unit = {"h": "hours", "m": "minutes", "s": "seconds"}.get(value[-1:])
        if unit is None or not value[:-1].replace(".", "", 1).isdigit():
            raise ValueError(f"schedule {spec!r}: use interval:<number>h|m|s")
        return IntervalTrigger(**{unit: float(value[:-1])}, timezone=timezone_name)
    return CronTrigger.from_crontab(spec, timezone=timezone_name)


def scheduler(
    settings: TrainerSettings,
    job: Callable[[], object],
    blocking: bool = True,
    inbox_job: Callable[[], object] | None = None,
):
    """A scheduler with the retraining job (explicit id, timezone, misfire grace and coalescing, one
    run at a time) and, when given, the inbox job every `inbox_poll_seconds`."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    cls = BlockingScheduler if blocking else BackgroundScheduler
    s = cls(timezone=settings.timezone)
    s.add_job(
        job,
        trigger(settings.schedule, settings.timezone),
        id="bearwatch-retrain",
        name="bearwatch retraining",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=settings.misfire_grace_seconds,
    )
    if inbox_job is not None:
        s.add_job(
            inbox_job,
            IntervalTrigger(seconds=settings.inbox_poll_seconds, timezone=settings.timezone),
            id="bearwatch-inbox",
            name="bearwatch labels inbox",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=settings.inbox_poll_seconds,
        )
    return s
