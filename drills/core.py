"""What every drill shares: a stack of real daemons (`bearwatch monitor run`, `bearwatch detect run`,
each its own process) on fresh topics and indices of the local Kafka and Elasticsearch, a Slack-like
server, streams with known content, and the exact accounting a drill ends with.

The accounting compares what went in with what came out, by identity, not by count alone:
- every valid item (by id) is one document in the news index, and no document is unexpected;
- every invalid message (by its partition and offset) is in the dead-letter topic, with a reason;
- the alerts are those the same stream gives in-process (the reference), each posted to Slack once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from drills.slack_server import FakeSlack
from monitor.resources import shipped_model

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "deploy" / "local" / "services.sh"


class DrillFailed(AssertionError):
    """The accounting did not balance; the message lists every difference."""


def demo_stream(copies: int, seed: int = 7) -> list[bytes]:
    """`copies` demo streams (each ~376 messages with one planted negative episode, duplicates and
    malformed messages), each with its own ids, laid end to end in time (3 days apart, the last one
    where the bundled stream is, so none lies in the future)."""
    from monitor.demo.generate import lines

    out: list[bytes] = []
    for c in range(copies):
        for raw in lines(seed + c):
            try:
                item = json.loads(raw)
            except ValueError:
                out.append(raw)
                continue
            if isinstance(item, dict) and isinstance(item.get("published_at"), str) and isinstance(item.get("id"), str):
                try:
                    when = datetime.fromisoformat(item["published_at"].replace("Z", "+00:00"))
                    item["published_at"] = (
                        (when - timedelta(days=3 * (copies - 1 - c))).isoformat().replace("+00:00", "Z")
                    )
                except ValueError:
                    pass
                item["id"] = f"{item['id']}-c{c}"
                out.append(json.dumps(item).encode())
            else:
                out.append(raw)
    # A quiet tail half a day later closes every open bucket, so what detection decides does not
    # depend on whether the stream "ends" (the embedded reference flushes at its end; a daemon waits).
    from monitor.errors import InvalidItem
    from monitor.schema import parse_item

    stamps = []
    for v in out:
        try:
            stamps.append(parse_item(v).published_at)
        except InvalidItem:
            continue
    last = max(stamps).isoformat()
    when = datetime.fromisoformat(last.replace("Z", "+00:00"))
    for i in range(3):
        stamp = (when + timedelta(hours=12, minutes=i)).isoformat().replace("+00:00", "Z")
        out.append(
            json.dumps(
                {
                    "id": f"tail-{i}",
                    "published_at": stamp,
                    "headline": f"Markets close flat in quiet session {i}",
                    "source": "drill",
                    "tickers": [],
                    "url": f"https://news.example/tail-{i}",
                    "lang": "en",
                }
            ).encode()
        )
    return out


def expected(values: list[bytes]) -> tuple[set[str], list[int]]:
    """(ids of the valid items, positions of the invalid messages), by the daemon's own validator."""
    from monitor.errors import InvalidItem
    from monitor.schema import parse_item

    ids, invalid = set(), []
    for i, raw in enumerate(values):
        try:
            ids.add(parse_item(raw).id)
        except InvalidItem:
            invalid.append(i)
    return ids, invalid


def control_alerts(values: list[bytes], env: dict | None = None) -> set[tuple[str, str]]:
    """(key, window_start) of the alerts the same daemons raise on the same stream when nothing
    goes wrong: what a drill's alerts must equal."""
    stack = Stack(partitions=1, env=env)
    try:
        stack.produce(values)
        stack.start("monitor")
        stack.start("detector", idle_exit=30)
        for name in ("monitor", "detector"):
            if stack.wait(name) != 0:
                raise DrillFailed(f"the control run's {name} failed; see {stack.logs}")
        return {(a["key"], a["window_start"]) for a in stack.alerts()}
    finally:
        stack.close()


def embedded_alerts(values: list[bytes]) -> set[tuple[str, str]]:
    """(key, window_start) of the alerts the embedded default (`bearwatch demo`: in-process scoring,
    history and detection) raises on the same stream: the daemons must agree with it."""
    _, run = embedded_run([v for v in values if v.strip()])  # a blank line is no message to a file source
    return {(a["key"], a["window_start"]) for a in run.alerts}


