"""A one-line progress display with ETA, rewritten in place on a terminal (every 5% otherwise)."""
from __future__ import annotations

import sys
import time


class Progress:
    """Progress(total, label).update(done, text): `label done/total [####      ] text ETA 12s`."""

    def __init__(self, total: int, label: str = "step", enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0, self.first = time.perf_counter(), None

    def update(self, done: int, text: str = "") -> None:
        """`done` units finished so far (of total); the ETA counts from the first update's pace."""
        if not self.enabled:
            return
        if self.first is None:           # a resumed run starts at its step: time only what runs here
            self.first = done - 1
        eta = (time.perf_counter() - self.t0) / max(done - self.first, 1) * (self.total - done)
        bar = "#" * (20 * done // self.total)
        line = " ".join(x for x in (f"{self.label} {done}/{self.total} [{bar:20s}]", text, f"ETA {eta:5.0f}s") if x)
        if self.tty:
            print("\r" + line, end="", file=self.stream, flush=True)
        elif done % max(1, self.total // 20) == 0 or done == self.total:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream)
