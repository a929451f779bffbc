"""The drills: `bearwatch drill NAME [--scale ci|full]` (or `python -m drills.run NAME`).

Each runs against the real Kafka and Elasticsearch of deploy/local/services.sh, ends with an exact
accounting (drills.core.Accounting), and exits non-zero on any difference. `--scale ci` is the
shortened form the test suite runs; `--scale full` is the drill as specified (minutes to tens of
minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from drills.core import (
    ROOT,
    SERVICES,
    Accounting,
    DrillFailed,
    Stack,
    control_alerts,
    demo_stream,
    embedded_alerts,
    embedded_run,
    random_kills,
)

SCALES = {  # per drill: ci / full
    # 266 copies ≈ 100k messages; kills spread over the run (~5 min on 2 cores), not bunched at its start
    "crash": {
        "ci": {"copies": 2, "kills": 4, "between_s": (1.0, 4.0)},
        "full": {"copies": 266, "kills": 20, "between_s": (4.0, 24.0)},
    },
    "rebalance": {"ci": {"copies": 3}, "full": {"copies": 80}},
    "es-outage": {"ci": {"copies": 4, "outage_s": 15}, "full": {"copies": 40, "outage_s": 60}},
    "kafka-restart": {"ci": {"copies": 4, "down_s": 8}, "full": {"copies": 40, "down_s": 20}},
    "slack": {"ci": {"copies": 1}, "full": {"copies": 3}},
    "hostile": {"ci": {"hostile": 600, "copies": 1}, "full": {"hostile": 10_000, "copies": 10}},
    "secrets": {"ci": {"copies": 1}, "full": {"copies": 1}},
    "disk": {"ci": {}, "full": {}},
    # every 4th naughty string in CI (each in 6 roles, a valid item after each), all of them at full scale
    "poison": {"ci": {"every": 4}, "full": {"every": 1}},
    # the first 20,000 StockNet items in CI, the whole stream (96,826) at full scale
    "replay": {"ci": {"items": 20_000}, "full": {"items": None}},
}


def _wait_all(stack: Stack, names: list[str], timeout_s: float = 3600) -> None:
    for name in names:
        code = stack.wait(name, timeout_s)
        if code != 0:
            raise DrillFailed(f"{name} exited with {code}; see {stack.logs}/{name}.{stack.starts[name]}.log")


def _drain_detector(stack: Stack) -> None:
    """After the scoring side is done: one more detector run picks up what is left (from its snapshot)."""
    if stack.procs.get("detector") and stack.procs["detector"].poll() is None:
        _wait_all(stack, ["detector"])
    stack.start("detector", idle_exit=6)
    _wait_all(stack, ["detector"])


def crash(copies: int, kills: int, between_s: tuple[float, float] = (1.0, 4.0), seed: int = 1) -> Accounting:
    """SIGKILL the scoring and detection daemons at random moments, restarting them each time."""
    values = demo_stream(copies)
    reference = control_alerts(values)
    stack = Stack(partitions=1)
    try:
        stack.produce(values)
        stack.start("monitor")
        stack.start("detector", idle_exit=30)
        done = random_kills(stack, ["monitor", "detector"], kills, random.Random(seed), between_s)
        print(f"crash: {done} SIGKILLs; restarts: {dict(stack.starts)}", flush=True)
        _wait_all(stack, ["monitor"])
        _drain_detector(stack)
        acc = stack.account(values, reference)
        embedded = embedded_alerts(values)  # the same stream through the embedded default
        print(
            f"crash: the embedded default raised {len(embedded)} alerts, the daemons' control run {len(reference)}",
            flush=True,
        )
        if embedded != reference:
            acc.problems.append(
                "the embedded default's alerts differ from the daemons': only embedded "
                f"{sorted(embedded - reference)[:3]}, only daemons {sorted(reference - embedded)[:3]}"
            )
        return acc.check("crash")
    finally:
        stack.close()


def rebalance(copies: int) -> Accounting:
    """Start a second and a third scoring instance mid-stream, then stop one (SIGTERM)."""
    values = demo_stream(copies)
    stack = Stack(partitions=3, slack=False)
    try:
        stack.produce(values)
        stack.start("monitor1", idle_exit=10)
        time.sleep(4)
        stack.start("monitor2", idle_exit=10)
        time.sleep(2)
        stack.start("monitor3", idle_exit=10)
        time.sleep(4)
        stack.kill("monitor2", signal.SIGTERM)
        if stack.procs["monitor2"].returncode != 0:
            raise DrillFailed(f"monitor2 did not stop cleanly on SIGTERM (exit {stack.procs['monitor2'].returncode})")
        _wait_all(stack, ["monitor1", "monitor3"])
        return stack.account(values).check("rebalance")
    finally:
        stack.close()


def _service(action: str, which: str) -> None:
    result = subprocess.run(["bash", str(SERVICES), action, which], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise DrillFailed(f"services.sh {action} {which} failed: {result.stderr[-500:]}")


def _outage(name: str, which: str, copies: int, down_s: float) -> Accounting:
    values = demo_stream(copies)
    stack = Stack(partitions=1, slack=False, batch_size=20)
    try:
        stack.produce(values)
        stack.start("monitor", idle_exit=max(30.0, down_s + 20))
        es, index = stack.es(), stack.settings.elasticsearch.index("news")
        deadline = time.monotonic() + 120
        from elasticsearch import ApiError, TransportError

        while time.monotonic() < deadline:  # mid-stream: some items written, most still to come
            try:
                if es.indices.exists(index=index):
                    es.indices.refresh(index=index)  # the index itself refreshes only every refresh_seconds
                    if es.count(index=index)["count"] >= 200:
                        break
            except (ApiError, TransportError):
                pass  # a new index whose shard is not active yet (just after the previous drill's restart): ask again
            time.sleep(0.2)
        _service("down", which)
        try:
            time.sleep(down_s)
            if stack.procs["monitor"].poll() is not None:
                raise DrillFailed(
                    f"the monitor exited while {which} was down (exit {stack.procs['monitor'].returncode})"
                )
        finally:
            _service("up", which)
        _wait_all(stack, ["monitor"])
        acc = stack.account(values)
        log = (stack.logs / "monitor.1.log").read_text(errors="replace")
        evidence = (
            "nothing committed" if which == "elasticsearch" else "Connection lost"
        )  # a failed write; the broker gone
        if evidence not in log:
            acc.problems.append(
                f"the monitor never saw {which} go away ({evidence!r} not in its log): the drill did not test it"
            )
        print(
            f"{name}: the monitor's log shows {log.count(evidence)} × {evidence!r} while {which} was down", flush=True
        )
        return acc.check(name)
    finally:
        stack.close()


def es_outage(copies: int, outage_s: float) -> Accounting:
    """Stop Elasticsearch mid-stream, start it again: no crash, nothing committed past unwritten items."""
    return _outage("es-outage", "elasticsearch", copies, outage_s)


def kafka_restart(copies: int, down_s: float) -> Accounting:
    """Stop the Kafka broker mid-stream and start it again."""
    return _outage("kafka-restart", "kafka", copies, down_s)


def slack(copies: int) -> Accounting:
    """Slack answers 429 with Retry-After, 500, hangs past the timeout and `ok: false` for a while."""
    values = demo_stream(copies)
    reference = control_alerts(values)
    stack = Stack(partitions=1, env={"BEARWATCH_SLACK_TIMEOUT_SECONDS": "2"})
    stack.slack.rate_limit(2, retry_after=1)
    stack.slack.server_error(2)
    stack.slack.hang(2, seconds=3)
    stack.slack.not_ok(3, "service_unavailable")
    stack.slack.rate_limit(2, retry_after=1)
    try:
        stack.produce(values)
        stack.start("monitor")
        stack.start("detector", idle_exit=30)
        _wait_all(stack, ["monitor"])
        _drain_detector(stack)
        acc = stack.account(values, reference)
        if stack.slack.script:
            acc.problems.append(
                f"{len(stack.slack.script)} scripted Slack failure(s) were never hit: the drill did not test them"
            )
        return acc.check("slack")
    finally:
        stack.close()


def hostile_messages(n: int, seed: int = 3) -> list[bytes]:
    """Invalid and awkward messages of every kind the issue lists (each valid one must be scored)."""
    rng = random.Random(seed)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def item(**kw) -> dict:
        base = {
            "id": f"h-{rng.getrandbits(48):x}",
            "published_at": now,
            "headline": "Acme shares slide after weak orders",
            "source": "fuzz",
        }
        base.update(kw)
        return base

    makers = [
        lambda: bytes(
            rng.getrandbits(8) for _ in range(rng.randint(1, 200))
        ),  # random bytes (mostly invalid UTF-8 / JSON)
        lambda: b'{"id": "x", "headline": "\xff\xfe broken"}',  # invalid UTF-8 inside JSON
        lambda: ("[" * 50_000 + "]" * 50_000).encode(),  # a JSON bomb: deep nesting
        lambda: json.dumps(item(headline="A" * 600_000)).encode(),  # a huge field
        lambda: json.dumps(
            item(extra={"a": {"b": {"c": {"d": {"e": list(range(50))}}}}})
        ).encode(),  # nested (kept or refused, not fatal)
        lambda: json.dumps(item(headline="Acme\x00\x07\x1b[31m cuts\u202e outlook")).encode(),  # control characters
        lambda: json.dumps(
            item(headline="<script>alert(1)</script> Acme <b>plunges</b>")
        ).encode(),  # markup: valid, scored as text
        lambda: json.dumps(item(headline=12345)).encode(),  # wrong type
        lambda: json.dumps(item(tickers="ACME")).encode(),  # wrong type
        lambda: json.dumps({k: v for k, v in item().items() if k != "id"}).encode(),  # missing id
        lambda: json.dumps(item(published_at="1900-01-01T00:00:00Z")).encode(),  # far past
        lambda: json.dumps(item(published_at="2999-01-01T00:00:00Z")).encode(),  # far future
        lambda: json.dumps(item(published_at="yesterday-ish")).encode(),
        lambda: b"",  # empty
        lambda: b"null",
        lambda: json.dumps([item()]).encode(),  # a list, not an object
        lambda: json.dumps(
            item(headline='title:(a OR b) AND "unbalanced {"query": {"match_all": {}}} \\')
        ).encode(),  # query syntax
        lambda: json.dumps(
            item(headline="<!channel> <https://evil.example|click here> *urgent* @here")
        ).encode(),  # Slack syntax
    ]
    out = [makers[i % len(makers)]() for i in range(n)]
    dup = item(id="h-duplicate-id")  # the same id twice, with different texts
    out += [json.dumps(dup).encode(), json.dumps({**dup, "headline": "A different text under the same id"}).encode()]
    rng.shuffle(out)
    return out


def hostile(hostile: int, copies: int) -> Accounting:
    """Fuzzed and hostile messages interleaved with a valid stream: no crash, every invalid one
    dead-lettered with a reason, every valid one scored, the daemon's memory bounded."""
    valid = demo_stream(copies)
    bad = hostile_messages(hostile)
    rng = random.Random(5)
    values = valid + bad
    rng.shuffle(values)
    stack = Stack(partitions=1, slack=False)
    try:
        stack.produce(values)
        proc = stack.start("monitor")
        peak = 0
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.2)
        _wait_all(stack, ["monitor"])
        acc = stack.account(values)
        print(f"hostile: monitor peak RSS {peak / 1024:.0f} MB", flush=True)
        if peak > 1_500_000:  # kB
            acc.problems.append(f"the monitor's memory peaked at {peak / 1024:.0f} MB (bound: 1500 MB)")
        return acc.check("hostile")
    finally:
        stack.close()


