"""Peak memory of the scoring daemon under load: `bearwatch monitor run` as its own process on a
backlog, its resident set sampled from /proc, with an empty history index and with a large one.

    python bench/memory.py [--items 20000] [--history-docs 1000000] [--json FILE]

The large history index is filled with StockNet tweets (cycled, unique ids, spread over the look-back
window) without vectors, so the daemon's BM25 related-history queries search all of it; the index
lives in Elasticsearch, and what this measures is whether the daemon's own memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from monitor.resources import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring_stage import news_items  # noqa: E402


def fill_history(client, index: str, docs: int, texts: list[str]) -> float:
    from elasticsearch import helpers

    now = datetime.now(timezone.utc)
    start = time.monotonic()

    def actions():
        for i in range(docs):
            when = now - timedelta(seconds=(i * 7) % (6 * 86400))
            text = texts[i % len(texts)]
            yield {
                "_index": index,
                "_id": f"h{i}",
                "_source": {
                    "id": f"h{i}",
                    "published_at": when.isoformat().replace("+00:00", "Z"),
                    "headline": text,
                    "tickers": [],
                    "dedup_key": f"h{i}",
                    "duplicate": False,
                },
            }

    from monitor.progress import tracked

    filling = tracked(actions(), f"filling {index}", total=docs, unit="docs")
    bulk = helpers.streaming_bulk(client, filling, chunk_size=5000, raise_on_error=True, request_timeout=120)
    for _ok, _info in bulk:
        pass
    client.indices.refresh(index=index)
    return time.monotonic() - start


def peak_rss(items: list[bytes], model: str, prefix: str) -> dict:
    from dataclasses import replace

    from monitor.settings import load_settings
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import ensure_topics

    run = f"bench-mem-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "BEARWATCH_KAFKA_NEWS_TOPIC": f"{run}.news",
        "BEARWATCH_KAFKA_SCORED_TOPIC": f"{run}.scored",
        "BEARWATCH_KAFKA_DLQ_TOPIC": f"{run}.dlq",
        "BEARWATCH_KAFKA_GROUP": run,
        "BEARWATCH_KAFKA_PARTITIONS": "1",
        "BEARWATCH_ES_INDEX_PREFIX": prefix,
        "BEARWATCH_MODEL_PATH": model,
        "BEARWATCH_METRICS_PORT": "0",
        "BEARWATCH_RETRIEVAL_HISTORY": "bm25",
    }
    k = load_settings(env=env).kafka
    ensure_topics(replace(k, partitions=1), [k.news_topic, k.scored_topic, k.dlq_topic])
    publisher = KafkaPublisher(k, client_id="bench-producer")
    for value in items:
        publisher.add(Record(k.news_topic, value))
    publisher.flush()
    publisher.close()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bearwatch", "monitor", "run", "--idle-exit", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak, samples = 0, []

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                break
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            hwm = int(fields.get("VmHWM", "0 kB").split()[0])
            rss = int(fields.get("VmRSS", "0 kB").split()[0])
            peak = max(peak, hwm)
            samples.append(rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate(timeout=3600)
    sampler.join()
    return {
        "peak_rss_mb": round(peak / 1024, 1),
        "final_rss_mb": round((samples[-1] if samples else 0) / 1024, 1),
        "seconds": round(time.monotonic() - start, 1),
        "daemon_said": out.strip().splitlines()[-1] if out.strip() else "",
        "exit": proc.returncode,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--history-docs", type=int, default=1_000_000)
    p.add_argument("--model", default=str(shipped_model()))
    p.add_argument("--json")
    args = p.parse_args(argv)
    from monitor.progress import log_lines

    log_lines()  # how far a long run is, on stderr: a bar on a terminal, a log line every 30 s otherwise

    from elasticsearch import Elasticsearch

    from monitor.indices import mappings
    from monitor.settings import load_settings

    items = news_items(args.items)
    rows = [{"history_docs": 0, **peak_rss(items, args.model, f"bench-mem-{uuid.uuid4().hex[:6]}")}]
    if args.history_docs:
        es = Elasticsearch(load_settings().elasticsearch.url, request_timeout=120)
        prefix = f"bench-mem-big-{uuid.uuid4().hex[:6]}"
        es.indices.create(index=f"{prefix}-news", mappings=mappings()["news"])
        texts = [json.loads(v)["headline"] for v in news_items(50000)]
        fill_s = fill_history(es, f"{prefix}-news", args.history_docs, texts)
        rows.append(
            {"history_docs": args.history_docs, "fill_seconds": round(fill_s, 1), **peak_rss(items, args.model, prefix)}
        )
    print(f"{'history docs':>13}{'peak RSS MB':>13}{'seconds':>9}  daemon")
    for r in rows:
        print(f"{r['history_docs']:>13}{r['peak_rss_mb']:>13}{r['seconds']:>9}  {r['daemon_said']}")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "items": len(items), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
