"""The embedded default as its history grows: items/s and peak RSS at 10k, 100k and 1M items of history.

    python bench/embedded_scale.py [--sizes 10000,100000,1000000] [--items 3000] [--json FILE]

History is the real StockNet stream repeated (each copy with new ids, 830 days earlier than the
next: the stream spans 820; the last copy is the real one), written straight into the embedded store as the scoring
stage would write it (the whole document, BM25 terms; no vectors, as with the default
`retrieval.history = "bm25"`). At each size, `--items` more items of the same repeated stream —
the ones that come next, so their 72-hour look-back holds the history's last days — run through
the embedded default (`build_embedded_app`: file source, the shipped model, related history on,
JSON-lines outputs) in a fresh process, which reports its items/s (model loading excluded) and its
peak resident set (VmHWM). The last row runs the same items with related history off against the
largest history: what the model and the rest cost without the store's queries; and, with
`--prefetch-off`, one more runs them with related history on and `monitor.prefetch = false` (the
next batch is not encoded while this one is written): the overlap's own gain, side by side. Prints
a table with ratios to the first size; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIFT = timedelta(days=830)


def base_items() -> list[dict]:
    from drills.stocknet import csv_path
    from monitor.detection.stocknet import stream_items

    return list(stream_items(csv_path()))


def repeated(items: list[dict], start: int, count: int, copies: int) -> Iterator[dict]:
    """Items start .. start+count of the stream repeated `copies` times, with new ids and shifted
    times: copy c is (copies - 1 - c) × 830 days earlier than the real stream, so the last copy is
    the real one (items must not be published in the future: they would be invalid)."""
    from monitor.schema import format_time, parse_stored_time

    for i in range(start, start + count):
        copy, item = divmod(i, len(items))
        base = items[item]
        yield {
            **base,
            "id": f"{base['id']}-c{copy}",
            "published_at": format_time(parse_stored_time(base["published_at"]) - (copies - 1 - copy) * SHIFT),
        }


def as_document(item: dict) -> dict:
    """What the scoring stage stores for an item (figures of a typical scored document)."""
    from monitor.text import dedup_key

    return {
        **item,
        "scored_at": item["published_at"],
        "duplicate": False,
        "duplicate_of": None,
        "dedup_key": dedup_key(item["headline"]),
        "content_hash": format(hash(item["id"]) & (1 << 128) - 1, "032x"),
        "sentiment": "neutral",
        "sentiment_confidence": 0.9,
        "p_bearish": 0.05,
        "p_neutral": 0.9,
        "p_bullish": 0.05,
        "negative": False,
        "is_negative": 0,
        "topic": "Company | Product News",
        "topic_confidence": 0.5,
        "model_version": "bench",
        "context_mode": "none",
        "context_ids": [],
        "related_ids": [],
        "kafka": {"topic": "bench", "partition": 0, "offset": 0},
    }


def fill(history: Path, items: list[dict], start: int, count: int, copies: int) -> float:
    from monitor.retrieval.embedded import EmbeddedHistory

    store = EmbeddedHistory(history, vectors=False)
    began = time.perf_counter()
    from monitor.progress import tracked

    documents = (as_document(item) for item in repeated(items, start, count, copies))
    refused = store.write_all(tracked(documents, f"history {start:,} to {start + count:,}", total=count), batch=2000)
    store.close()
    if refused:
        raise SystemExit(f"{refused} history documents were refused")
    return time.perf_counter() - began


def measure(out: str, items_file: str, history: str, prefetch: str = "on") -> None:
    """In a fresh process: the embedded default on items_file; prints one JSON line."""
    import resource
    from dataclasses import replace

    from bearwatch.daemon import build_embedded_app
    from monitor.settings import load_settings

    settings = load_settings(None)
    if history == "off":
        settings = replace(settings, retrieval=replace(settings.retrieval, history="off"))
    if prefetch == "off":
        settings = replace(settings, monitor=replace(settings.monitor, prefetch=False))
    app = build_embedded_app(settings, items_file, Path(out))
    began = time.perf_counter()
    stats = app.run(idle_timeout_s=0)
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "items": stats.consumed,
                "scored": stats.scored,
                "dead_letters": stats.dead_letters,
                "seconds": round(seconds, 2),
                "items_per_s": round(stats.consumed / seconds, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "history_ms_per_item": round(1000 * stats.seconds.get("retrieve", 0.0) / max(1, stats.consumed), 3),
            }
        )
    )


def run_measure(
    out: Path, items: list[dict], start: int, count: int, copies: int, history: str = "bm25", prefetch: str = "on"
) -> dict:
    for name in ("offsets.json", "bearwatch.news.scored.jsonl", "bearwatch.news.dlq.jsonl"):
        (out / name).unlink(missing_ok=True)
    items_file = out / "items.jsonl"
    return measured_run(__file__, str(out), items_file, repeated(items, start, count, copies), count, history, prefetch)


def measured_run(
    script: str, target: str, items_file: Path, items: Iterator[dict], count: int, history: str, prefetch: str = "on"
) -> dict:
    """`script --measure target items_file history prefetch` in a fresh process, on `items` written
    to items_file: the figures of its last stdout line (its progress lines, on stderr, pass through)."""
    with items_file.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    result = subprocess.run(
        [sys.executable, script, "--measure", target, str(items_file), history, prefetch],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if result.returncode != 0:
        raise SystemExit(f"the measured run failed with exit code {result.returncode} (its errors are above)")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if figures["scored"] != count:
        raise SystemExit(f"the measured run scored {figures['scored']} of {count} items: {figures}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="history sizes, in items, ascending")
    parser.add_argument("--items", type=int, default=3000, help="items scored at each size")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", help="keep the history in this folder (default: a temporary one, removed)")
    parser.add_argument(
        "--prefetch-off", action="store_true", help="one more run at the largest history with monitor.prefetch off"
    )
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from monitor.progress import log_lines

    log_lines()  # how far a long run is, on stderr: a bar on a terminal, a log line every 30 s otherwise
    if args.measure:
        measure(*args.measure)
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    items = base_items()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bearwatch-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    rows, have = [], 0
    copies = -(-(sizes[-1] + (len(sizes) + 1) * args.items) // len(items))
    try:
        for size in sizes:
            fill_s = fill(out / "history", items, have, size - have, copies)
            have = size
            row = {"history": size, "fill_s": round(fill_s, 1), **run_measure(out, items, have, args.items, copies)}
            have += row["items"]
            row["db_mb"] = round(sum(f.stat().st_size for f in (out / "history").iterdir()) / 2**20, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if args.prefetch_off:  # the same items as the next row, so the two compare item for item
            plain = {
                "history": have,
                "fill_s": 0.0,
                **run_measure(out, items, have, args.items, copies, prefetch="off"),
            }
            plain["prefetch"] = "off"
            plain["db_mb"] = rows[-1]["db_mb"]
            rows.append(plain)
        off = {"history": have, "fill_s": 0.0, **run_measure(out, items, have, args.items, copies, history="off")}
        off["related"] = "off"
        off["db_mb"] = rows[-1]["db_mb"]
        rows.append(off)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    first = rows[0]["items_per_s"]
    print(
        f"\nembedded default, {args.items} StockNet items scored after each history size; {platform.machine()}, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'history items':>14} {'related':>8} {'prefetch':>9} {'items/s':>8} {'vs first':>9} {'history ms/item':>16} "
        f"{'peak RSS MB':>12} {'store MB':>9} {'fill s':>7}"
    )
    for r in rows:
        print(
            f"{r['history']:>14,} {r.get('related', 'bm25'):>8} {r.get('prefetch', 'on'):>9} {r['items_per_s']:>8.1f} "
            f"{r['items_per_s'] / first:>9.2f} {r['history_ms_per_item']:>16.3f} {r['peak_rss_mb']:>12.1f} "
            f"{r['db_mb']:>9.1f} {r['fill_s']:>7.1f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"items": args.items, "machine": platform.machine(), "cores": os.cpu_count(), "rows": rows}, indent=2
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
