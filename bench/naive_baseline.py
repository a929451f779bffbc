"""bearwatch's scoring stage vs. the naive pipeline most open-source Kafka + sentiment projects run,
on the same items, the same local Kafka and Elasticsearch, and the same model, in one run:

- naive: a KafkaConsumer iterated one message at a time (auto-commit), one Elasticsearch query per
  message for related history (BM25, as bearwatch does), the model in PyTorch eager through a Hugging
  Face tokenizer and AutoModel with batch 1, one Elasticsearch index request per message and one
  produce per message;
- bearwatch: the daemon (`monitor run`) as shipped: batches, one msearch/mget/bulk per batch,
  ONNX Runtime int8, offsets committed after the writes.

    python bench/naive_baseline.py [--items 2000] [--model DIR] [--json FILE]

The naive side needs the model's PyTorch weights: a model directory from `bearwatch train` (it
keeps them under torch/), or without one the base encoder with untrained heads (the speed is the
same: same architecture, same sizes). Needs bearwatch[train] for torch and transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from monitor.resources import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring_stage import news_items, run_stage  # noqa: E402


def naive(items: list[bytes], torch_model: str | None, threads: int = 2) -> dict:
    import torch
    from elasticsearch import Elasticsearch
    from kafka import KafkaConsumer, KafkaProducer
    from transformers import AutoTokenizer

    from monitor.indices import mappings
    from monitor.settings import load_settings
    from monitor.sources.kafka import ensure_topics
    from training.train import resolve_base_model

    torch.set_num_threads(threads)
    run = f"naive-{uuid.uuid4().hex[:6]}"
    settings = load_settings()
    k = settings.kafka
    from dataclasses import replace

    ensure_topics(replace(k, partitions=1), [f"{run}.news", f"{run}.scored"])
    es = Elasticsearch(settings.elasticsearch.url, request_timeout=30)
    index = f"{run}-news"
    es.indices.create(index=index, mappings=mappings()["news"])
    if torch_model and (Path(torch_model) / "torch").is_dir():
        from training.export import load_torch

        model, weights = load_torch(Path(torch_model)), "trained weights"
        tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("minilm-l6"))
    else:
        from monitor.labels import SENTIMENT_LABELS, TOPIC_LABELS
        from training.model import MultiTaskEncoder

        base = resolve_base_model("minilm-l6")
        model, weights = (
            MultiTaskEncoder.from_base(str(base), len(TOPIC_LABELS), len(SENTIMENT_LABELS)),
            "base encoder, untrained heads",
        )
        tokenizer = AutoTokenizer.from_pretrained(base)
    model.eval()
    producer = KafkaProducer(bootstrap_servers=k.bootstrap)
    for value in items:
        producer.send(f"{run}.news", value)
    producer.flush()
    consumer = KafkaConsumer(
        f"{run}.news",
        bootstrap_servers=k.bootstrap,
        group_id=run,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        consumer_timeout_ms=5000,
    )
    n, start, first = 0, None, None
    for message in consumer:  # one message at a time
        if start is None:
            start = time.perf_counter()
        item = json.loads(message.value)
        es.search(
            index=index, size=5, query={"match": {"headline": item["headline"]}}
        )  # related history, one query per item
        with torch.no_grad():
            enc = tokenizer(item["headline"], truncation=True, max_length=64, return_tensors="pt")
            out = model(
                enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
            )
        topic_logits, sentiment_logits = out[0], out[1]
        doc = {
            "id": item["id"],
            "published_at": item["published_at"],
            "headline": item["headline"],
            "sentiment": int(sentiment_logits.argmax()),
            "topic": int(topic_logits.argmax()),
        }
        es.index(
            index=index, id=item["id"], document={**doc, "sentiment": str(doc["sentiment"]), "topic": str(doc["topic"])}
        )
        producer.send(f"{run}.scored", json.dumps(doc).encode())
        n += 1
        if n == 1:
            first = time.perf_counter()
        if n == len(items):
            break
    producer.flush()
    elapsed = time.perf_counter() - first
    consumer.close()
    producer.close()
    es.indices.delete(index=index)
    return {"items": n, "items_per_s": round((n - 1) / elapsed, 1), "weights": weights}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--model", default=str(shipped_model()), help="the ONNX model bearwatch serves")
    p.add_argument("--torch-model", help="a model directory with PyTorch weights (torch/) for the naive side")
    p.add_argument("--json")
    args = p.parse_args(argv)

    items = news_items(args.items)
    ours = run_stage(items, args.model, history="bm25")
    theirs = naive(items, args.torch_model)
    result = {
        "date": ours["date"],
        "machine": ours["machine"],
        "items": len(items),
        "bearwatch": ours,
        "naive": theirs,
        "speedup": round(ours["items_per_s"] / theirs["items_per_s"], 1),
    }
    print(f"{'pipeline':<62}{'items/s':>9}")
    print(f"{'naive (1 at a time, ES query + index per item, PyTorch eager)':<62}{theirs['items_per_s']:>9}")
    print(f"{'bearwatch (batches of 256, bulk ES, ONNX Runtime int8)':<62}{ours['items_per_s']:>9}")
    print(
        f"speed-up: {result['speedup']}x  ({len(items)} StockNet tweets, BM25 related history on both sides; "
        f"{os.cpu_count()} cores)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
