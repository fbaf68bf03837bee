"""Compute cost, one convention everywhere: device-hours, and the serving cost per million
generated tokens.

- A *device* is one GPU, or one CPU machine (all the cores a stage may use count as one
  device: a CPU is priced by the machine, not by the core). Its kind and count are
  recorded with every figure.
- device-hours = wall-clock seconds / 3600 × devices.
- cost per million generated tokens = price_per_device_hour × devices
  / (tokens_per_s × 3600) × 1e6, from the load test of a verified deploy (the tokens every
  client generated together, per second of the test) and the target's price
  (`cost.price_per_device_hour` in deploy/<env>.yml).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.config import DeployConfig


@dataclass(frozen=True)
class Compute:
    """What one stage (train, eval) used: the devices and how long."""

    device: str  # "gpu" or "cpu" (one CPU device: the whole machine)
    devices: int
    seconds: float
    cpu_cores: int = 0  # the machine's cores, for information

    @property
    def device_hours(self) -> float:
        return device_hours(self.seconds, self.devices)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "device_hours": round(self.device_hours, 6)}

    def tags(self, stage: str) -> dict[str, str]:
        """As MLflow run and registry version tags: `cost.<stage>.<field>`."""
        return {f"cost.{stage}.{k}": str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Compute:
        return cls(str(raw.get("device", "cpu")), int(raw.get("devices", 1)),
                   float(raw.get("seconds", 0.0)), int(raw.get("cpu_cores", 0)))


def device_hours(seconds: float, devices: int) -> float:
    """Wall-clock time × devices, in hours."""
    return seconds / 3600.0 * devices


def compute(gpus: int, seconds: float, gpu_devices: int | None = None,
            machines: int = 1) -> Compute:
    """The convention applied: with CUDA GPUs, `gpu_devices` GPUs (default: `gpus`); without,
    `machines` CPU devices (one per machine, whatever the processes on it)."""
    cores = os.cpu_count() or 1
    if gpus > 0:
        return Compute("gpu", gpu_devices or gpus, seconds, cores)
    return Compute("cpu", max(1, machines), seconds, cores)


def cost_per_million_tokens(price_per_device_hour: float, devices: int,
                            tokens_per_s: float) -> float | None:
    """What a million generated tokens cost at that throughput (None without throughput)."""
    if tokens_per_s <= 0:
        return None
    return price_per_device_hour * devices / (tokens_per_s * 3600.0) * 1e6


def serving_cost(config: DeployConfig, load: dict[str, Any] | None) -> dict[str, Any]:
    """The serving figures of a verified deploy, for its history event: device kind and
    count, tokens/s of the load test and, when the target has a price, the cost per million
    generated tokens ({} when no load test ran)."""
    if not load:
        return {}
    device, devices = config.serving_devices()
    rate = float(load.get("tokens_per_s") or 0.0)
    price = config.cost.price_per_device_hour
    per_million = None if price is None else cost_per_million_tokens(price, devices, rate)
    return {"device": device, "devices": devices, "tokens_per_s": rate,
            "price_per_device_hour": price, "currency": config.cost.currency,
            "cost_per_million_tokens": None if per_million is None else round(per_million, 6)}


def history_fields(config: DeployConfig, load: dict[str, Any] | None) -> dict[str, Any]:
    """What a target adds to a verified deploy's history event: the load test's summary
    and the serving cost (`serving_cost`)."""
    if not load:
        return {}
    return {"load": load, "serving_cost": serving_cost(config, load)}
