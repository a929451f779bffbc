"""The embedded default's history store: one SQLite database (WAL, one transaction per batch),
with the look-back window of related-history queries held in memory.

What it must do well is stay fast and small as history grows. So every query is bounded by time:
a document's row id is its publication time (milliseconds since the epoch, shifted left 20 bits,
plus a sequence number for items published in the same millisecond), so a time range is a row-id
range. Related history (BM25 over headlines, Elasticsearch's formula: k1 1.2, b 0.75,
idf = ln(1 + (N − n + 0.5)/(n + 0.5)) with N and n over the whole history; exact cosine kNN) is
answered from an in-memory copy of the documents of the current look-back window only: their
postings (term → row ids, tf, length) as numpy arrays. Consecutive batches of a stream ask for
nearly the same window, so the copy is extended by what is newer, updated by the store's own
writes, and rebuilt from SQLite only when the stream has moved half a look-back past it (or a
stored document was replaced). Each term's document frequency and the history's size and total
length are counters in the database, so nothing depends on the history's size but the counters.

Measured while building it (2 cores, StockNet): SQLite FTS5's `bm25()` counts each query term's
documents by walking its whole doclist on every query (5.8 ms a query at 300,000 documents against
0.25 ms for the same time-bounded match without it), and an inverted index in a B-tree scored by
SQL took 1.6 ms a query for the ~900 postings of a 72-hour StockNet window; the in-memory window
takes a fraction of that (docs/benchmarks.md).

Nothing is read wholesale at start (the counters are one row); memory holds one window; a batch is
one transaction, so a crash or a full disk leaves the previous batch's state, never half of one. A
folder holding the previous version's `history.jsonl` is imported once and the file set aside as
`history.jsonl.imported`.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NoReturn

import numpy as np

from monitor.errors import OutOfSpace, StoreUnavailable
from monitor.jsonl import dumps_line, read_objects
from monitor.retrieval.history import (
    BM25_B,
    BM25_K1,
    TICKER_BOOST,
    DedupQuery,
    HistoryQuery,
    Original,
    Related,
    tokens,
)
from monitor.schema import format_time, parse_stored_time

log = logging.getLogger("bearwatch.history")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SEQ_BITS = 20  # up to 2^20 items in one millisecond; row ids stay inside 64 bits until the year 2248
_MS = timedelta(milliseconds=1)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY,            -- publication time in ms << 20 | sequence
    id TEXT NOT NULL UNIQUE,
    published_ms INTEGER NOT NULL,
    dedup_key TEXT NOT NULL,
    duplicate_of TEXT,
    tickers TEXT NOT NULL,              -- JSON list
    headline TEXT NOT NULL,
    body TEXT NOT NULL,                 -- the document as JSON, without its embedding
    embedding BLOB                      -- float32, only when vectors are kept
);
CREATE INDEX IF NOT EXISTS docs_dedup ON docs (dedup_key, published_ms, id);
CREATE TABLE IF NOT EXISTS terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
MAX_QUERY_TERMS = 256  # distinct terms of one query (a pathological headline cannot make it unbounded)


def _ms(t: datetime) -> int:
    return (t - _EPOCH) // _MS


def _rid_floor(ms: int) -> int:
    return ms << _SEQ_BITS


class _Crowded(Exception):
    """No row id left in a document's millisecond: that document is refused (it is not an outage)."""


@dataclass
class _Doc:
    id: str
    dedup_key: str
    tickers: tuple[str, ...]
    headline: str
    length: int
    counts: Counter
    vector: np.ndarray | None


class _Grow:
    """Row ids with values, appended in any order, read as numpy arrays sorted by row id."""

    __slots__ = ("rids", "values", "_arrays")

    def __init__(self) -> None:
        self.rids: list[int] = []
        self.values: list = []
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, rid: int, value) -> None:
        self.rids.append(rid)
        self.values.append(value)
        self._arrays = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            rids = np.asarray(self.rids, dtype=np.int64)
            values = np.asarray(self.values, dtype=np.float64)
            order = np.argsort(rids, kind="stable")
            self._arrays = (rids[order], values[order])
        return self._arrays

    def between(self, lo: int, hi: int) -> np.ndarray:
        """The values of the row ids in [lo, hi)."""
        rids, values = self.arrays()
        a, b = rids.searchsorted((lo, hi))
        return values[a:b]


