"""What this CPU can compute: the FLOP/s of a warm matmul, measured beside a benchmark (the
machine's speed varies through the day, so a peak is only comparable within one script)."""

from __future__ import annotations

import time
from typing import Any


def matmul_peak(dtype: Any, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of square matmuls in `dtype` on all threads (warm, best of short repeats)."""
    import torch

    if dtype == torch.int8:  # int8 × int8 → int32, as int8 serving multiplies
        a, b = (torch.randint(-127, 128, (n, n), dtype=torch.int8) for _ in range(2))

        def product() -> Any:
            return torch._int_mm(a, b)
    else:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

        def product() -> Any:
            return a @ b
    for _ in range(3):
        product()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(4):
            product()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - started))
    return best
