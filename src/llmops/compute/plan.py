"""One compute plan for this machine: the training dtype, the served dtype and artefact, and
vLLM's CPU settings, decided from the hardware and its measured matmul speeds.

`auto` is the default everywhere (an Axolotl YAML without `bf16:`, `deploy/<env>.yml`
without `dtype:` or `quantization:`); what a file sets explicitly wins, and a setting this
machine would emulate in software is named in a warning with its measured cost. Evaluation
and deployment take their settings from the same plan, so the gate judges what is served.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from llmops.compute.machine import Capabilities, Speeds, detect, machine_speeds
from llmops.config import ServingChoice
from llmops.config.paths import machine_cache

# A narrower dtype must multiply this much faster than fp32 to be chosen: casts, and the
# parts of a model that stay in fp32, eat into a smaller margin.
MIN_SPEEDUP = 1.2
# Below this share of fp32's speed a dtype is emulated in software (about 1% of fp32 on an
# AVX2 CPU, where native kernels run at several times fp32): far from any timing noise.
EMULATED_BELOW = 0.25


@dataclass(frozen=True)
class ComputePlan:
    """How this machine trains, serves and evaluates."""

    isa: str
    cpu_model: str
    cores: int
    gpus: tuple[str, ...]
    train_dtype: str  # fp32, bf16 or fp16: what the trainer is told, always explicitly
    serve_dtype: str  # float32 or bfloat16: vLLM's --dtype on this CPU
    quantization: str  # none or w8a8-int8: the served artefact (merged weights or int8)
    threads: int  # OpenMP threads of a vLLM CPU server
    kvcache_gib: int  # VLLM_CPU_KVCACHE_SPACE, unless deploy/<env>.yml sets it
    bf16_native: bool  # the CPU multiplies bf16 in hardware (AMX, AVX512-BF16)
    speeds: Speeds
    reasons: tuple[str, ...]

    @property
    def serving(self) -> ServingChoice:
        return ServingChoice(self.serve_dtype, self.quantization, self.kvcache_gib)

    def line(self) -> str:
        """The plan in one line, for the start of a release and `llmops doctor`."""
        device = f"{len(self.gpus)} GPU ({self.gpus[0]})" if self.gpus else \
            f"CPU {self.isa}, {self.cores} cores"
        served = "int8 (w8a8)" if self.quantization == "w8a8-int8" else "merged"
        measured = ", ".join(f"{d} {v:g}" for d, v in self.speeds.gflops.items())
        return (f"compute plan: {device}: train {self.train_dtype}, serve {self.serve_dtype} "
                f"{served}, vLLM {self.threads} threads, KV cache {self.kvcache_gib} GiB"
                + (f" (matmul GFLOP/s: {measured})" if measured else ""))

    def params(self) -> dict[str, str]:
        """The plan as MLflow params (`plan.<key>`)."""
        out = {f"plan.{k}": str(v) for k, v in asdict(self).items()
               if k not in ("speeds", "reasons", "gpus")}
        out["plan.gpus"] = ", ".join(self.gpus) or "none"
        out.update({f"plan.gflops.{d}": f"{v:g}" for d, v in self.speeds.gflops.items()})
        return out

    def summary(self) -> dict[str, object]:
        """The plan for release_summary.json."""
        return {**{k: v for k, v in asdict(self).items() if k != "speeds"},
                "gflops": dict(self.speeds.gflops), "line": self.line()}

    def emulated_cost(self, dtype: str) -> str | None:
        """A warning's words when this CPU emulates `dtype` (fp32, bf16, fp16), else None."""
        key = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
        if key == "fp32" or (key == "bf16" and self.bf16_native):
            return None
        if key == "fp16":
            return f"this CPU ({self.isa}) has no fp16 matmul in hardware"
        slower = self.speeds.ratio("fp32", key)
        return (f"this CPU ({self.isa}) emulates bf16 in software: bf16 matmul measured "
                f"{self.speeds.gflops.get('bf16', 0):g} GFLOP/s against fp32 "
                f"{self.speeds.gflops.get('fp32', 0):g}" +
                (f" ({slower:.0f}x slower)" if slower else ""))


def decide(caps: Capabilities, speeds: Speeds) -> ComputePlan:
    """The plan for a machine with `caps` whose matmuls measured `speeds` (pure)."""
    bf16 = caps.bf16_native and speeds.ratio("bf16") >= MIN_SPEEDUP
    reasons = [f"bf16 {'chosen' if bf16 else 'not chosen'}: "
               f"{speeds.ratio('bf16'):.2f}x fp32's speed"
               + ("" if caps.bf16_native else ", emulated")]
    # The int8 rewrite keeps bf16 around its int8 layers, so it pays only where both are
    # native. vLLM runs it with oneDNN's int8 kernels, not torch's: the measured int8 matmul
    # only has to show that int8 is not emulated here.
    int8_runs = caps.int8_native and speeds.ratio("int8") >= EMULATED_BELOW
    int8 = bf16 and int8_runs
    reasons.append(f"int8 {'chosen' if int8 else 'not chosen'}: "
                   + ("native" if int8_runs else "emulated")
                   + f" ({speeds.ratio('int8'):.2f}x fp32's matmul speed)"
                   + ("" if bf16 or not int8_runs else "; it needs bf16 around it"))
    cpu_train = "bf16" if bf16 else "fp32"
    train = ("bf16" if caps.gpu_bf16 else "fp16") if caps.gpus else cpu_train
    return ComputePlan(
        isa=caps.isa, cpu_model=caps.cpu_model, cores=caps.cores, gpus=caps.gpus,
        train_dtype=train, serve_dtype="bfloat16" if bf16 else "float32",
        quantization="w8a8-int8" if int8 else "none", threads=caps.cores,
        kvcache_gib=max(1, min(4, int(caps.memory_gib // 16))),
        bf16_native=caps.bf16_native, speeds=speeds,
        reasons=tuple(reasons))


@functools.cache
def machine_plan() -> ComputePlan:
    """This machine's plan, once per process (the speeds are measured once per machine)."""
    caps = detect()
    return decide(caps, machine_speeds(caps, machine_cache() / "compute"))
