"""The compute cost convention: device-hours and the serving cost per million generated
tokens, checked against figures computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.config.schema import DeployConfig
from llmops.serve.cost import (
    Compute,
    compute,
    cost_per_million_tokens,
    device_hours,
    history_fields,
    serving_cost,
)

GPU = {"gpu_type": "nvidia-a100-80gb", "gpu_memory_gib": 80, "gpus_per_node": 4, "nodes": 2}


def test_device_hours_is_wall_time_times_devices() -> None:
    assert device_hours(3600, 1) == 1.0
    assert device_hours(1800, 8) == 4.0  # half an hour on 8 GPUs
    assert device_hours(90, 1) == pytest.approx(0.025)
    used = Compute("gpu", 2, 5400.0)
    assert used.device_hours == 3.0
    assert used.tags("train")["cost.train.device_hours"] == "3.0"


def test_cost_per_million_tokens_by_hand() -> None:
    # 2 devices at 4.00/h cost 8.00/h; 1000 tokens/s is 3.6 M tokens/h: 8 / 3.6 = 2.2222...
    assert cost_per_million_tokens(4.0, 2, 1000.0) == pytest.approx(2.222222, rel=1e-6)
    # one CPU machine at 0.10/h serving 50 tokens/s (180,000 tokens/h): 0.10 / 0.18 = 0.5556
    assert cost_per_million_tokens(0.10, 1, 50.0) == pytest.approx(0.555556, rel=1e-5)
    assert cost_per_million_tokens(1.0, 1, 0.0) is None


def test_a_cpu_device_is_the_machine_a_gpu_device_is_one_gpu() -> None:
    cpu = compute(0, 7200.0, machines=1)
    assert (cpu.device, cpu.devices, cpu.device_hours) == ("cpu", 1, 2.0)
    assert cpu.cpu_cores >= 1
    two_nodes = compute(0, 3600.0, machines=2)
    assert (two_nodes.devices, two_nodes.device_hours) == (2, 2.0)
    gpus = compute(4, 900.0, gpu_devices=8)  # 4 GPUs per node, 2 nodes
    assert (gpus.device, gpus.devices, gpus.device_hours) == ("gpu", 8, 2.0)
    assert Compute.from_dict(gpus.as_dict()) == gpus


def test_serving_devices_follow_the_target() -> None:
    local = DeployConfig.model_validate({"target": "local"})
    assert local.serving_devices() == ("cpu", 1)
    k8s = DeployConfig.model_validate({"target": "kubernetes", "gpu": GPU,
                                       "kubernetes": {"replicas": 3}})
    assert k8s.serving_devices() == ("gpu", 24)  # 4 per node × 2 nodes × 3 replicas
    told = DeployConfig.model_validate({"target": "local", "cost": {"device": "gpu",
                                                                    "devices": 2}})
    assert told.serving_devices() == ("gpu", 2)
    with pytest.raises(ValueError):
        DeployConfig.model_validate({"target": "local", "cost": {"price_per_device_hour": 0}})


def test_the_history_fields_of_a_verified_deploy() -> None:
    config = DeployConfig.model_validate({
        "target": "kubernetes", "gpu": GPU,
        "cost": {"price_per_device_hour": 2.5, "currency": "EUR"}})
    load = {"requests": 64, "tokens_per_s": 2000.0}
    cost = serving_cost(config, load)
    # 8 GPUs × 2.50 = 20.00/h; 2000 tokens/s = 7.2 M tokens/h: 20 / 7.2 = 2.777778
    assert cost == {"device": "gpu", "devices": 8, "tokens_per_s": 2000.0,
                    "price_per_device_hour": 2.5, "currency": "EUR",
                    "cost_per_million_tokens": pytest.approx(2.777778)}
    assert history_fields(config, load)["load"] == load
    unpriced = serving_cost(DeployConfig.model_validate({"target": "local"}), load)
    assert unpriced["cost_per_million_tokens"] is None and unpriced["tokens_per_s"] == 2000.0
    assert history_fields(config, None) == {}


def test_training_counts_every_gpu_of_the_launch_and_one_cpu_machine_per_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmops.train.run as train_run
    from llmops.stages.training import training_compute

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("NNODES", raising=False)
    monkeypatch.setattr(train_run, "_cuda_count", lambda: 0)
    cpu = training_compute(1800.0)
    assert (cpu.device, cpu.devices, cpu.device_hours) == ("cpu", 1, 0.5)
    monkeypatch.setattr(train_run, "_cuda_count", lambda: 4)
    for var, value in {"NNODES": "2", "NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"}.items():
        monkeypatch.setenv(var, value)
    gpus = training_compute(1800.0)
    assert (gpus.device, gpus.devices, gpus.device_hours) == ("gpu", 8, 4.0)
