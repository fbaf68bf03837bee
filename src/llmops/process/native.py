"""Native libraries that PyTorch's and vLLM's CPU guides preload (`LD_PRELOAD`).

TCMalloc comes from Debian's libtcmalloc-minimal4 (`make setup` installs it where it can);
where the loader does not find it, nothing is preloaded and the CPU runs are slower.
"""

from __future__ import annotations

import ctypes.util


def tcmalloc() -> str | None:
    """The loader's name for TCMalloc (e.g. `libtcmalloc_minimal.so.4`), or None."""
    return ctypes.util.find_library("tcmalloc_minimal")


def preloaded(libs: list[str | None], current: str | None) -> str:
    """An LD_PRELOAD value: `libs` (those given and not already there) before `current`."""
    have = (current or "").split(":")
    wanted = [lib for lib in libs if lib and lib not in have]
    return ":".join(filter(None, [*wanted, current]))
