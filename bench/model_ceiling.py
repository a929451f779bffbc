"""Model ceiling: ONNX Runtime alone on pre-tokenised inputs of a model directory, by batch size
(batch 1: one run per item on `--threads` workers, the daemon's CPU default),
for the input as served (text alone, context fused in the head) and for plain concatenation of
the two nearest neighbours' text (what naive retrieval augmentation costs the encoder).

    python bench/model_ceiling.py [--model monitor/models/default] [--texts N] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from monitor.resources import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_encoder.py

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_model()))
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--json")
    args = parser.parse_args()

    from _encoder import EncoderTimer

    from monitor.model_artifact import ContextSettings
    from monitor.retrieval.vectors import Neighbour, Query
    from monitor.scoring.inputs import build_model_input

    timer = EncoderTimer(args.model, args.threads)
    artifact, scorer = timer.artifact, timer.per_item
    with TEXTS.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for _, row in zip(range(args.texts), csv.DictReader(fh))]
    served = [build_model_input(t, [], artifact.context) for t in texts]
    concat_settings = ContextSettings(
        mode="concat", k=2, max_length=artifact.context.max_length + 64, context_budget=64
    )
    if scorer.pool is not None:  # the real nearest labelled neighbours' text
        emb = scorer.run_encoder(served)["item_embedding"]
        neighbours = scorer.pool.search([Query(v) for v in emb], 2)
    else:
        neighbours = [
            [Neighbour(id=str(j), text=texts[(i + j + 1) % len(texts)], score=0.0) for j in range(2)]
            for i in range(len(texts))
        ]
    concat = [build_model_input(t, n, concat_settings) for t, n in zip(texts, neighbours)]

    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for name, inputs, settings in (
            ("served input (text; any context fused in the head)", served, artifact.context),
            ("plain concatenation of 2 neighbours", concat, concat_settings),
        ):
            speed, length = timer.measure(inputs, settings, batch)
            rows.append(
                {"input": name, "batch": batch, "mean_tokens": round(length, 1), "items_per_s": round(speed, 1)}
            )
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": artifact.version,
        "onnx": artifact.onnx_file().name,
        "threads": args.threads,
        "rows": rows,
    }
    print(f"{'input':<44}{'batch':>6}{'tokens':>8}{'items/s':>9}")
    for r in rows:
        print(f"{r['input']:<44}{r['batch']:>6}{r['mean_tokens']:>8}{r['items_per_s']:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
