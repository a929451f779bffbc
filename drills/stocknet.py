"""The real StockNet tweet stream (Xu & Cohen 2018, MIT) as news items: one per distinct tweet, with
every ticker it was filed under, in the stream's own order (by created_at).

`drills/data/stocknet-slice.jsonl.gz` holds the first 20,000 items (what CI's replay drill runs);
the whole stream (96,826 items) is read from the shared data folder's `stocknet-tweets/tweets_stream.csv`
(`BEARWATCH_STOCKNET_CSV`, or `../shared/data/...` beside the checkout).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from monitor.detection.stocknet import stream_items

HERE = Path(__file__).resolve().parent
SLICE = HERE / "data" / "stocknet-slice.jsonl.gz"


def csv_path() -> Path:
    return Path(
        os.environ.get("BEARWATCH_STOCKNET_CSV")
        or HERE.parent.parent / "shared" / "data" / "stocknet-tweets" / "tweets_stream.csv"
    )


def from_csv(path: Path, limit: int | None = None) -> list[bytes]:
    return [json.dumps(item, ensure_ascii=False).encode() for item in stream_items(path, limit)]


def stream(limit: int | None = None) -> list[bytes]:
    """The first `limit` items (all with None): from the committed slice when it has enough."""
    if limit is not None and limit <= 20_000 and SLICE.exists():
        with gzip.open(SLICE, "rb") as fh:
            return [line for line in fh.read().splitlines() if line.strip()][:limit]
    path = csv_path()
    if not path.exists():
        raise FileNotFoundError(f"the StockNet stream is not at {path} (set BEARWATCH_STOCKNET_CSV)")
    return from_csv(path, limit)


if __name__ == "__main__":  # regenerate the committed slice
    values = from_csv(csv_path(), 20_000)
    with gzip.GzipFile(SLICE, "wb", mtime=0) as fh:
        fh.write(b"\n".join(values) + b"\n")
    print(f"{SLICE}: {len(values)} items")
