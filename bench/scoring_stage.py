"""Scoring-stage benchmark against the local Kafka and Elasticsearch (deploy/local/services.sh).

    python bench/scoring_stage.py --items 5000            # backlog: items/s and where the time goes
    python bench/scoring_stage.py --rate 100 --items 3000   # fixed offered load: produce→indexed latency
    python bench/scoring_stage.py --memory-compare 300     # backlog without the retrieval memory and
                                                           # with 300 labels in it, interleaved, twice

Headlines are real tweets from the StockNet stream (../shared/data, MIT), wrapped as news items
with their own timestamps and tickers. Prints a table and writes JSON (--json FILE).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from monitor.resources import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_encoder.py

ROOT = Path(__file__).resolve().parents[1]
STREAM = ROOT.parent / "shared" / "data" / "stocknet-tweets" / "tweets_stream.csv"
LABELLED = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.csv"


def news_items(n: int) -> list[bytes]:
    out = []
    with STREAM.open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if len(out) >= n:
                break
            out.append(
                json.dumps(
                    {
                        "id": f"bench-{i}",
                        "published_at": row["created_at"],
                        "headline": row["text"][:500],
                        "tickers": [row["ticker"]],
                        "source": "stocknet",
                        "lang": row["lang"],
                    }
                ).encode()
            )
    return out


def ceiling(
    model: str, items: list[bytes], batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64), threads: int = 2
) -> dict:
    """ONNX Runtime alone on these items' text, pre-tokenised, at the best of `batch_sizes` (1: one
    run per item on `threads` workers, as the daemon scores on CPU): the most the model could do here."""
    from _encoder import EncoderTimer

    from monitor.scoring.inputs import build_model_input

    timer = EncoderTimer(model, threads)
    inputs = [build_model_input(json.loads(v)["headline"], [], timer.artifact.context) for v in items]
    best: dict = {}
    for batch in batch_sizes:
        speed, tokens = timer.measure(inputs, timer.artifact.context, batch, repeats=1)
        if speed > best.get("items_per_s", 0):
            best = {"items_per_s": round(speed, 1), "batch": batch, "mean_tokens": round(tokens, 1)}
    return best


def run_stage(
    items: list[bytes],
    model: str,
    batch_size: int = 256,
    history: str = "bm25",
    rate: float | None = None,
    run: str | None = None,
    extra_env: dict | None = None,
    memory: bool = True,
    labels: list | None = None,
    prefetch: bool = True,
) -> dict:
    """The real scoring stage (in this process) on `items` through fresh topics and indices."""
    from bearwatch.daemon import build_kafka_app
    from monitor.settings import load_settings
    from monitor.sinks.base import Record
    from monitor.sinks.kafka import KafkaPublisher
    from monitor.sources.kafka import ensure_topics

    run = run or f"bench-{uuid.uuid4().hex[:6]}"
    settings = load_settings(env={**os.environ, "BEARWATCH_METRICS_PORT": "0", **(extra_env or {})})
    settings = replace(
        settings,
        kafka=replace(
            settings.kafka,
            news_topic=f"{run}.news",
            scored_topic=f"{run}.scored",
            dlq_topic=f"{run}.dlq",
            group=run,
            partitions=1,
        ),
        elasticsearch=replace(
            settings.elasticsearch, index_prefix=(extra_env or {}).get("BEARWATCH_ES_INDEX_PREFIX", run)
        ),
        model=replace(settings.model, path=model, threads=2),
        monitor=replace(settings.monitor, batch_size=batch_size, prefetch=prefetch),
        retrieval=replace(settings.retrieval, history=history, memory=memory),
    )
    k = settings.kafka
    if labels:  # analysts' labels in the labels index: the retrieval memory
        from monitor.elastic.client import connect, ensure_indices
        from monitor.elastic.labels import ElasticsearchLabels

        es = connect(settings.elasticsearch)
        ensure_indices(es, settings.elasticsearch, 384)
        ElasticsearchLabels(es, settings.elasticsearch.index("labels")).put(labels)
    ensure_topics(k, [k.news_topic, k.scored_topic, k.dlq_topic])
    latencies: list[float] = []
    done: list[tuple[float, int]] = []  # (when a batch was committed, its size)

    def on_batch(messages, result) -> None:  # after the batch is durable and committed
        now_ms = time.time() * 1000
        done.append((time.monotonic(), len(messages)))
        latencies.extend(now_ms - m.timestamp_ms for m in messages if m.timestamp_ms)

    app = build_kafka_app(settings)
    app.on_batch = on_batch
    publisher = KafkaPublisher(k, client_id="bench-producer")

    def produce() -> None:
        start = time.monotonic()
        for i, value in enumerate(items):
            publisher.add(Record(k.news_topic, value))
            if rate:
                publisher.flush()
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        publisher.flush()

    if rate:
        producer = threading.Thread(target=produce)
        producer.start()
        app.run(idle_timeout_s=5)
        producer.join()
    else:
        produce()  # a backlog first, then drain it
        app.run(idle_timeout_s=3)
    s = app.stats
    # From the first batch's commit to the last's: start-up and the final idle wait excluded.
    elapsed = max(1e-9, done[-1][0] - done[0][0])
    counted = sum(n for _, n in done[1:])
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "model": app.models.scorer.version,
        "provider": app.models.scorer.provider,
        "items": s.consumed,
        "scored": s.scored,
        "mode": f"offered {rate}/s" if rate else "backlog",
        "batch_size": batch_size,
        "history": history,
        "prefetch": prefetch,
        "items_per_s": round(counted / elapsed, 1),
        "stage_ms_per_item": {k2: round(1000 * v / max(1, s.consumed), 3) for k2, v in s.seconds.items()},
        "wall_ms_per_item": round(1000 * elapsed / max(1, counted), 3),
    }
    if latencies:
        p = np.percentile(latencies, [50, 95, 99])
        result["latency_ms_produce_to_indexed"] = {"p50": round(p[0], 1), "p95": round(p[1], 1), "p99": round(p[2], 1)}
    app.source.close()
    app.publisher.close()
    publisher.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rate", type=float, help="offered load in items/s (default: a backlog, as fast as possible)")
    parser.add_argument("--model", default=str(shipped_model()))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--history", default="bm25", choices=["off", "bm25", "knn", "both"])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--memory-compare",
        type=int,
        metavar="N",
        help="run the backlog twice: retrieval memory off, then on with N labelled Twitter-sentiment items in it",
    )
    parser.add_argument(
        "--prefetch-compare",
        action="store_true",
        help="the backlog with monitor.prefetch off and on, interleaved twice, against the model ceiling",
    )
    args = parser.parse_args(argv)

    items = news_items(args.items)
    if args.memory_compare:
        from monitor.labels_store import make_label

        with LABELLED.open(encoding="utf-8", newline="") as fh:
            rows = [r for _, r in zip(range(args.memory_compare), csv.DictReader(fh))]
        labels = [make_label({"text": r["text"], "sentiment": r["label"]}, "bench") for r in rows]
        runs: dict[str, list[dict]] = {"memory_off": [], "memory_on": []}
        for _ in range(2):  # interleaved, so that a slower minute of the machine falls on both
            runs["memory_off"].append(run_stage(items, args.model, args.batch_size, args.history, memory=False))
            runs["memory_on"].append(
                run_stage(items, args.model, args.batch_size, args.history, memory=True, labels=labels)
            )
        off, on = (max(r, key=lambda x: x["items_per_s"]) for r in runs.values())
        result = {
            "memory_off": off,
            "memory_on": {**on, "labels": len(labels)},
            "runs_items_per_s": {k: [x["items_per_s"] for x in r] for k, r in runs.items()},
        }
        result["ratio_on_to_off"] = round(on["items_per_s"] / off["items_per_s"], 3)
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    top = ceiling(args.model, items[: min(len(items), 4096)])
    if args.prefetch_compare:
        runs = {"prefetch_off": [], "prefetch_on": []}
        for _ in range(2):  # interleaved, so that a slower minute of the machine falls on both
            for name, flag in (("prefetch_off", False), ("prefetch_on", True)):
                runs[name].append(run_stage(items, args.model, args.batch_size, args.history, prefetch=flag))
        result = {name: max(r, key=lambda x: x["items_per_s"]) for name, r in runs.items()}
        result["runs_items_per_s"] = {name: [x["items_per_s"] for x in r] for name, r in runs.items()}
        result["model_ceiling_same_items"] = top
        for name in runs:
            result[f"ratio_to_ceiling_{name}"] = round(result[name]["items_per_s"] / top["items_per_s"], 3)
        result["ratio_on_to_off"] = round(
            result["prefetch_on"]["items_per_s"] / result["prefetch_off"]["items_per_s"], 3
        )
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return
    result = run_stage(items, args.model, args.batch_size, args.history, args.rate)
    result["model_ceiling_same_items"] = top
    result["ratio_to_ceiling"] = round(result["items_per_s"] / top["items_per_s"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
