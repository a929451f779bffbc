"""Scheduled retraining on a tiny model: promotion, rejection of a worse candidate, failure, lock, scheduler."""

from __future__ import annotations

import csv
import random
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

from drills.slack_server import FakeSlack  # noqa: E402
from monitor.alerting.slack import SlackDelivery, SlackSettings  # noqa: E402
from monitor.labels_store import MemoryLabels, make_label  # noqa: E402
from monitor.registry import ModelRegistry  # noqa: E402
from monitor.settings import (
    Secret,  # noqa: E402
    TrainerSettings,  # noqa: E402
)
from training.schedule import TrainerLock, gate, run_once, scheduler, slack_notifier  # noqa: E402


def recipe(tmp_path: Path, base: str, sources: list[tuple[Path, str]], epochs: int = 3) -> Path:
    lines = [
        f'base_model = "{base}"',
        f"epochs = {epochs}",
        "batch_size = 16",
        "lr = 2e-3",
        "max_length = 32",
        "threads = 1",
        "valid_fraction = 0.3",
    ]
    for path, task in sources:
        lines += ["[[sources]]", f'path = "{path}"', f'task = "{task}"']
    f = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.toml"
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.fixture
def setup(tiny_model_run, tmp_path: Path):
    config, model_dir, sent_csv = tiny_model_run
    registry = ModelRegistry(tmp_path / "registry")
    registry.promote(registry.register(model_dir), "initial")
    labels = MemoryLabels()
    rows = list(csv.DictReader(sent_csv.open()))
    labels.put(make_label({"text": r["text"], "sentiment": r["label"]}, "ana") for r in rows[:60])
    settings = TrainerSettings(
        registry=str(registry.root),
        workdir=str(tmp_path / "work"),
        min_new_labels=50,
        eval_files=f"{sent_csv}:sentiment",
        margin=-1.0,
        tolerance=1.0,
    )
    return config, registry, labels, settings, sent_csv, tmp_path


def test_new_labels_train_a_candidate_that_is_evaluated_and_promoted(setup) -> None:
    config, registry, labels, settings, sent_csv, tmp = setup
    before = registry.current_version()
    slack = FakeSlack()
    try:
        notify = slack_notifier(
            SlackDelivery(SlackSettings(token=Secret("xoxb-test"), channel="C1", base_url=slack.base_url)), "promoted"
        )
        result = run_once(
            replace(settings, recipe=str(recipe(tmp, config.base_model, [(Path(config.sources[1].path), "topic")]))),
            labels,
            notify=notify,
        )
    finally:
        slack.close()
    assert result.outcome == "promoted", result.reason
    assert registry.current_version() == result.candidate != before
    assert set(result.metrics["candidate"]) == {"sentiment"} and result.metrics["current"]["sentiment"]["n"] > 0
    assert (registry.root / "versions" / result.candidate / "comparison.json").exists()
    # a monitor serving the registry scores with the promoted version
    import json

    from bearwatch.daemon import build_embedded_app
    from monitor.settings import load_settings

    news = tmp / "news.jsonl"
    news.write_text(
        "".join(
            json.dumps({"id": f"n{i}", "published_at": "2026-11-02T10:00:00Z", "headline": f"Acme item {i}"}) + "\n"
            for i in range(3)
        )
    )
    monitor = load_settings(env={})
    monitor = replace(monitor, model=replace(monitor.model, path=str(registry.root), threads=1))
    scored: list[str] = []
    build_embedded_app(
        monitor,
        str(news),
        tmp / "monitor-out",
        on_batch=lambda m, r: scored.extend(d["model_version"] for d in r.documents),
    ).run(idle_timeout_s=0)
    assert scored == [result.candidate] * 3
    [message] = slack.messages  # the channel hears of the promotion, with both models' figures
    assert f"{result.candidate} promoted" in message["text"] and "sentiment* macro-F1" in str(message["blocks"])
    assert before in str(message["blocks"])


def test_a_worse_candidate_is_rejected_and_the_current_model_keeps_serving(setup) -> None:
    config, registry, labels, settings, sent_csv, tmp = setup
    rows = list(csv.DictReader(sent_csv.open()))
    shuffled_labels = [r["label"] for r in rows]
    random.Random(0).shuffle(shuffled_labels)
    shuffled = tmp / "shuffled.csv"
    with shuffled.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows((r["text"], label) for r, label in zip(rows, shuffled_labels))
    labels = MemoryLabels()
    labels.put(make_label({"text": r["text"], "sentiment": lab}, "ana") for r, lab in zip(rows[:60], shuffled_labels))
    before = registry.current_version()
    strict = replace(
        settings,
        recipe=str(recipe(tmp, config.base_model, [(shuffled, "sentiment")], epochs=2)),
        margin=0.005,
        tolerance=0.01,
    )
    told: list = []

    def broken_slack(r) -> None:  # a fault: the notice cannot be delivered
        told.append(r)
        raise OSError("Slack unreachable")

    result = run_once(strict, labels, notify=broken_slack)
    assert result.outcome == "rejected", result
    assert told == [result]  # the notice was attempted; its failure does not undo the decision
    assert registry.current_version() == before
    assert registry.status(result.candidate) == "rejected"


def test_too_few_labels_skip_and_a_failing_run_is_recorded(setup) -> None:
    config, registry, labels, settings, _, tmp = setup
    assert run_once(replace(settings, min_new_labels=1000), labels).outcome == "skipped"
    before = registry.current_version()
    failed = run_once(replace(settings, recipe=str(tmp / "missing.toml")), labels)
    assert failed.outcome == "failed" and registry.current_version() == before
    assert registry.events()[-1].action == "failed"
    assert not (registry.root / ".trainer.lock").exists()  # released after a failure


def test_lock_keeps_a_second_trainer_out_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    a, b = TrainerLock(tmp_path, 3600), TrainerLock(tmp_path, 3600)
    assert a.acquire() and not b.acquire()
    a.release()
    (tmp_path / ".trainer.lock").write_text(f'{{"pid": 999999999, "since": {time.time():f}}}')  # its process is gone
    assert b.acquire()


def test_gate_margin_and_tolerance() -> None:
    cur = {"sentiment": {"macro_f1": 0.80}, "topic": {"macro_f1": 0.80}}
    assert gate({"sentiment": {"macro_f1": 0.83}, "topic": {"macro_f1": 0.80}}, cur, 0.01, 0.01)[0]
    assert not gate({"sentiment": {"macro_f1": 0.805}, "topic": {"macro_f1": 0.80}}, cur, 0.01, 0.01)[0]  # below margin
    ok, why = gate({"sentiment": {"macro_f1": 0.95}, "topic": {"macro_f1": 0.75}}, cur, 0.01, 0.01)
    assert not ok and "topic" in why  # better on average but one head worse beyond tolerance


def test_scheduler_fires_on_schedule_and_survives_a_job_that_raises() -> None:
    calls: list[float] = []
    done = threading.Event()

    def job() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        if len(calls) >= 3:
            done.set()

    s = scheduler(TrainerSettings(schedule="interval:1s", misfire_grace_seconds=30), job, blocking=False)
    s.start()
    try:
        assert done.wait(15), calls
    finally:
        s.shutdown(wait=False)
    assert len(calls) >= 3 and 0.5 < calls[1] - calls[0] < 3
