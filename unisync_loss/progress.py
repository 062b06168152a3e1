"""Progress of long loops: a live bar in a terminal, a plain line every so often in a log.

    for clip in progress(clips, desc="scoring"):
        ...

In a terminal (the stream is a TTY) the bar is redrawn in place with a carriage return. When the
output goes to a file or a CI log, carriage-return updates would pile up into thousands of lines,
so a line is printed at most every ``every_seconds`` (and at the end) instead.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

Item = TypeVar("Item")

_BAR_WIDTH = 24
_TTY_REFRESH_SECONDS = 0.1


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class Progress:
    """Counts finished items of a loop and reports them on ``stream`` (default ``sys.stderr``).

    Args:
        total: number of items expected, or ``None`` when unknown (no bar, no ETA).
        desc: what is being counted, printed first.
        every_seconds: the interval between two lines when ``stream`` is not a terminal.
        stream: where to write; ``None`` means ``sys.stderr``.
        disable: report nothing (e.g. on the non-main processes of a distributed run).
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        every_seconds: float = 30.0,
        stream: IO[str] | None = None,
        disable: bool = False,
    ) -> None:
        self.total = total
        self.desc = desc
        self.every_seconds = every_seconds
        self.stream = sys.stderr if stream is None else stream
        self.disable = disable
        self.count = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_report = float("-inf")
        self._reported_count = -1
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())

    def set_postfix(self, text: str) -> None:
        """Extra text shown after the counts (e.g. the current loss)."""
        self.postfix = text

    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished items and report if it is time to."""
        self.count += n
        now = time.monotonic()
        interval = _TTY_REFRESH_SECONDS if self.interactive else self.every_seconds
        if now - self._last_report >= interval:
            self._report(now)

    def close(self) -> None:
        """Report the final count (and end the terminal line), unless a log line already showed it."""
        if self.interactive or self.count != self._reported_count:
            self._report(time.monotonic(), final=True)

    def line(self, now: float | None = None) -> str:
        """The text of one report: ``desc: count/total [bar] pct elapsed<eta, rate, postfix``."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            done = min(self.count / self.total, 1.0)
            filled = int(done * _BAR_WIDTH)
            eta = (self.total - self.count) / rate if rate > 0 else float("nan")
            eta_text = _clock(eta) if eta == eta else "?"
            parts.append(
                f"{self.count}/{self.total} [{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {100 * done:3.0f}% "
                f"{_clock(elapsed)}<{eta_text}, {rate:.2f}/s"
            )
        else:
            parts.append(f"{self.count} {_clock(elapsed)}, {rate:.2f}/s")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _report(self, now: float, final: bool = False) -> None:
        self._last_report = now
        self._reported_count = self.count
        if self.disable:
            return
        if self.interactive:
            self.stream.write("\r" + self.line(now) + ("\n" if final else ""))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress(
    items: Iterable[Item],
    total: int | None = None,
    desc: str = "",
    every_seconds: float = 30.0,
    stream: IO[str] | None = None,
    disable: bool = False,
) -> Iterator[Item]:
    """Iterate over ``items`` while reporting progress (see :class:`Progress`); ``total`` defaults to ``len(items)``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, every_seconds, stream, disable) as bar:
        for item in items:
            yield item
            bar.update()
