"""Progress lines with an ETA for long stages, printed to stderr.

    bar = Progress("fit", total=120)
    for chunk in chunks:
        ...
        bar.update(len(chunk))
    bar.close()

Prints at most every `interval_s` seconds (and once at the end) so logs stay readable when
stderr is a file; the ETA is the remaining count times the mean time per item so far.
"""

from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7300 -> '2h01m'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """A counter that reports `label: done/total (pct) elapsed, ETA` on stderr.

    total may be None when unknown (a stream); then no percentage or ETA is shown.
    """

    def __init__(self, label: str, total: int | None = None, *, interval_s: float = 2.0,
                 stream=None, enabled: bool = True):
        self.label, self.total, self.interval_s = label, total, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = -float("inf")

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def eta_s(self) -> float | None:
        """Seconds left at the mean rate so far; None before the first item or with no total."""
        if not self.total or self.done <= 0:
            return None
        return self.elapsed_s / self.done * max(0, self.total - self.done)

    def line(self) -> str:
        elapsed = format_seconds(self.elapsed_s)
        if not self.total:
            return f"{self.label}: {self.done} done, {elapsed}"
        pct = 100.0 * self.done / self.total
        eta = self.eta_s()
        eta_text = "ETA ?" if eta is None else f"ETA {format_seconds(eta)}"
        return f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) {elapsed}, {eta_text}"

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and now - self._last_print >= self.interval_s:
            self._last_print = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(self.line().split(", ETA")[0] + " (done)", file=self.stream, flush=True)
