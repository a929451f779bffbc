"""How far a long job is: log lines off a terminal, items passed through while counted, and a drill
that waits on a daemon relaying the daemon's own progress line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from drills.core import Stack, latest_progress
from monitor.progress import Progress, tracked


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_line_every_interval_and_one_at_the_end(caplog) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="bearwatch.progress")
    with Progress("demo", total=1000, unit="items", every_s=30, stream=io.StringIO(), clock=clock) as p:
        for _ in range(10):
            clock.now += 5
            p.update(50, lag=7)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # after 30 s, and the end (50 s: no second interval has passed)
    assert lines[0].startswith("demo: done=300 total=1000 rate=10.0/s eta=1m10s elapsed=30s lag=7")
    assert lines[1] == "demo: done=500 total=1000 rate=10.0/s elapsed=50s lag=7 finished"


def test_tracked_passes_every_item_through_and_counts_them(caplog) -> None:
    caplog.set_level(logging.INFO, logger="bearwatch.progress")
    assert list(tracked(iter(range(5)), "fill", total=5, unit="docs", every_s=0, stream=io.StringIO())) == list(
        range(5)
    )
    assert caplog.records[-1].getMessage().startswith("fill: done=5 total=5")


def test_latest_progress_reads_the_last_progress_line(tmp_path: Path) -> None:
    log = tmp_path / "monitor.1.log"
    assert latest_progress(log).startswith("(no log:")
    log.write_text("2026-12-04 INFO bearwatch.app: started\n")
    assert latest_progress(log) == "(no progress line yet)"
    log.write_text(
        "x INFO bearwatch.progress: scoring: done=100 rate=50.0/s\n"
        "x INFO bearwatch.app: batch\n"
        "x INFO bearwatch.progress: scoring: done=300 rate=100.0/s lag=12\n"
        "x WARNING bearwatch.app: slow\n"
    )
    assert latest_progress(log) == "scoring: done=300 rate=100.0/s lag=12"


def test_a_drill_waiting_on_a_daemon_says_how_far_it_is(tmp_path: Path, capsys) -> None:
    log = tmp_path / "monitor.1.log"
    script = (
        "import sys, time\n"
        "print('t INFO bearwatch.progress: scoring: done=42 rate=9.0/s', flush=True)\n"
        "time.sleep(1.5)\n"
        "sys.exit(3)\n"
    )
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT)
    stack = SimpleNamespace(procs={"monitor": proc}, starts=Counter(monitor=1), logs=tmp_path, run="drill-x")
    assert Stack.wait(stack, "monitor", every_s=0.5) == 3  # type: ignore[arg-type]
    said = capsys.readouterr().out.splitlines()
    assert said and all(line.startswith("drill-x: waiting for monitor (") for line in said)
    assert said[-1].endswith("): scoring: done=42 rate=9.0/s")


def test_a_wait_past_its_timeout_still_fails(tmp_path: Path) -> None:
    (tmp_path / "monitor.1.log").write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    stack = SimpleNamespace(procs={"monitor": proc}, starts=Counter(monitor=1), logs=tmp_path, run="drill-x")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            Stack.wait(stack, "monitor", timeout_s=0.6, every_s=0.2)  # type: ignore[arg-type]
    finally:
        proc.kill()
        proc.wait()