SECRET_VALUES = {
    "BEARWATCH_SLACK_TOKEN": "xoxb-drill-SECRET-4f1c9e",
    "BEARWATCH_ES_API_KEY": "drill-SECRET-es-key-77ab",
    "BEARWATCH_KAFKA_SASL_PASSWORD": "drill-SECRET-sasl-91de",
}


def secrets(copies: int) -> Accounting:
    """Headlines crafted as query syntax or Slack mentions are text; credentials appear nowhere."""
    values = demo_stream(copies)
    episode = [json.loads(v) for v in values if b"HLCY" in v and b"breach" in v and v.startswith(b"{")]
    crafted = [
        json.dumps(
            {
                "id": f"inject-{i}",
                "published_at": episode[0]["published_at"],
                "headline": h,
                "tickers": ["HLCY"],
                "source": "drill",
                "url": "https://news.example/inject",
            }
        ).encode()
        for i, h in enumerate(
            [
                'Halcyon Software shares plunge 40% as breach widens: title:(a OR b) AND "x',
                "Halcyon Software shares plunge 35% <!channel> as breach widens <https://evil.example|login>",
                'Halcyon Software shares plunge 30% *breach* `rm -rf` {"query":{"match_all":{}}} \\ ~ ^ ?',
            ]
        )
    ]
    at = values.index(next(v for v in values if v.startswith(b"{") and json.loads(v).get("id") == episode[0]["id"]))
    values = values[:at] + crafted + values[at:]
    from drills.slack_server import FakeSlack

    env = {k: v for k, v in SECRET_VALUES.items() if k != "BEARWATCH_KAFKA_SASL_PASSWORD"}  # SASL needs a SASL broker
    stack = Stack(partitions=1, env={**env, "BEARWATCH_METRICS_PORT": "0"})
    stack.slack.close()
    stack.slack = FakeSlack(token=SECRET_VALUES["BEARWATCH_SLACK_TOKEN"])
    stack.env["BEARWATCH_SLACK_BASE_URL"] = stack.slack.base_url
    try:
        stack.produce(values)
        port = _free_port()
        stack.start("monitor", env={"BEARWATCH_METRICS_PORT": str(port)})
        stack.start("detector", idle_exit=30)
        exposed = _scrape(f"http://127.0.0.1:{port}", stack.procs["monitor"])
        _wait_all(stack, ["monitor"])
        _drain_detector(stack)
        acc = stack.account(values)
        if "bearwatch_" not in exposed:
            acc.problems.append("could not read the monitor's /metrics: the metrics were not checked")
        # every crafted headline indexed as text, none dead-lettered
        es = stack.es()
        for i in range(len(crafted)):
            if not es.exists(index=stack.settings.elasticsearch.index("news"), id=f"inject-{i}"):
                acc.problems.append(f"crafted headline inject-{i} was not indexed")
        posted = json.dumps([m.get("blocks") for m in stack.slack.messages])
        if "<!channel>" in posted or "<https://evil.example" in posted:
            acc.problems.append("a crafted mention or link reached Slack unescaped")
        if "&lt;!channel&gt;" not in posted:
            acc.problems.append(
                "the crafted mention is not among the alert's headlines: the escaping was not exercised"
            )
        if not stack.slack.messages:
            acc.problems.append("no Slack message: the escaping was not exercised")
        # a wrong token: the error says so without the token
        bad = subprocess.run(
            [
                sys.executable,
                "-c",
                "from monitor.wiring import slack_delivery; from monitor.settings import load_settings; "
                "d = slack_delivery(load_settings()); d.post('probe', 'x', [])",
            ],
            env={**stack.env, "BEARWATCH_SLACK_TOKEN": "xoxb-drill-SECRET-wrong-0b3"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        haystacks = {
            "daemon logs": "\n".join(p.read_text(errors="replace") for p in stack.logs.glob("*.log")),
            "the wrong-token error": bad.stdout + bad.stderr,
            "documents": json.dumps([h for h in stack.indexed_ids()]) + json.dumps(stack.alerts()),
            "dead letters": json.dumps(stack.dead_letters()),
            "Slack messages": posted,
            "settings repr": repr(stack.settings),
            "metrics and health": exposed,
        }
        if "invalid_auth" not in haystacks["the wrong-token error"]:
            acc.problems.append("the wrong-token probe did not fail with invalid_auth")
        for where, text in haystacks.items():
            for secret in (*SECRET_VALUES.values(), "xoxb-drill-SECRET-wrong-0b3"):
                if secret in text:
                    acc.problems.append(f"a credential appears in {where}")
        return acc.check("secrets")
    finally:
        stack.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(base: str, proc, timeout_s: float = 60) -> str:
    """/metrics and /healthz of a running daemon, as soon as they answer."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return "".join(
                urllib.request.urlopen(base + path, timeout=5).read().decode() for path in ("/metrics", "/healthz")
            )
        except OSError:
            time.sleep(0.5)
    return ""


def disk(**_) -> Accounting:
    """The embedded default with no room for its outputs: a clear error, a clean stop, nothing lost."""
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="drill-disk-"))
    limit = 64 * 1024  # bytes any file may grow to: the scored output soon cannot

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "bearwatch", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_disk,
        cwd=ROOT,
    )
    acc = Accounting()
    if result.returncode == 0:
        acc.problems.append("the demo reported success although its outputs could not be written")
    if "Traceback" in result.stderr:
        acc.problems.append("a traceback instead of a clear error: " + result.stderr.strip().splitlines()[-1])
    if (
        "bearwatch: error:" not in result.stderr
        or "File too large" not in result.stderr
        and "No space" not in result.stderr
    ):
        acc.problems.append(f"no clear error about the disk: {result.stderr.strip()[-300:]}")
    # room again: the same command with --resume finishes the job, and nothing is lost
    again = subprocess.run(
        [sys.executable, "-m", "bearwatch", "demo", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    if again.returncode != 0:
        acc.problems.append(f"the resumed run failed: {again.stderr.strip()[-300:]}")
    from monitor.resources import demo_stream

    values = demo_stream().read_bytes().splitlines()
    from drills.core import expected

    valid, invalid = expected(values)
    acc.produced, acc.valid, acc.invalid = len(values), len(valid), len(invalid)
    scored = (
        [
            json.loads(line)["value"]["id"]
            for line in (out / "bearwatch.news.scored.jsonl").read_bytes().splitlines()
            if line.strip()
        ]
        if (out / "bearwatch.news.scored.jsonl").exists()
        else []
    )
    letters = (
        [line for line in (out / "bearwatch.news.dlq.jsonl").read_bytes().splitlines() if line.strip()]
        if (out / "bearwatch.news.dlq.jsonl").exists()
        else []
    )
    acc.indexed, acc.dead_letter_records, acc.dead_lettered = (
        len(set(scored)),
        len(letters),
        len({json.loads(x)["headers"]["bearwatch.source.offset"] for x in letters}),
    )
    if set(scored) != valid:
        acc.problems.append(
            f"after the resumed run {len(valid - set(scored))} valid item(s) are missing from the output"
        )
    if acc.dead_lettered != len(invalid):
        acc.problems.append(f"{acc.dead_lettered} distinct dead letters for {len(invalid)} invalid messages")
    print(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "(no stderr)", flush=True)
    return acc.check("disk")


def naughty_strings() -> list[str]:
    """The Big List of Naughty Strings (BEARWATCH_NAUGHTY_STRINGS: its base64 JSON list, which
    tests/run.sh fetches from the npm registry), or none when it is not there and not required."""
    import base64
    import os

    path = os.environ.get("BEARWATCH_NAUGHTY_STRINGS")
    if not path or not Path(path).exists():
        if os.environ.get("BEARWATCH_REQUIRE_NAUGHTY_STRINGS"):
            raise DrillFailed(
                "the naughty strings are required but BEARWATCH_NAUGHTY_STRINGS is not a file (tests/run.sh fetches "
                "them)"
            )
        print("poison: no naughty-strings corpus (BEARWATCH_NAUGHTY_STRINGS); only bearwatch's own cases", flush=True)
        return []
    return [base64.b64decode(x).decode("utf-8") for x in json.loads(Path(path).read_text())]


# Cases found by hand, each of which once stopped or stalled a daemon (issue: poison messages).
OWN_CASES = [
    "\ud800",
    "cut inside an emoji \ud83d",
    "\udfff\ud800",
    "\u0800" * 200,
    "\u0600" * 256,
    "x" * 257,
    "\x00\x1f\x7f\x9f",
    "\u202e\u2066rtl",
    "\ufeffbom",
    "e\u0301\u0301\u0301",
    "\U0001f4a9" * 100,
    "a\u2028b\u2029c",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2026-11-02T09:00:00",
    "$",
    " $ ",
    "\t",
]


def poison_stream(every: int, start: datetime | None = None) -> list[bytes]:
    """Each string as headline, id, ticker, timestamp and body of an otherwise valid item and as the
    raw message, with a valid item after each; then deep nesting and a lone surrogate as JSON escapes."""
    from datetime import timedelta, timezone

    t0 = start or datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    strings = naughty_strings()[::every] + OWN_CASES
    values: list[bytes] = []
    for i, s in enumerate(strings):
        when = (t0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")
        base = {"id": f"n{i}", "published_at": when, "headline": f"Naughty string {i}", "source": "drill"}
        roles = {
            "headline": {"headline": s, "tickers": ["ACME"]},
            "id": {"id": s},
            "ticker": {"tickers": [s]},
            "timestamp": {"published_at": s},
            "body": {"body": s},
        }
        for role, change in roles.items():
            values.append(json.dumps({**base, "id": f"n{i}-{role}", **change}).encode())
            values.append(
                json.dumps({**base, "id": f"n{i}-{role}-after", "headline": f"Acme steady after {role} {i}"}).encode()
            )
        values.append(s.encode("utf-8", "surrogatepass"))
        values.append(json.dumps({**base, "id": f"n{i}-raw-after", "headline": f"Acme steady after raw {i}"}).encode())
    deep = (
        b'{"id": "deep", "published_at": "2026-11-02T09:00:00Z", "headline": "deep", "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}"
    )
    values += [
        deep,
        b'{"id": "surrogate", "published_at": "2026-11-02T09:00:00Z", "headline": "emoji cut \\ud83d"}',
        b'{"id": "\\ud800", "published_at": "2026-11-02T09:00:00Z", "headline": "a lone surrogate id"}',
        b"",
        b"[]",
        b"null",
    ]
    return values


def poison(every: int) -> Accounting:
    """Naughty strings in every role through the daemon and the embedded default: both exit 0, every
    message is one document or one dead letter (one record per source position), nothing around them lost."""
    values = poison_stream(every)
    stack = Stack(partitions=3, slack=False)
    try:
        stack.produce(values)
        stack.start("monitor", idle_exit=10)
        _wait_all(stack, ["monitor"])
        acc = stack.account(values)
        if acc.dead_letter_records != acc.dead_lettered:
            acc.problems.append(
                f"{acc.dead_letter_records} dead-letter records for {acc.dead_lettered} source positions"
            )
    finally:
        stack.close()
    lines = [v for v in values if b"\n" not in v and b"\r" not in v and v.strip()]
    print(
        f"poison: the daemon took {len(values)} messages; the embedded default {len(lines)} (a message with a newline, "
        "or a blank one, is not one line of a file)",
        flush=True,
    )
    embedded, _ = embedded_run(lines)
    print(embedded.table("poison (embedded default)"), flush=True)
    acc.problems += embedded.problems
    return acc.check("poison")


def replay(items: int | None, seed: int = 3) -> Accounting:
    """The real StockNet stream as a backlog: 3 news partitions, 2 scoring instances started at
    different times, the detector alongside. The alerts (id, kind) must equal the embedded default's
    on the same items, and a second run's with another drain (instances the other way round, other
    batch sizes). Related history is off in both (alerts do not depend on it; it keeps CI short)."""
    from drills.stocknet import stream

    values = stream(items)
    env = {"BEARWATCH_RETRIEVAL_HISTORY": "off"}
    runs = []
    for attempt, (first_batch, second_batch, gap_s) in enumerate([(100, 256, 8.0), (256, 50, 3.0)]):
        stack = Stack(partitions=3, slack=False, env=env, batch_size=first_batch)
        try:
            stack.produce(values)
            stack.start("detector", idle_exit=20)
            stack.start("monitor1", idle_exit=10)
            time.sleep(gap_s)
            stack.start("monitor2", idle_exit=10, env={"BEARWATCH_MONITOR_BATCH_SIZE": str(second_batch)})
            _wait_all(stack, ["monitor1", "monitor2"])
            _drain_detector(stack)
            acc = stack.account(values)
            alerts = {(a["id"], a["kind"]) for a in stack.alerts()}
            log = (stack.logs / f"detector.{stack.starts['detector']}.log").read_text(errors="replace")
            late = [
                line.split(" late ")[0].rsplit(", ", 1)[-1] for line in log.splitlines() if "detection stopped" in line
            ]
            print(
                f"replay run {attempt + 1}: {len(alerts)} alerts; detector: {late[-1] if late else '?'} late items",
                flush=True,
            )
            runs.append((acc, alerts))
        finally:
            stack.close()
    embedded, demo = embedded_run(values, env)
    reference = {(a["id"], a["kind"]) for a in demo.alerts}
    print(
        f"replay: the embedded default raised {len(reference)} alerts on {len(values)} items ({demo.late} late)",
        flush=True,
    )
    acc = runs[0][0]
    acc.alerts, acc.alerts_expected = len(runs[0][1]), len(reference)
    acc.problems += embedded.problems + runs[1][0].problems
    for n, (_, alerts) in enumerate(runs, 1):
        if alerts != reference:
            acc.problems.append(
                f"run {n}'s alerts differ from the embedded default's: only daemons {sorted(alerts - reference)[:3]}, "
                f"only embedded {sorted(reference - alerts)[:3]} ({len(alerts & reference)} in common)"
            )
    return acc.check("replay")


DRILLS = {
    "crash": crash,
    "rebalance": rebalance,
    "es-outage": es_outage,
    "kafka-restart": kafka_restart,
    "slack": slack,
    "hostile": hostile,
    "secrets": secrets,
    "disk": disk,
    "poison": poison,
    "replay": replay,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bearwatch drill", description="fault drills with an exact accounting")
    p.add_argument("name", choices=[*DRILLS, "all"])
    p.add_argument("--scale", choices=["ci", "full"], default="full")
    args = p.parse_args(argv)
    from monitor.progress import log_lines

    log_lines()  # how far a long drill is (the producer's progress; `bearwatch drill` has set this up already)
    names = list(DRILLS) if args.name == "all" else [args.name]
    failed = []
    for name in names:
        started = time.monotonic()
        try:
            DRILLS[name](**SCALES[name][args.scale])
            print(f"drill {name}: passed in {time.monotonic() - started:.0f}s\n", flush=True)
        except DrillFailed as exc:
            print(f"drill {name}: FAILED in {time.monotonic() - started:.0f}s: {exc}\n", file=sys.stderr, flush=True)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
