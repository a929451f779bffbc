"""How far a long job is: a bar on a terminal, a periodic log line otherwise (daemons, CI, files).

>>> p = Progress("demo", total=96_826, unit="items")
>>> p.update(256, lag=1_200)   # after each batch
>>> p.close()

On a terminal (stderr is a TTY) it draws a tqdm bar with the rate and the time left; anywhere else
it writes one INFO line to the `bearwatch.progress` logger every `every_s` seconds and one at the
end: what, how many done (of how many), the rate over the last interval and overall, the time left
when the total is known, and any extra figures (`lag=...`), as `key=value` pairs a log pipeline can
parse.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("bearwatch.progress")


class Progress:
    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        every_s: float = 30.0,
        bar: bool | None = None,
        stream: IO[str] | None = None,
        clock=time.monotonic,
    ) -> None:
        self.what, self.total, self.unit, self.every_s, self.clock = what, total, unit, every_s, clock
        self.done = 0
        self.fields: dict[str, Any] = {}
        self.started = self._mark_time = clock()
        self._mark_done = 0
        stream = stream or sys.stderr
        self._bar = None
        if bar if bar is not None else _is_tty(stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=f" {unit}", desc=what, file=stream, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.fields.update((k, v) for k, v in fields.items() if v is not None)
        if self._bar is not None:
            self._bar.update(n)
            if self.fields:
                self._bar.set_postfix(self.fields, refresh=False)
            return
        if self.every_s > 0 and self.clock() - self._mark_time >= self.every_s:
            self._log()

    def close(self, outcome: str = "finished") -> None:
        """The last line, ending with `outcome` ("finished"; a job stopped part-way says "stopped")."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.done:
            self._log(final=True, outcome=outcome)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def line(self, final: bool = False, outcome: str = "finished") -> str:
        now = self.clock()
        elapsed = max(now - self.started, 1e-9)
        recent = (self.done - self._mark_done) / max(now - self._mark_time, 1e-9)
        parts = [f"{self.what}:", f"done={self.done}"]
        if self.total is not None:
            parts.append(f"total={self.total}")
        parts.append(f"rate={self.done / elapsed if final else recent:.1f}/s")
        if not final and self.total is not None and recent > 0:
            parts.append(f"eta={_duration(max(0, self.total - self.done) / recent)}")
        parts.append(f"elapsed={_duration(elapsed)}")
        parts += [f"{k}={v}" for k, v in self.fields.items()]
        if final:
            parts.append(outcome)
        return " ".join(parts)

    def _log(self, final: bool = False, outcome: str = "finished") -> None:
        log.info("%s", self.line(final, outcome))
        self._mark_time, self._mark_done = self.clock(), self.done


def log_lines(level: int = logging.INFO) -> None:
    """Log lines on stderr as every bearwatch command writes them (progress lines among them)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def tracked(
    items: Iterable[T], what: str, total: int | None = None, unit: str = "items", **options: Any
) -> Iterator[T]:
    """`items`, passed through one by one while a :class:`Progress` counts them (a bench's fill, a
    drill's producer)."""
    with Progress(what, total=total, unit=unit, **options) as progress:
        for item in items:
            yield item
            progress.update()


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def count_lines(path: str, chunk: int = 1 << 20) -> int | None:
    """Lines in a file (a last line without its newline counts), read in binary chunks: about a
    second for a million lines; the total a progress bar needs. None when it cannot be read (the
    reader says why)."""
    n, last = 0, b"\n"
    try:
        fh = open(path, "rb")
    except OSError:
        return None
    with fh:
        while block := fh.read(chunk):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")
