"""What analysts' labels in the retrieval memory do, with no retraining: the adaptation curve.

    python bench/adaptation.py [--data ../shared/data] [--model DIR] [--json FILE] [--record]

New domains (the shipped model never trained on them): FiQA 2018 task 1 and Financial PhraseBank
(66 % agreement). Each is split in halves by a seeded hash of the near-duplicate group (so a text
and its near-duplicates are on one side); the first half is the pool of labels, the second the
test. The test half is scored with 0, 50, 200, 300, 1,000 and all of the pool's labels in memory
(the first n of the pool in hash order), through the same code as serving (InProcessMemory,
OnnxScorer.search_memory, MemoryFusion); two split seeds, figures are their means.

Base domains (what the model trained on): its own validation split (sentiment: Twitter + SEntFiN;
topic: Twitter; grouped, 20 %, seed 13, as the model card), scored with an empty memory and with
the base memory (the training split's labels of that head): the memory must not hurt there.

Speed: items/s of text → probabilities, per-item ONNX runs as the daemon does, with no memory
and with 300 and with the whole base memory, in one run.

--record writes the figures into the model's manifest (metrics.memory, metrics.memory_adaptation)
and renders its MODEL_CARD.md again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from monitor.labels_store import make_label
from monitor.model_artifact import ModelArtifact
from monitor.resources import shipped_model
from monitor.retrieval.memory import InProcessMemory
from monitor.scoring.metrics import classification_report
from monitor.scoring.onnx import OnnxScorer
from monitor.text import dedup_key
from training.data import DataSource, grouped_split, load_source

SIZES = (0, 50, 200, 300, 1000, None)  # None: the whole pool
SEEDS = (7, 8)
NEW_DOMAINS = {
    "FiQA 2018 (task 1)": "fiqa-2018-task1/train.csv",
    "PhraseBank 66 %": "financial-phrasebank/sentences_66agree.csv",
}
BASE = {
    "sentiment": {
        "twitter-sentiment": "twitter-financial-news-sentiment/train.csv",
        "sentfin-headlines": "sentfin-1.0/headlines.csv",
    },
    "topic": {"twitter-topic": "twitter-financial-news-topic/train.csv"},
}


def bucket(text: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{dedup_key(text)}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32


def memory_of(examples, task: str = "sentiment") -> InProcessMemory:
    return InProcessMemory(make_label({"text": e.text, task: getattr(e, task)}, "bench") for e in examples)


def score(
    scorer: OnnxScorer, texts: list[str], raw: dict, memory: InProcessMemory | None, task: str = "sentiment"
) -> list[str]:
    neighbours = None
    if memory is not None and len(memory):
        memory.sync(scorer)
        neighbours = scorer.search_memory(memory, texts, raw["item_embedding"])
    return scorer.finish(texts, raw, None, neighbours).predicted(task)


def figures(gold, predicted, labels) -> dict:
    r = classification_report(gold, predicted, labels)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}


def new_domain(scorer: OnnxScorer, path: Path) -> dict:
    examples, _ = load_source(DataSource(str(path), "sentiment"))
    labels = scorer.labels["sentiment"]
    runs: dict[str, list[dict]] = {}
    for seed in SEEDS:
        pool = sorted((e for e in examples if bucket(e.text, seed) < 0.5), key=lambda e: bucket(e.text, seed))
        test = [e for e in examples if bucket(e.text, seed) >= 0.5]
        texts, gold = [e.text for e in test], [e.sentiment for e in test]
        raw = scorer.encode(texts)
        for size in SIZES:
            chosen = pool if size is None else pool[:size]
            key = "all" if size is None else str(size)
            result = figures(gold, score(scorer, texts, raw, memory_of(chosen) if chosen else None), labels)
            runs.setdefault(key, []).append({**result, "labels": len(chosen)})
    return {
        key: {m: round(float(np.mean([r[m] for r in rs])), 4) for m in ("accuracy", "macro_f1", "labels", "n")}
        for key, rs in runs.items()
    }


def base_split(data: Path, task: str):
    examples = []
    for name, rel in BASE[task].items():
        examples += load_source(DataSource(str(data / rel), task, name))[0]
    return grouped_split(examples, 0.2, 13)  # the model's own split (its card: seed 13, 20 %)


def base_domains(scorer: OnnxScorer, data: Path, task: str) -> dict:
    train, valid = base_split(data, task)
    texts, gold = [e.text for e in valid], [getattr(e, task) for e in valid]
    raw = scorer.encode(texts)
    labels = scorer.labels[task]
    with_memory = score(scorer, texts, raw, memory_of(train, task), task)
    return {
        "empty memory": figures(gold, score(scorer, texts, raw, None, task), labels),
        "base memory": {**figures(gold, with_memory, labels), "labels": len(train)},
    }


def speed(scorer: OnnxScorer, texts: list[str], memories: dict[str, InProcessMemory | None], runs: int = 5) -> dict:
    """Best of `runs` per variant, the variants interleaved so that a slower minute of the machine
    falls on all of them alike."""
    for memory in memories.values():
        if memory is not None:
            memory.sync(scorer)
    best = dict.fromkeys(memories, 0.0)
    for _ in range(runs):
        for name, memory in memories.items():
            started = time.perf_counter()
            raw = scorer.encode(texts)
            neighbours = None
            if memory is not None:
                neighbours = scorer.search_memory(memory, texts, raw["item_embedding"])
            scorer.finish(texts, raw, None, neighbours)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - started))
    return {name: round(rate, 1) for name, rate in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the folder of the labelled data sets")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--record", action="store_true", help="record the figures in the model's manifest and card")
    args = parser.parse_args(argv)
    data = Path(args.data)
    scorer = OnnxScorer.load(ModelArtifact.load(args.model or shipped_model()), device="cpu")
    if scorer.memory_fusion is None:
        print(f"model {scorer.version} does not use the retrieval memory", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result: dict = {"model": scorer.version, "fusion": scorer.memory_fusion.to_json(), "new_domains": {}}
    print(f"model {scorer.version}; memory fusion {scorer.memory_fusion.to_json()}")
    header = "".join(f"{'all' if s is None else s:>13}" for s in SIZES)
    print(f"\naccuracy / macro-F1 on the test half, by labels in memory (mean of seeds {SEEDS}):")
    print(f"{'domain':<22}{header}")
    for name, rel in NEW_DOMAINS.items():
        curve = new_domain(scorer, data / rel)
        result["new_domains"][name] = curve
        cells = "".join(f"{100 * c['accuracy']:>6.1f} / {100 * c['macro_f1']:<4.1f}" for c in curve.values())
        print(f"{name:<22}{cells}   (all = {curve['all']['labels']:.0f} labels, test n = {curve['all']['n']:.0f})")
    result["base_domains"] = {}
    print("\nbase domains (the model's own validation split, its training labels as the memory):")
    for task in BASE:
        base = result["base_domains"][task] = base_domains(scorer, data, task)
        for name, f in base.items():
            extra = f", {f['labels']} labels" if "labels" in f else ""
            print(
                f"  {task:<10} {name:<13} accuracy {100 * f['accuracy']:.2f}  macro-F1 {100 * f['macro_f1']:.2f}  "
                f"(n {f['n']}{extra})"
            )
    train, valid = base_split(data, "sentiment")
    texts = [e.text for e in valid][:2048]
    rates = speed(
        scorer,
        texts,
        {"no memory": None, "300 labels": memory_of(train[:300]), f"{len(train)} labels": memory_of(train)},
    )
    result["items_per_s"] = rates
    print(f"\nitems/s, text to probabilities, {len(texts)} validation texts, best of 5 (interleaved):")
    for name, rate in rates.items():
        print(f"  {name:<14} {rate:>8.1f}  ({rate / rates['no memory']:.2f}x)")
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\n({result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.record:
        record(scorer.artifact.path, result)
    return 0


def record(model_dir: Path, result: dict) -> None:
    from monitor.model_artifact import MANIFEST
    from training.model_card import write_model_card

    path = model_dir / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["metrics"]["memory"] = {
        task: {
            "without": base["empty memory"],
            "with_memory": {k: v for k, v in base["base memory"].items() if k != "labels"},
            "memory_items": base["base memory"]["labels"],
            "measured_by": "bench/adaptation.py, the served ONNX model",
        }
        for task, base in result["base_domains"].items()
    }
    manifest["metrics"]["memory_adaptation"] = {
        "how": "bench/adaptation.py: half of each set as the labels, the other half scored, mean of 2 seeds",
        "domains": {
            name: {key: {m: c[m] for m in ("accuracy", "macro_f1")} for key, c in curve.items()}
            for name, curve in result["new_domains"].items()
        },
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_model_card(model_dir)
    print(f"recorded in {path} and its MODEL_CARD.md")


if __name__ == "__main__":
    sys.exit(main())