@dataclass
class Accounting:
    produced: int = 0
    valid: int = 0
    invalid: int = 0
    indexed: int = 0
    dead_lettered: int = 0
    dead_letter_records: int = 0
    alerts: int = 0
    alerts_expected: int | None = None
    slack_messages: int = 0
    problems: list[str] = field(default_factory=list)

    def table(self, name: str) -> str:
        rows = [
            ("messages produced", self.produced),
            ("valid items (distinct ids)", self.valid),
            ("documents indexed", self.indexed),
            ("invalid messages", self.invalid),
            ("dead-lettered (distinct)", self.dead_lettered),
            ("dead-letter records", self.dead_letter_records),
            ("alerts", self.alerts),
            ("alerts expected", "-" if self.alerts_expected is None else self.alerts_expected),
            ("Slack messages", self.slack_messages),
        ]
        body = "\n".join(f"  {k:<28}{v:>10}" for k, v in rows)
        verdict = (
            "OK: the accounting balances"
            if not self.problems
            else "FAILED:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )
        return f"drill {name}\n{body}\n{verdict}"

    def check(self, name: str) -> Accounting:
        print(self.table(name), flush=True)
        if self.problems:
            raise DrillFailed(f"drill {name}: " + "; ".join(self.problems))
        return self


def latest_progress(log: Path, tail_bytes: int = 64_000) -> str:
    """The last progress line a daemon wrote to its log (what follows the logger's name), or a note."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - tail_bytes))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    for line in reversed(lines):
        if "bearwatch.progress:" in line:
            return line.split("bearwatch.progress:", 1)[1].strip()
    return "(no progress line yet)"


class Stack:
    """Fresh topics and indices, the daemons as processes, and a Slack-like server."""

    def __init__(self, partitions: int = 1, slack: bool = True, env: dict | None = None, batch_size: int = 100) -> None:
        from monitor.settings import load_settings

        self.run = f"drill-{uuid.uuid4().hex[:8]}"
        self.slack = FakeSlack() if slack else None
        self.env = {
            **os.environ,
            "BEARWATCH_KAFKA_NEWS_TOPIC": f"{self.run}.news",
            "BEARWATCH_KAFKA_SCORED_TOPIC": f"{self.run}.scored",
            "BEARWATCH_KAFKA_DLQ_TOPIC": f"{self.run}.dlq",
            "BEARWATCH_KAFKA_GROUP": self.run,
            "BEARWATCH_KAFKA_PARTITIONS": str(partitions),
            "BEARWATCH_ES_INDEX_PREFIX": self.run,
            "BEARWATCH_MODEL_PATH": str(shipped_model()),
            "BEARWATCH_METRICS_PORT": "0",
            "BEARWATCH_MONITOR_BATCH_SIZE": str(batch_size),
            "BEARWATCH_DETECTION_SNAPSHOT_EVERY_BATCHES": "2",
            "BEARWATCH_DETECTION_BATCH_SIZE": "100",
            "PYTHONUNBUFFERED": "1",
            **(
                {
                    "BEARWATCH_SLACK_TOKEN": "xoxb-test",
                    "BEARWATCH_SLACK_CHANNEL": "C123",
                    "BEARWATCH_SLACK_BASE_URL": self.slack.base_url,
                }
                if self.slack
                else {}
            ),
            **(env or {}),
        }
        self.settings = load_settings(env=self.env)
        self.logs = Path(os.environ.get("BEARWATCH_DRILL_LOGS", f"/tmp/bearwatch-drills/{self.run}"))
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: Counter = Counter()
        self.idle_exit: dict[str, float] = {}  # a restart keeps the first start's patience
        from monitor.sources.kafka import ensure_topics

        k = self.settings.kafka
        ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])

    # --- processes ---
    def start(self, name: str, idle_exit: float = 8.0, env: dict | None = None) -> subprocess.Popen:
        command = {"monitor": ["monitor", "run"], "detector": ["detect", "run"]}[name.rstrip("0123456789")]
        self.starts[name] += 1
        self.idle_exit[name] = idle_exit
        log = (self.logs / f"{name}.{self.starts[name]}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bearwatch", *command, "--idle-exit", str(idle_exit)],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=60)

    def wait(self, name: str, timeout_s: float = 1800, every_s: float = 30.0) -> int:
        """Wait for a daemon to exit; a long wait says how far it is every `every_s`: the daemon's own
        latest progress line (items/s, lag, batches) from its log."""
        proc, started = self.procs[name], time.monotonic()
        while True:
            try:
                return proc.wait(timeout=max(0.1, min(every_s, started + timeout_s - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() - started >= timeout_s:
                    raise
                said = latest_progress(self.logs / f"{name}.{self.starts[name]}.log")
                print(f"{self.run}: waiting for {name} ({time.monotonic() - started:.0f} s): {said}", flush=True)

    def close(self) -> None:
        """Stop what runs, and remove the run's indices and topics (kept with BEARWATCH_DRILL_KEEP=1)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        if self.slack:
            self.slack.close()
        if os.environ.get("BEARWATCH_DRILL_KEEP"):
            return
        from monitor.indices import mappings

        es = self.es()
        for name in mappings():
            es.indices.delete(index=self.settings.elasticsearch.index(name), ignore_unavailable=True)
        from kafka import KafkaAdminClient

        k = self.settings.kafka
        admin = KafkaAdminClient(**k.client_options())
        try:
            existing = set(admin.list_topics())
            admin.delete_topics([t for t in (k.news_topic, k.scored_topic, k.dlq_topic) if t in existing])
        finally:
            admin.close()

    # --- input ---
    def produce(self, values: list[bytes], rate: float | None = None) -> None:
        from monitor.progress import tracked
        from monitor.sinks.base import Record
        from monitor.sinks.kafka import KafkaPublisher

        publisher = KafkaPublisher(self.settings.kafka, client_id=f"{self.run}-producer", flush_timeout_s=120)
        start = time.monotonic()
        pending = 0  # bytes not yet flushed: hundreds of 600 kB hostile messages must not wait in one flush
        for i, value in enumerate(tracked(values, f"{self.run}: producing", total=len(values), unit="messages")):
            publisher.add(Record(self.settings.kafka.news_topic, value, key=str(i).encode()))
            pending += len(value)
            if (rate and (i + 1) % 50 == 0) or pending > 16_000_000:
                publisher.flush()
                pending = 0
            if rate and (i + 1) % 50 == 0:
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        publisher.flush()
        publisher.close()

    # --- output ---
    def es(self):
        from monitor.elastic.client import connect

        return connect(self.settings.elasticsearch)

    def indexed_ids(self) -> list[str]:
        from elasticsearch import helpers

        es = self.es()
        index = self.settings.elasticsearch.index("news")
        es.indices.refresh(index=index)
        return [h["_id"] for h in helpers.scan(es, index=index, query={"query": {"match_all": {}}}, _source=False)]

    def read_topic(self, topic: str) -> list:
        """Every record of a topic, beginning to end (kafka-python records: partition, offset, key, value, headers)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(enable_auto_commit=False, **self.settings.kafka.client_options())
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        out = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                out.extend(records)
        consumer.close()
        return out

    def dead_letters(self) -> list[tuple[int, int, str]]:
        """(source partition, source offset, reason) of every dead-letter record."""
        out = []
        for m in self.read_topic(self.settings.kafka.dlq_topic):
            h = dict(m.headers)
            out.append(
                (
                    int(h["bearwatch.source.partition"]),
                    int(h["bearwatch.source.offset"]),
                    h.get("bearwatch.error", b"").decode(),
                )
            )
        return out

    def source_positions(self) -> dict[int, tuple[int, int]]:
        """Where each produced message landed: {produce index: (partition, offset)}, from the news topic."""
        return {int(m.key): (m.partition, m.offset) for m in self.read_topic(self.settings.kafka.news_topic)}

    def alerts(self) -> list[dict]:
        from elasticsearch import helpers

        es = self.es()
        index = self.settings.elasticsearch.index("alerts")
        if not es.indices.exists(index=index):
            return []
        es.indices.refresh(index=index)
        return [h["_source"] for h in helpers.scan(es, index=index, query={"query": {"match_all": {}}})]

    def account(self, values: list[bytes], reference: set[tuple[str, str]] | None = None) -> Accounting:
        valid, invalid_positions = expected(values)
        acc = Accounting(produced=len(values), valid=len(valid), invalid=len(invalid_positions))
        ids = self.indexed_ids()
        acc.indexed = len(ids)
        missing, unexpected = valid - set(ids), set(ids) - valid
        if missing:
            acc.problems.append(f"{len(missing)} valid item(s) not indexed, e.g. {sorted(missing)[:3]}")
        if unexpected:
            acc.problems.append(f"{len(unexpected)} unexpected document(s), e.g. {sorted(unexpected)[:3]}")
        letters = self.dead_letters()
        acc.dead_letter_records = len(letters)
        positions = self.source_positions()
        wanted = {positions[i] for i in invalid_positions if i in positions}
        got = {(p, o) for p, o, _ in letters}
        acc.dead_lettered = len(got)
        if wanted - got:
            acc.problems.append(f"{len(wanted - got)} invalid message(s) missing from the dead-letter topic")
        if got - wanted:
            acc.problems.append(f"{len(got - wanted)} dead-letter record(s) for messages that were valid")
        if any(not reason for _, _, reason in letters):
            acc.problems.append("a dead-letter record without a reason")
        if self.slack is not None:
            alerts = self.alerts()
            acc.alerts = len(alerts)

            def ids(replies: bool) -> Counter:
                return Counter(
                    (m.get("metadata") or {}).get("event_payload", {}).get("alert_id")
                    for m in self.slack.messages
                    if bool(m.get("thread_ts")) == replies
                )

            sent, followups = ids(replies=False), ids(replies=True)  # alerts; escalations and ends in threads
            acc.slack_messages = sum(sent.values())
            twice = [a for a, n in (sent + followups).items() if n > 1]
            if twice:
                acc.problems.append(f"alert(s) or follow-up(s) posted to Slack more than once: {twice[:3]}")
            unsent = [a["id"] for a in alerts if a["id"] not in sent]
            if unsent:
                acc.problems.append(f"{len(unsent)} alert(s) never posted to Slack: {unsent[:3]}")
            if reference is not None:
                acc.alerts_expected = len(reference)
                have = {(a["key"], a["window_start"]) for a in alerts}
                if have != reference:
                    acc.problems.append(
                        f"alerts differ from the reference: missing {sorted(reference - have)[:3]}, extra "
                        f"{sorted(have - reference)[:3]}"
                    )
        return acc


def random_kills(stack: Stack, names: list[str], kills: int, rng: random.Random, between_s: tuple[float, float]) -> int:
    """SIGKILL one of the running daemons at random moments, restarting it at once; returns how many."""
    done = 0
    while done < kills:
        time.sleep(rng.uniform(*between_s))
        running = [n for n in names if stack.procs[n].poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        stack.kill(victim)
        stack.start(victim, idle_exit=stack.idle_exit[victim])
        done += 1
    return done


def embedded_run(values: list[bytes], env: dict | None = None):
    """The same messages through the embedded default (`bearwatch demo` in-process), one per line:
    (its accounting by identity, as the daemons' is, and the DemoRun with its alerts and late count).
    Messages that are not one non-blank line of a file (a newline inside, blank) cannot be given to
    it and must be left out by the caller."""
    import tempfile

    from bearwatch.daemon import run_demo
    from monitor.settings import load_settings

    if any(b"\n" in v or b"\r" in v or not v.strip() for v in values):
        raise ValueError("a message with a newline, or a blank one, cannot be one line of the embedded default's input")
    with tempfile.TemporaryDirectory(prefix="bearwatch-drill-embedded-") as folder:
        stream = Path(folder) / "stream.jsonl"
        stream.write_bytes(b"\n".join(values) + b"\n")
        out = Path(folder) / "out"
        run = run_demo(
            load_settings(env={"BEARWATCH_MODEL_PATH": str(shipped_model()), **(env or {})}), str(stream), out
        )
        valid, invalid = expected(values)
        acc = Accounting(produced=len(values), valid=len(valid), invalid=len(invalid))
        ids = {d["id"] for d in run.documents}
        acc.indexed = len(ids)
        if ids != valid:
            acc.problems.append(f"embedded: {len(valid - ids)} valid item(s) missing, {len(ids - valid)} unexpected")
        letters = (
            [json.loads(line) for line in (out / "bearwatch.news.dlq.jsonl").read_bytes().split(b"\n") if line]
            if (out / "bearwatch.news.dlq.jsonl").exists()
            else []
        )
        positions = [int(d["headers"]["bearwatch.source.offset"]) for d in letters]
        acc.dead_letter_records, acc.dead_lettered = len(letters), len(set(positions))
        if set(positions) != set(invalid):
            acc.problems.append(
                f"embedded: dead letters at {len(set(positions) - set(invalid))} valid and missing for "
                f"{len(set(invalid) - set(positions))} invalid line(s)"
            )
        if acc.dead_letter_records != acc.dead_lettered:
            acc.problems.append(
                f"embedded: {acc.dead_letter_records} dead-letter records for {acc.dead_lettered} positions"
            )
        if any(not d["headers"].get("bearwatch.error") for d in letters):
            acc.problems.append("embedded: a dead letter without a reason")
        return acc, run