@dataclass
class _Window:
    """Every stored document with lo <= rid < hi, indexed for related-history queries. A document
    is known by its position in `docs` (so a query's scores are one dense vector)."""

    lo: int
    hi: int
    docs: list[_Doc] = field(default_factory=list)
    rids: list[int] = field(default_factory=list)
    postings: dict[str, _Grow] = field(default_factory=dict)  # term -> rid: (position, tf, length)
    tickers: dict[str, _Grow] = field(default_factory=dict)  # ticker -> rid: position
    vectors: _Grow = field(default_factory=_Grow)  # rid: position, for documents with a vector
    by_key: dict[str, list[int]] = field(default_factory=dict)  # dedup key -> positions
    by_id: dict[str, int] = field(default_factory=dict)

    def add(self, rid: int, doc: _Doc) -> None:
        pos = len(self.docs)
        self.docs.append(doc)
        self.rids.append(rid)
        self.by_id[doc.id] = pos
        self.by_key.setdefault(doc.dedup_key, []).append(pos)
        for term, tf in doc.counts.items():
            postings = self.postings.get(term)
            if postings is None:
                postings = self.postings[term] = _Grow()
            postings.add(rid, (pos, tf, doc.length))
        for ticker in set(doc.tickers):
            rids = self.tickers.get(ticker)
            if rids is None:
                rids = self.tickers[ticker] = _Grow()
            rids.add(rid, pos)
        if doc.vector is not None:
            self.vectors.add(rid, pos)


