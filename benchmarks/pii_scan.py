"""The data gate's e-mail scan on hostile fields: the pattern before the linear-time fix
(the baseline, kept here verbatim) against `llmops.data.scan` now, side by side.

A long run of address characters before an `@` makes every start position of the old
pattern's unbounded `[...]+@` scan to the end of the run: quadratic in the field's length.
Prints one line per size with both times and their ratio.

    .venv/bin/python benchmarks/pii_scan.py [sizes...]
"""

from __future__ import annotations

import re
import sys
import time

from llmops.data.scan import PATTERNS, pii_kinds

BASELINE_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"


def hostile(size: int) -> str:
    """One run of address characters, then an `@` that no domain follows."""
    return "a." * (size // 2) + "@!"


def timed(fn: object, text: str) -> float:
    started = time.perf_counter()
    fn(text)  # type: ignore[operator]
    return time.perf_counter() - started


def main(sizes: list[int]) -> None:
    old = re.compile(BASELINE_EMAIL)
    new = re.compile(PATTERNS["email"])
    print(f"{'chars':>8} {'baseline s':>11} {'now s':>9} {'ratio':>7}  (whole pii_kinds now)")
    for size in sizes:
        text = hostile(size)
        base = timed(lambda t: list(old.finditer(t)), text)
        now = timed(lambda t: list(new.finditer(t)), text)
        whole = timed(pii_kinds, text)
        print(f"{len(text):>8} {base:>11.3f} {now:>9.4f} {base / now:>7.0f}x  ({whole:.4f} s)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5_000, 10_000, 20_000, 40_000])
