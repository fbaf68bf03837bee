"""What this machine computes with: its CPU's instruction sets (or its GPUs), and how fast it
multiplies each candidate dtype, measured once per machine and cached.

The measurement times only what the hardware multiplies natively at full size; a dtype the
CPU emulates in software is timed on one small matrix, enough to name its cost in a warning
without spending minutes on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DTYPES = ("fp32", "bf16", "int8")
# How the CPU feature flags (/proc/cpuinfo) name what makes a dtype native.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
CACHE_VERSION = 2  # 2: speeds kept to three significant digits (no emulated 0)


@dataclass(frozen=True)
class Capabilities:
    """The compute of one machine, as the operating system and torch report it."""

    cpu_model: str
    isa: str  # AMX, AVX512-BF16, AVX512-VNNI, AVX-VNNI, AVX512, AVX2, or other
    flags: tuple[str, ...]  # the dtype-relevant CPU flags present
    cores: int  # CPUs this process may run on
    memory_gib: float
    gpus: tuple[str, ...] = ()  # CUDA device names
    gpu_bf16: bool = False

    @property
    def bf16_native(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8_native(self) -> bool:
        return any(f in self.flags for f in INT8_FLAGS)

    def native(self, dtype: str) -> bool:
        """Whether the CPU multiplies `dtype` in hardware (fp32 always)."""
        return {"fp32": True, "bf16": self.bf16_native, "int8": self.int8_native}[dtype]


@dataclass(frozen=True)
class Speeds:
    """Measured matmul throughput per dtype (GFLOP/s; GOP/s for int8) on the CPU."""

    gflops: dict[str, float] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)  # the matrix side each was timed at

    def ratio(self, dtype: str, to: str = "fp32") -> float:
        """How many times faster `dtype` multiplies than `to` (0 when either is unknown)."""
        a, b = self.gflops.get(dtype, 0.0), self.gflops.get(to, 0.0)
        return a / b if a and b else 0.0


def isa_class(flags: set[str]) -> str:
    """The CPU's class for dtype choices, the richest first."""
    for name, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"),
                       ("AVX512-VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"),
                       ("AVX512", "avx512f"), ("AVX2", "avx2")):
        if flag in flags:
            return name
    return "other"


def cpu_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo's text."""
    model, flags = "", set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.machine() or "unknown", flags


def detect() -> Capabilities:
    """This machine's capabilities. torch is imported only where an NVIDIA driver is (to
    name its GPUs): a command that only reads the plan stays light."""
    import psutil

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    model, flags = cpu_flags(cpuinfo)
    relevant = {"avx2", "avx512f", *BF16_FLAGS, *INT8_FLAGS, "amx_tile"}
    gpus, gpu_bf16 = cuda_devices()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return Capabilities(
        cpu_model=model, isa=isa_class(flags), flags=tuple(sorted(flags & relevant)),
        cores=cores, memory_gib=round(psutil.virtual_memory().total / 2**30, 1), gpus=gpus,
        gpu_bf16=gpu_bf16)


def cuda_devices() -> tuple[tuple[str, ...], bool]:
    """(CUDA device names, whether they compute bf16); none without an NVIDIA driver."""
    if not Path("/proc/driver/nvidia/gpus").is_dir() and shutil.which("nvidia-smi") is None:
        return (), False
    import torch

    if not torch.cuda.is_available():
        return (), False
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return names, bool(torch.cuda.is_bf16_supported())


def time_matmul(dtype: str, n: int, budget_s: float) -> float:
    """GFLOP/s (GOP/s for int8) of an n×n matmul in `dtype`, best of the runs that fit
    `budget_s` after one warm-up (at least one timed run)."""
    import torch

    if dtype == "int8":
        a = torch.randint(-64, 64, (n, n), dtype=torch.int8)
        b = torch.randint(-64, 64, (n, n), dtype=torch.int8)

        def mul() -> object:
            return torch._int_mm(a, b)
    else:
        kind = torch.float32 if dtype == "fp32" else torch.bfloat16
        a, b = torch.randn(n, n, dtype=kind), torch.randn(n, n, dtype=kind)

        def mul() -> object:
            return a @ b
    mul()
    best, spent = float("inf"), 0.0
    while spent < budget_s or best == float("inf"):
        started = time.perf_counter()
        mul()
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
    return 2 * n**3 / best / 1e9


def measure(caps: Capabilities, native_n: int = 1024, emulated_n: int = 128,
            budget_s: float = 0.3) -> Speeds:
    """Each dtype's matmul speed: native ones at full size, emulated ones on a small matrix
    (seconds in all)."""
    gflops, size = {}, {}
    for dtype in DTYPES:
        n = native_n if caps.native(dtype) else emulated_n
        try:
            # Three significant digits: an emulated int8 matmul on a small matrix runs at
            # thousandths of a GOP/s, which two decimals would record as 0 (no speed).
            gflops[dtype] = float(f"{time_matmul(dtype, n, budget_s):.3g}")
        except RuntimeError:  # no kernel for it on this build: leave it unmeasured
            continue
        size[dtype] = n
    return Speeds(gflops, size)


def cache_file(caps: Capabilities, cache_dir: Path) -> Path:
    """Where this machine's speeds are kept: one file per CPU model, flags, cores and torch."""
    from importlib.metadata import version

    key = json.dumps([CACHE_VERSION, caps.cpu_model, caps.flags, caps.cores,
                      version("torch")])
    return cache_dir / f"speeds-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def machine_speeds(caps: Capabilities, cache_dir: Path) -> Speeds:
    """The cached speeds of this machine, measured now if none are cached (or unreadable)."""
    path = cache_file(caps, cache_dir)
    try:
        data = json.loads(path.read_text())
        return Speeds(dict(data["gflops"]), dict(data["size"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speeds = measure(caps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**asdict(speeds), "cpu": caps.cpu_model}, indent=1))
    tmp.replace(path)
    return speeds