class EmbeddedHistory:
    """The embedded default's history store: SQLite on disk (a folder) or in memory (None).

    >>> store = EmbeddedHistory()  # in memory; EmbeddedHistory(Path("state")) persists
    """

    def __init__(self, folder: Path | None = None, vectors: bool = True, cache_mb: int = 32) -> None:
        self.folder = folder
        self.vectors = vectors  # keep embeddings (the knn and both methods search them)
        self._pending: list[dict] = []
        self._lock = threading.RLock()
        self._window: _Window | None = None
        self.window_loads = 0  # how often the window was (re)built from the database
        self._df_cache: dict[str, int] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.path: str = str(folder / "history.sqlite")
        else:
            self.path = ":memory:"
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if folder is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # a committed batch survives a power cut too
            self._db.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
            self._db.executescript(_SCHEMA)
            counters = dict(self._db.execute("SELECT name, value FROM counters"))
        except sqlite3.Error as exc:
            self._raise(exc, "open")
        self._n, self._total_length = counters.get("docs", 0), counters.get("length", 0)
        if folder is not None and (folder / "history.jsonl").exists():
            self._import_jsonl(folder / "history.jsonl")

    # --- writes ----------------------------------------------------------------------------------
    def add(self, documents: Sequence[dict]) -> None:
        self._pending.extend(documents)

    def flush(self) -> dict[int, str]:
        pending, self._pending = self._pending, []  # a failed batch is replayed and added again
        if not pending:
            return {}
        rows, refused = [], {}
        for i, doc in enumerate(pending):
            try:
                rows.append((i, self._row(doc)))
            except (ValueError, TypeError, UnicodeError, RecursionError, OverflowError, KeyError) as exc:
                refused[i] = f"the embedded history refused the document: {type(exc).__name__}: {str(exc)[:300]}"
        with self._lock:
            n, total, written, replaced = self._n, self._total_length, [], False
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for i, row in rows:
                    try:
                        rid, n, total, was = self._write(row, n, total)
                    except _Crowded as exc:
                        refused[i] = f"the embedded history refused the document: {exc}"
                        continue
                    written.append((rid, row[-1]))
                    replaced = replaced or was
                self._db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)", (("docs", n), ("length", total)))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._raise(exc, "write")
            self._n, self._total_length = n, total
            window = self._window
            if replaced:  # a replaced version may sit inside the window: built again when asked
                self._window = None
                self._df_cache.clear()
                return refused
            for rid, doc in written:
                for term in doc.counts:
                    if term in self._df_cache:
                        self._df_cache[term] += 1
                if window is not None and window.lo <= rid < window.hi:
                    window.add(rid, doc)
        return refused

    def _row(self, doc: dict) -> tuple:
        """What one document becomes, or the error that makes it refused (as Elasticsearch refuses one)."""
        ms = _ms(parse_stored_time(doc["published_at"]))
        if not -(1 << 62) >> _SEQ_BITS <= ms < (1 << 62) >> _SEQ_BITS:
            raise OverflowError(f"published_at {doc['published_at']!r} is out of the store's range")
        body = dumps_line({k: v for k, v in doc.items() if k != "embedding"})
        embedding = doc.get("embedding")
        vector = np.asarray(embedding, dtype=np.float32) if self.vectors and embedding is not None else None
        tickers = tuple(str(t) for t in doc.get("tickers") or ())
        headline = str(doc["headline"])
        counts = Counter(tokens(headline))
        parsed = _Doc(str(doc["id"]), str(doc["dedup_key"]), tickers, headline, sum(counts.values()), counts, vector)
        return (
            parsed.id,
            ms,
            parsed.dedup_key,
            doc.get("duplicate_of"),
            json.dumps(list(tickers)),
            headline,
            body,
            vector.tobytes() if vector is not None else None,
            parsed,
        )

    def _write(self, row: tuple, n: int, total: int) -> tuple[int, int, int, bool]:
        doc_id, ms, *columns, doc = row
        db = self._db
        base = _rid_floor(ms)
        (last,) = db.execute(
            "SELECT max(rid) FROM docs WHERE rid >= ? AND rid < ?", (base, base + (1 << _SEQ_BITS))
        ).fetchone()
        rid = base if last is None else last + 1
        if rid >= base + (1 << _SEQ_BITS):  # checked before anything is written for this document
            raise _Crowded(f"more than {1 << _SEQ_BITS} items published in the same millisecond")
        old = db.execute("SELECT rid, headline FROM docs WHERE id = ?", (doc_id,)).fetchone()
        if old is not None:  # a new version replaces the old one everywhere
            old_rid, old_headline = old
            old_counts = Counter(tokens(old_headline))
            db.executemany("UPDATE terms SET df = df - 1 WHERE term = ?", ((t,) for t in old_counts))
            db.execute("DELETE FROM docs WHERE rid = ?", (old_rid,))
            n, total = n - 1, total - sum(old_counts.values())
        db.execute("INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (rid, doc_id, ms, *columns))
        db.executemany(
            "INSERT INTO terms VALUES (?, 1) ON CONFLICT (term) DO UPDATE SET df = df + 1", ((t,) for t in doc.counts)
        )
        return rid, n + 1, total + doc.length, old is not None

    def write_all(self, documents: Iterable[dict], batch: int = 1000) -> int:
        """Store many documents, a transaction per `batch`; returns how many were refused."""
        refused, chunk = 0, []
        for doc in documents:
            chunk.append(doc)
            if len(chunk) == batch:
                self.add(chunk)
                refused += len(self.flush())
                chunk = []
        self.add(chunk)
        return refused + len(self.flush())

    def _import_jsonl(self, path: Path) -> None:
        """The previous version's history file, once: imported in batches, then set aside."""
        log.info("importing the previous history file %s into %s", path, self.path)
        refused = self.write_all(read_objects(path))
        if refused:
            log.warning("%d documents of %s could not be imported", refused, path)
        path.rename(path.with_name(path.name + ".imported"))

    def _raise(self, exc: sqlite3.Error, doing: str) -> NoReturn:
        """An SQLite error as bearwatch's: no room to write (not retried), or the store unavailable."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        where = f"the embedded history in {self.folder}" if self.folder else "the in-memory history"
        if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            full = self._why_full()
            if primary == sqlite3.SQLITE_FULL or full:
                raise OutOfSpace(
                    f"no room to write {where}: {full or exc}. Free some space (or raise the limit) and run "
                    "again; it resumes after the last batch that was written in full"
                ) from exc
        raise StoreUnavailable(f"cannot {doing} {where}: {exc}") from exc

    def _why_full(self) -> str:
        """Why SQLite could not write, when the cause is the disk or a file-size limit ('' otherwise)."""
        if self.folder is None:
            return ""
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        files = [Path(self.path + suffix) for suffix in ("", "-wal", "-journal")]
        sizes = [f.stat().st_size for f in files if f.exists()]
        if limit != resource.RLIM_INFINITY and sizes and max(sizes) + 65536 >= limit:
            return f"File too large (the file-size limit is {limit} bytes)"
        if shutil.disk_usage(self.folder).free < 1 << 20:
            return os.strerror(28)  # "No space left on device"
        return ""

    # --- reads -----------------------------------------------------------------------------------
    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                self._raise(exc, "read")

    def __len__(self) -> int:
        return self._n

    def documents(self) -> Iterator[dict]:
        """Every stored document (without its embedding), in publication order."""
        last = -(1 << 63)
        while rows := self._read("SELECT rid, body FROM docs WHERE rid > ? ORDER BY rid LIMIT 1000", (last,)):
            yield from (json.loads(body) for _, body in rows)
            last = rows[-1][0]

    def stored(self, ids: Sequence[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        unique = list(dict.fromkeys(str(i) for i in ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for doc_id, body in self._read(f"SELECT id, body FROM docs WHERE id IN ({marks})", chunk):
                out[doc_id] = json.loads(body)
        return out

    def originals(self, queries: Sequence[DedupQuery], window: timedelta) -> list[Original | None]:
        out: list[Original | None] = []
        for q in queries:
            skip = {q.id, *q.exclude}
            rows = self._read(
                "SELECT id, published_ms, duplicate_of FROM docs WHERE dedup_key = ? AND published_ms BETWEEN ? AND ?"
                " ORDER BY published_ms, id LIMIT ?",
                (q.dedup_key, _ms(q.published_at - window), _ms(q.published_at + window), len(skip) + 1),
            )
            first = next((r for r in rows if r[0] not in skip), None)
            out.append(Original(_EPOCH + first[1] * _MS, first[0], first[2]) if first else None)
        return out

    # --- related history -------------------------------------------------------------------------
    def related(self, queries: Sequence[HistoryQuery], k: int, lookback: timedelta, method: str) -> list[list[Related]]:
        if k <= 0 or not queries:
            return [[] for _ in queries]
        bounds = [(_rid_floor(_ms(q.published_at - lookback)), _rid_floor(_ms(q.published_at))) for q in queries]
        out: list[list[Related]] = [[] for _ in queries]
        span = bounds[0][1] - bounds[0][0]
        with self._lock:
            # in time order, as few windows as the batch's spread in time needs (each ≤ 2 look-backs)
            for i in sorted(range(len(queries)), key=lambda i: bounds[i]):
                lo, hi = bounds[i]
                if lo >= hi:
                    continue
                window = self._cover(lo, hi, span)
                out[i] = self._related_one(window, queries[i], lo, hi, k, method)
        return out

    def _cover(self, lo: int, hi: int, span: int) -> _Window:
        """The in-memory window, extended or rebuilt so that it holds every document in [lo, hi)."""
        w = self._window
        if w is None or lo < w.lo or lo > w.lo + span // 2 or hi > w.lo + 2 * span:
            w = self._window = _Window(lo, lo)
            self.window_loads += 1
        if hi > w.hi:
            self._load(w, w.hi, max(hi, min(w.lo + 2 * span, hi + span // 2)))
        return w

    def _load(self, w: _Window, lo: int, hi: int) -> None:
        columns = "rid, id, dedup_key, tickers, headline" + (", embedding" if self.vectors else ", NULL")
        for rid, doc_id, key, tickers, headline, blob in self._read(
            f"SELECT {columns} FROM docs WHERE rid >= ? AND rid < ?", (lo, hi)
        ):
            counts = Counter(tokens(headline))
            vector = np.frombuffer(blob, dtype=np.float32) if blob is not None else None
            w.add(rid, _Doc(doc_id, key, tuple(json.loads(tickers)), headline, sum(counts.values()), counts, vector))
        w.hi = hi

    def _related_one(self, w: _Window, q: HistoryQuery, lo: int, hi: int, k: int, method: str) -> list[Related]:
        scores = np.zeros(len(w.docs))
        matched = np.zeros(len(w.docs), dtype=bool)
        if method in ("bm25", "both"):
            self._bm25(w, q, lo, hi, scores, matched)
        if method in ("knn", "both") and q.vector is not None:
            self._knn(w, q, lo, hi, scores, matched)
        matched[w.by_key.get(q.dedup_key, [])] = False  # never the item's near-duplicates, nor itself
        if q.id in w.by_id:
            matched[w.by_id[q.id]] = False
        candidates = np.flatnonzero(matched)
        if not len(candidates):
            return []
        if method in ("bm25", "both") and q.tickers:
            boosted = np.zeros(len(w.docs), dtype=bool)
            for ticker in set(q.tickers) & w.tickers.keys():
                boosted[w.tickers[ticker].between(lo, hi).astype(np.int64)] = True
            scores += TICKER_BOOST * boosted
        best = scores[candidates]
        if len(candidates) > k:  # the k best, and whatever ties with the k-th
            chosen = best >= -np.partition(-best, k - 1)[k - 1]
            candidates, best = candidates[chosen], best[chosen]
        ranked = sorted(
            zip(candidates.tolist(), best.tolist()), key=lambda r: (-r[1], w.rids[r[0]] >> _SEQ_BITS, w.docs[r[0]].id)
        )
        return [
            Related(w.docs[p].id, s, w.docs[p].headline, format_time(_EPOCH + (w.rids[p] >> _SEQ_BITS) * _MS))
            for p, s in ranked[:k]
        ]

    def _df(self, terms: list[str]) -> dict[str, int]:
        """Document frequencies over the whole history (cached; the cache follows this store's writes)."""
        missing = [t for t in terms if t not in self._df_cache]
        if missing:
            if len(self._df_cache) > 200_000:
                self._df_cache.clear()
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found = dict(self._read(f"SELECT term, df FROM terms WHERE term IN ({marks})", chunk))
                self._df_cache.update((t, found.get(t, 0)) for t in chunk)
        return {t: self._df_cache[t] for t in terms}

    def _bm25(self, w: _Window, q: HistoryQuery, lo: int, hi: int, scores: np.ndarray, matched: np.ndarray) -> None:
        terms = [t for t in dict.fromkeys(tokens(q.text)) if t in w.postings][:MAX_QUERY_TERMS]
        if not terms or self._n == 0:
            return
        df = self._df(terms)
        parts, dfs, sizes = [], [], []
        for term in terms:
            values = w.postings[term].between(lo, hi)
            if len(values) and df[term] > 0:
                parts.append(values)
                dfs.append(df[term])
                sizes.append(len(values))
        if not parts:
            return
        n, avg = self._n, self._total_length / self._n
        d = np.repeat(np.asarray(dfs, dtype=np.float64), sizes)
        idf = np.log1p((n - d + 0.5) / (d + 0.5))
        pos, tf, length = np.concatenate(parts).T
        pos = pos.astype(np.int64)
        contribution = idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avg))
        scores += np.bincount(pos, weights=contribution, minlength=len(scores))
        matched[pos] = True

    def _knn(self, w: _Window, q: HistoryQuery, lo: int, hi: int, scores: np.ndarray, matched: np.ndarray) -> None:
        query = np.asarray(q.vector, dtype=np.float32)
        # another model's vectors (another dimension) are not comparable
        pos = [p for p in w.vectors.between(lo, hi).astype(np.int64).tolist() if w.docs[p].vector.shape == query.shape]
        if not pos:
            return
        matrix = np.stack([w.docs[p].vector for p in pos])
        scores[pos] += (1.0 + (matrix @ query).astype(np.float64)) / 2.0  # Elasticsearch's cosine score
        matched[pos] = True

    def close(self) -> None:
        with self._lock:
            self._db.close()
