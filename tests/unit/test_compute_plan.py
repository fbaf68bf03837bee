"""The compute plan: decided from faked capabilities and timings for every CPU class (and
GPUs), measured once per machine, applied to serving and training with explicit settings
winning and emulated ones named."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MACHINES, PlanFor

from llmops.compute import machine, serve_settings
from llmops.compute.machine import Capabilities, Speeds, cpu_flags, isa_class
from llmops.config import DeployConfig
from llmops.process import activity

# CPU class -> (train dtype, served dtype, artefact) the plan must choose.
EXPECTED = {
    "AMX": ("bf16", "bfloat16", "w8a8-int8"),
    "AVX512-BF16": ("bf16", "bfloat16", "w8a8-int8"),
    "AVX512-VNNI": ("fp32", "float32", "none"),  # int8 native, but bf16 around it is not
    "AVX-VNNI": ("fp32", "float32", "none"),
    "AVX2": ("fp32", "float32", "none"),  # bf16 and int8 emulated: 1% of fp32's speed
}


@pytest.mark.parametrize("isa", sorted(MACHINES))
def test_each_cpu_class_gets_its_fastest_native_dtypes(plan_for: PlanFor, isa: str) -> None:
    plan = plan_for(isa)
    assert (plan.train_dtype, plan.serve_dtype, plan.quantization) == EXPECTED[isa]
    assert plan.threads == 2 and plan.kvcache_gib == 1
    assert plan.isa in plan.line() and plan.train_dtype in plan.line()


def test_gpus_train_in_bf16_where_they_can_else_fp16(plan_for: PlanFor) -> None:
    assert plan_for("AVX2", gpus=("NVIDIA H100",)).train_dtype == "bf16"
    assert plan_for("AVX2", gpus=("Tesla V100",), gpu_bf16=False).train_dtype == "fp16"
    # Serving on this machine's CPU still follows the CPU.
    assert plan_for("AVX2", gpus=("NVIDIA H100",)).serve_dtype == "float32"


def test_timing_noise_does_not_flip_a_native_choice(plan_for: PlanFor) -> None:
    """A busy machine may time int8 below fp32; native is still far from emulated."""
    noisy = plan_for("AMX", gflops={"fp32": 111.0, "bf16": 1479.0, "int8": 82.0})
    assert noisy.quantization == "w8a8-int8"
    # bf16 native but no faster than fp32 (measured): fp32 is the plan.
    slow = plan_for("AVX512-BF16", gflops={"fp32": 300.0, "bf16": 310.0, "int8": 600.0})
    assert (slow.serve_dtype, slow.quantization) == ("float32", "none")


def test_flags_name_the_isa_class() -> None:
    text = "processor: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n" \
           "processor: 1\nmodel name\t: other\nflags\t\t: avx512f\n"
    model, flags = cpu_flags(text)
    assert model == "AMD EPYC 7B12" and "avx2" in flags and "avx512f" not in flags
    assert isa_class(flags) == "AVX2"
    for isa, (flags_of, _) in MACHINES.items():
        assert isa_class(set(flags_of)) == isa


def caps(isa: str = "AVX2") -> Capabilities:
    return Capabilities("test CPU", isa, MACHINES[isa][0], 2, 24.0)


def test_speeds_are_measured_once_per_machine_and_a_bad_cache_is_measured_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def measure(c: Capabilities) -> Speeds:
        calls.append(c.isa)
        return Speeds({"fp32": 168.0, "bf16": 1.0, "int8": 1.9}, {"fp32": 1024})

    monkeypatch.setattr(machine, "measure", measure)
    first = machine.machine_speeds(caps(), tmp_path)
    assert machine.machine_speeds(caps(), tmp_path) == first and calls == ["AVX2"]
    assert machine.machine_speeds(caps("AMX"), tmp_path) == first  # another CPU: measured
    assert calls == ["AVX2", "AMX"]
    cached = machine.cache_file(caps(), tmp_path)
    cached.write_text("{not json")
    assert machine.machine_speeds(caps(), tmp_path).gflops["fp32"] == 168.0
    assert calls == ["AVX2", "AMX", "AVX2"]
    assert json.loads(cached.read_text())["gflops"]["bf16"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))


def test_an_emulated_dtype_is_timed_small_and_a_native_one_full_size() -> None:
    measured = machine.measure(caps("AVX2"), native_n=64, emulated_n=16, budget_s=0.0)
    assert measured.size["fp32"] == 64
    assert measured.size.get("bf16") == 16 and measured.size.get("int8", 16) == 16
    assert all(v > 0 for v in measured.gflops.values())


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    @contextlib.contextmanager
    def activity(self, text: str) -> Iterator[None]:
        yield

    def tell(self, text: str) -> None:
        self.lines.append(text)

    warn = note = tell

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Any]:
        yield lambda update: None

    def streaming(self) -> bool:
        return False


@pytest.fixture()
def recorded() -> Iterator[Recorder]:
    recorder = Recorder()
    previous = activity.install(recorder)  # type: ignore[arg-type]
    try:
        yield recorder
    finally:
        activity.install(previous)


def test_serving_follows_the_plan_and_an_emulated_explicit_dtype_is_named(
        plan_for: PlanFor, recorded: Recorder) -> None:
    config = DeployConfig.model_validate({"target": "local", "models": {
        "pinned": {"dtype": "bfloat16"}, "int8": {"quantization": "w8a8-int8"}}})
    avx2, amx = plan_for("AVX2"), plan_for("AMX")
    plain = serve_settings(config, "bot", avx2)
    assert (plain.dtype, plain.quantization, plain.kvcache_space_gib) == ("float32", "none", 1)
    assert recorded.lines == []
    assert serve_settings(config, "bot", amx).quantization == "w8a8-int8"
    assert serve_settings(config, "pinned", avx2).dtype == "bfloat16"  # the file wins
    assert any("emulates bf16" in line and "168x slower" in line for line in recorded.lines)
    assert serve_settings(config, "int8", avx2).quantization == "w8a8-int8"
    assert any("int8 (w8a8)" in line for line in recorded.lines)


def test_the_plan_is_recorded_as_params_and_in_the_summary(plan_for: PlanFor) -> None:
    plan = plan_for("AVX2")
    params = plan.params()
    assert params["plan.train_dtype"] == "fp32" and params["plan.isa"] == "AVX2"
    assert params["plan.gflops.bf16"] == "1" and params["plan.gpus"] == "none"
    summary = plan.summary()
    assert summary["line"] == plan.line() and summary["gflops"]["fp32"] == 168.0
    json.dumps(summary)  # release_summary.json takes it as it is


@pytest.mark.skipif(machine.cuda_devices()[0] != (), reason="an NVIDIA driver: torch names "
                    "the GPUs")
def test_a_cached_plan_does_not_import_torch(tmp_path: Path) -> None:
    """Commands that only read the plan (deploy, verify, rollback) stay light: with this
    machine's speeds cached, no torch import (seconds) is needed to decide."""
    import subprocess
    import sys

    code = ("import sys; from llmops.compute import machine_plan; machine_plan(); "
            "print('torch' in sys.modules)")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "True"  # measured: torch times the matmuls
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.stdout.strip() == "False", again.stderr
