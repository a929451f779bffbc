"""What retrieval costs per item: the scoring stage with related history off, BM25, kNN and both, on
the same items against the same pre-filled history index, in one run.

    python bench/retrieval.py [--history-items 20000] [--items 3000] [--json FILE]

The model's own retrieved context (fused in the head) costs one vector search in the model's pool
and no encoder time; what plain concatenation of retrieved text costs the encoder is measured by
bench/model_ceiling.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from monitor.resources import shipped_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring_stage import news_items, run_stage  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--history-items", type=int, default=20000, help="items indexed first, as the history searched")
    p.add_argument("--items", type=int, default=3000, help="items scored in each mode")
    p.add_argument("--model", default=str(shipped_model()))
    p.add_argument("--json")
    args = p.parse_args(argv)

    everything = news_items(args.history_items + args.items)
    history, items = everything[: args.history_items], everything[args.history_items :]
    prefix = f"bench-retrieval-{uuid.uuid4().hex[:6]}"
    env = {"BEARWATCH_ES_INDEX_PREFIX": prefix}
    run_stage(history, args.model, history="off", extra_env=env)  # fills the history index (with vectors)
    rows = []
    for mode in ("off", "bm25", "knn", "both"):
        r = run_stage(items, args.model, history=mode, extra_env=env)
        rows.append(
            {
                "history": mode,
                "items_per_s": r["items_per_s"],
                "related_ms_per_item": r["stage_ms_per_item"].get("retrieve", 0.0),
                "stage_ms_per_item": r["stage_ms_per_item"],
            }
        )
    base = rows[0]["items_per_s"]
    print(f"{'related history':<16}{'items/s':>9}{'ms/item':>9}{'vs off':>8}")
    for r in rows:
        r["ratio_to_off"] = round(r["items_per_s"] / base, 2)
        print(f"{r['history']:<16}{r['items_per_s']:>9}{r['related_ms_per_item']:>9}{r['ratio_to_off']:>8}")
    result = {"history_items": len(history), "items": len(items), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
