"""The Unsloth translation of an Axolotl YAML, and the Axolotl launch command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PlanFor

from llmops.errors import UsageError
from llmops.process.native import preloaded
from llmops.train.run import (
    CPU_PLUGIN,
    axolotl_command,
    choose_backend,
    cpu_training_env,
    for_this_machine,
    latest_checkpoint,
)
from llmops.train.unsloth import LINEAR_TARGETS, unsloth_plan

REPO = Path(__file__).resolve().parents[2]


def resolved(name: str = "support-bot", **changes: Any) -> dict[str, Any]:
    cfg = dict(yaml.safe_load((REPO / "axolotl_configs" / f"{name}.yml").read_text()))
    cfg.update(output_dir="/out/run", mlflow_run_name="support-bot-1", **changes)
    return cfg


def test_unsloth_plan_carries_every_training_setting() -> None:
    cfg = resolved()
    plan = unsloth_plan(cfg)
    assert plan["model"] == {"model_name": cfg["base_model"], "max_seq_length": 256,
                             "load_in_4bit": False, "dtype": None}
    peft = plan["peft"]
    assert (peft["r"], peft["lora_alpha"], peft["lora_dropout"]) == (
        cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"])
    assert peft["target_modules"] == LINEAR_TARGETS  # lora_target_linear: true
    sft = plan["sft"]
    assert sft["learning_rate"] == float(cfg["learning_rate"])
    assert sft["lr_scheduler_type"] == cfg["lr_scheduler"]
    assert sft["max_length"] == cfg["sequence_len"]
    assert sft["packing"] is bool(cfg.get("sample_packing"))
    assert sft["per_device_train_batch_size"] == cfg["micro_batch_size"]
    assert sft["output_dir"] == "/out/run" and sft["report_to"] == ["mlflow"]
    assert (sft["max_steps"], sft["num_train_epochs"]) == (-1, float(cfg["num_epochs"]))
    assert plan["data"]["train"][0]["path"].endswith("train.jsonl")
    assert plan["data"]["eval"][0]["path"].endswith("eval.jsonl")


def test_qlora_means_4bit_and_explicit_targets_win() -> None:
    plan = unsloth_plan(resolved(adapter="qlora", lora_target_modules=["q_proj"],
                                 sample_packing=True, optimizer="adamw_bnb_8bit"))
    assert plan["model"]["load_in_4bit"] is True
    assert plan["peft"]["target_modules"] == ["q_proj"]
    assert plan["sft"]["packing"] is True and plan["sft"]["optim"] == "adamw_8bit"


@pytest.mark.parametrize("change,named", [
    ({"deepspeed": "zero3.json"}, "deepspeed"),
    ({"fsdp": ["full_shard"]}, "fsdp"),
    ({"optimizer": "lion_8bit"}, "optimizer lion_8bit"),
    ({"datasets": [{"path": "x.jsonl", "type": "orpo.chat_template"}]}, "datasets.type"),
])
def test_what_unsloth_cannot_honour_is_refused_by_name(change: dict[str, Any],
                                                       named: str) -> None:
    with pytest.raises(UsageError, match=named):
        unsloth_plan(resolved(**change))


def test_unsloth_without_a_gpu_is_a_usage_error_and_auto_is_axolotl() -> None:
    assert choose_backend("auto") == "axolotl"
    with pytest.raises(UsageError, match="needs one NVIDIA GPU"):
        choose_backend("unsloth")


def test_launch_command_uses_accelerate_across_gpus_and_nodes() -> None:
    cfg = Path("/r/axolotl.resolved.yml")
    assert axolotl_command(cfg, 1, {})[1:] == ["-m", "axolotl.cli.train", str(cfg)]
    multi = axolotl_command(cfg, 4, {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"})
    joined = " ".join(multi)
    assert "accelerate.commands.launch --num_processes 8" in joined
    assert "--num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.1" in joined
    assert joined.endswith(f"-m axolotl.cli.train {cfg}")


CFG = Path("/runs/r1/axolotl.resolved.yml")
LAUNCH = ["-m", "accelerate.commands.launch"]
TRAIN = ["-m", "axolotl.cli.train", str(CFG)]


def rendered(cfg: dict[str, Any], gpus: int, **env: str) -> list[str]:
    from llmops.train.launch import argv, plan

    return argv(plan(cfg, gpus, env), CFG, python="python")


def test_one_process_is_plain_axolotl_on_a_cpu_or_one_gpu() -> None:
    assert rendered({}, 0) == ["python", *TRAIN]
    assert rendered({}, 1) == ["python", *TRAIN]
    # one GPU with DeepSpeed: Axolotl sets DeepSpeed up from the YAML, no launcher needed
    assert rendered({"deepspeed": "/ds/zero2.json"}, 1) == ["python", *TRAIN]


def test_two_cpu_processes_take_accelerates_torchrun_path() -> None:
    from llmops.train.launch import plan

    launch = plan({}, 0, {"LLMOPS_TRAIN_PROCESSES": "2"})
    assert launch.cpu and launch.world_size == 2 and launch.distributed
    assert rendered({}, 0, LLMOPS_TRAIN_PROCESSES="2") == [
        "python", *LAUNCH, "--num_processes", "2", "--num_machines", "1", "--machine_rank", "0",
        "--main_process_ip", "127.0.0.1", "--main_process_port", "0", "--multi_gpu", *TRAIN]
    # `--cpu` would be accelerate's single-process launcher: never rendered
    assert "--cpu" not in rendered({}, 0, LLMOPS_TRAIN_PROCESSES="2")
    assert "--main_process_port 29611" in " ".join(
        rendered({}, 0, LLMOPS_TRAIN_PROCESSES="2", MASTER_PORT="29611"))


def test_the_node_rank_and_the_main_process_come_from_the_cluster() -> None:
    cluster = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1",
               "MASTER_PORT": "29400"}
    assert rendered({}, 8, **cluster) == [
        "python", *LAUNCH, "--num_processes", "16", "--num_machines", "2",
        "--machine_rank", "1", "--main_process_ip", "10.0.0.1", "--main_process_port",
        "29400", "--multi_gpu", *TRAIN]
    cpu_nodes = rendered({}, 0, LLMOPS_TRAIN_PROCESSES="1", **cluster)
    assert cpu_nodes[3:7] == ["--num_processes", "2", "--num_machines", "2"]
    default_port = rendered({}, 2, **{**cluster, "MASTER_PORT": ""})
    assert "--main_process_port 29500" in " ".join(default_port)


def test_deepspeed_from_the_yaml_is_rendered() -> None:
    cmd = rendered({"deepspeed": "/ds/zero2.json"}, 4)
    assert cmd[3:11] == ["--num_processes", "4", "--num_machines", "1", "--machine_rank",
                         "0", "--main_process_ip", "127.0.0.1"]
    joined = " ".join(cmd)
    assert "--use_deepspeed --deepspeed_config_file /ds/zero2.json -m axolotl.cli.train" \
        in joined
    assert "--multi_gpu" not in joined and "--deepspeed_multinode_launcher" not in joined
    nodes = " ".join(rendered({"deepspeed": "/ds/zero2.json"}, 4, NNODES="2", NODE_RANK="0",
                              MASTER_ADDR="10.0.0.1"))
    assert "--deepspeed_config_file /ds/zero2.json --deepspeed_multinode_launcher standard" \
        in nodes  # one torchrun per node (a pod each), not pdsh over ssh


def test_fsdp_from_the_yaml_is_rendered_key_by_key() -> None:
    cfg = {"fsdp_version": 2, "fsdp_config": {
        "offload_params": False, "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT", "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
        "reshard_after_forward": True, "not_an_accelerate_option": 1}}
    cmd = rendered(cfg, 2)
    tail = cmd[cmd.index("--main_process_port") + 2:]
    assert tail == [
        "--use_fsdp", "--fsdp_version", "2", "--fsdp_offload_params", "false",
        "--fsdp_reshard_after_forward", "true", "--fsdp_auto_wrap_policy",
        "TRANSFORMER_BASED_WRAP", "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer",
        "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_cpu_ram_efficient_loading",
        "false", *TRAIN]  # a `false` in the YAML is said, or accelerate's `true` would win
    legacy = " ".join(rendered({"fsdp": ["full_shard", "auto_wrap"], "fsdp_config": {
        "fsdp_offload_params": True}}, 2))
    assert "--use_fsdp --fsdp_version 1 --fsdp_offload_params true " \
           "--fsdp_sharding_strategy FULL_SHARD -m" in legacy


@pytest.mark.parametrize("env,named", [
    ({"NNODES": "2", "NODE_RANK": "1"}, "MASTER_ADDR"),
    ({"NNODES": "2", "MASTER_ADDR": "10.0.0.1"}, "NODE_RANK"),
    ({"NNODES": "2", "NODE_RANK": "2", "MASTER_ADDR": "10.0.0.1"}, "NODE_RANK=2"),
    ({"NNODES": "two"}, "NNODES='two'"),
    ({"LLMOPS_TRAIN_PROCESSES": "0"}, "LLMOPS_TRAIN_PROCESSES=0"),
])
def test_a_cluster_variable_missing_or_wrong_is_a_usage_error_naming_it(
        env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        rendered({}, 2, **env)


@pytest.mark.parametrize("cfg,named", [
    ({"deepspeed": "/ds/zero2.json"}, "deepspeed: needs NVIDIA GPUs"),
    ({"fsdp_config": {"offload_params": True}}, "fsdp_config: needs NVIDIA GPUs"),
])
def test_sharding_settings_on_a_cpu_are_refused_by_name(cfg: dict[str, Any],
                                                        named: str) -> None:
    with pytest.raises(UsageError, match=named):
        rendered(cfg, 0, LLMOPS_TRAIN_PROCESSES="2")


def test_axolotl_command_reads_the_resolved_yaml(tmp_path: Path) -> None:
    resolved_yml = tmp_path / "axolotl.resolved.yml"
    resolved_yml.write_text(yaml.safe_dump({"deepspeed": "/ds/zero3.json"}))
    cmd = axolotl_command(resolved_yml, 2, {})
    assert "--use_deepspeed --deepspeed_config_file /ds/zero3.json" in " ".join(cmd)


def test_an_inline_deepspeed_mapping_becomes_a_file_both_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from types import SimpleNamespace

    from llmops.train import run

    monkeypatch.setattr(run, "ensure_base_model", lambda name: name)
    monkeypatch.setattr(run, "_cuda_count", lambda: 2)
    zero2 = {"zero_optimization": {"stage": 2}}
    spec = SimpleNamespace(name="tiny", base_model="base",
                           axolotl=SimpleNamespace(as_dict=lambda: {"deepspeed": zero2}))
    cfg = run.resolved_axolotl_config(spec, tmp_path / "out", "tiny-1")  # type: ignore[arg-type]
    assert cfg["deepspeed"] == str(tmp_path / "out" / "deepspeed.json")
    assert json.loads(Path(cfg["deepspeed"]).read_text()) == zero2


def test_cpu_processes_join_one_gloo_world_only_when_launched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.train.axolotl_cpu import join_cpu_world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join_cpu_world() is None  # one process: nothing to join, nothing changed


def test_latest_checkpoint_is_the_highest_finished_one(tmp_path: Path) -> None:
    for step, finished in ((30, True), (60, True), (90, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if finished:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-60"
    assert latest_checkpoint(tmp_path / "none") is None


def test_backfill_restores_exactly_what_mlflow_missed(tmp_path: Path) -> None:
    import json

    import mlflow

    from llmops.train.run import backfill_metrics

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    for step in (1, 2):  # steps 3-4 were sent while the server was down
        client.log_metric(run_id, "loss", 4.0 - step, step=step)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    history = [{"step": s, "loss": 4.0 - s, "memory/max_active (GiB)": 0.5} for s in (1, 2, 3, 4)]
    (checkpoint / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    assert backfill_metrics(client, run_id, tmp_path / "out") == 2 + 4
    assert {m.step: m.value for m in client.get_metric_history(run_id, "loss")} == \
        {1: 3.0, 2: 2.0, 3: 1.0, 4: 0.0}
    assert len(client.get_metric_history(run_id, "memory/max_active _GiB_")) == 4
    assert backfill_metrics(client, run_id, tmp_path / "out") == 0  # idempotent


def test_bf16_auto_on_a_cpu_follows_the_compute_plan(plan_for: PlanFor) -> None:
    cfg = resolved(bf16="auto")
    with_amx, warnings = for_this_machine(cfg, plan_for("AMX"))
    assert with_amx["bf16"] is True and with_amx["fp16"] is False  # never Axolotl's fp16
    assert warnings == []
    assert CPU_PLUGIN in with_amx["plugins"]  # transformers autocasts bf16 on CPU only so
    assert with_amx["lora_mlp_kernel"] is False  # Triton kernels need CUDA
    without, _ = for_this_machine(cfg, plan_for("AVX2"))
    assert without["bf16"] is False and without["fp16"] is False
    assert cfg["bf16"] == "auto" and "plugins" not in cfg  # the input is not changed


def test_a_yaml_without_a_precision_gets_the_plans_explicitly(plan_for: PlanFor) -> None:
    """A user's YAML without `bf16:` trained in fp16 (Axolotl's fallback) on an AVX2 CPU."""
    cfg = resolved()
    cfg.pop("bf16", None)
    out, _ = for_this_machine(cfg, plan_for("AVX2"))
    assert out["bf16"] is False and out["fp16"] is False
    out, _ = for_this_machine(cfg, plan_for("AMX"))
    assert out["bf16"] is True and out["fp16"] is False


def test_gpu_machines_get_an_explicit_precision_and_keep_the_rest(plan_for: PlanFor) -> None:
    cfg = resolved(bf16="auto")
    out, warnings = for_this_machine(cfg, plan_for("AVX2", gpus=("NVIDIA H100",)))
    assert out["bf16"] is True and out["fp16"] is False and warnings == []
    assert {k: v for k, v in out.items() if k not in ("bf16", "fp16")} == \
        {k: v for k, v in cfg.items() if k not in ("bf16", "fp16")}


def test_explicit_settings_and_plugins_are_kept_on_a_cpu(plan_for: PlanFor) -> None:
    cfg = resolved(bf16=False, plugins=["some.Plugin", CPU_PLUGIN], lora_mlp_kernel=True)
    out, warnings = for_this_machine(cfg, plan_for("AMX"))
    assert out["bf16"] is False and out["lora_mlp_kernel"] is True
    assert out["plugins"] == ["some.Plugin", CPU_PLUGIN]
    assert warnings == []


def test_an_explicit_emulated_precision_is_kept_with_a_warning_naming_its_cost(
        plan_for: PlanFor) -> None:
    out, warnings = for_this_machine(resolved(bf16=True), plan_for("AVX2"))
    assert out["bf16"] is True
    assert len(warnings) == 1 and "`bf16: true`" in warnings[0]
    assert "emulates bf16" in warnings[0] and "168x slower" in warnings[0]
    out, warnings = for_this_machine(resolved(bf16=False, fp16=True), plan_for("AMX"))
    assert out["fp16"] is True and "no fp16 matmul in hardware" in warnings[0]


def test_preload_puts_new_libraries_first_and_never_twice() -> None:
    assert preloaded(["libtcmalloc_minimal.so.4"], None) == "libtcmalloc_minimal.so.4"
    assert preloaded(["a.so", None, "b.so"], "c.so") == "a.so:b.so:c.so"
    assert preloaded(["a.so"], "b.so:a.so") == "b.so:a.so"  # already there: unchanged
    assert preloaded([None], "") == ""


def test_cpu_training_env_keeps_what_the_caller_set(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    env = cpu_training_env({"LD_PRELOAD": "mine.so"})
    assert env["LD_PRELOAD"].endswith("mine.so")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert cpu_training_env({"TORCHINDUCTOR_CACHE_DIR": "/x"})["TORCHINDUCTOR_CACHE_DIR"] == "/x"


def test_compile_blocks_compiles_the_repeated_blocks_in_place() -> None:
    import torch

    from llmops.train.axolotl_cpu import compile_blocks

    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 4),
        torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(3)]),
        torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.ReLU()]),  # not repeated
        torch.nn.Linear(4, 10))
    names = [name for name, _ in model.named_parameters()]
    assert compile_blocks(model) == 3
    assert [name for name, _ in model.named_parameters()] == names  # adapters save alike
    blocks = list(model[1])
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert model[3]._compiled_call_impl is None and model[2][0]._compiled_call_impl is None


def test_the_cpu_plugin_compiles_the_blocks_that_training_runs() -> None:
    """For real, on a small random Llama with LoRA under bf16 autocast (as Axolotl trains on
    a CPU): the blocks run compiled, the loss is the eager one, the adapter gets gradients."""
    import torch
    from axolotl.utils.dict import DictDefault
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmops.train.axolotl_cpu import CpuTraining

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = torch.randint(0, 128, (2, 32))

    def loss() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(input_ids=ids, labels=ids, use_cache=False).loss

    eager = float(loss())
    torch._dynamo.reset()
    counters.clear()
    plugin = CpuTraining()
    assert plugin.get_training_args(DictDefault({}))["torch_compile"] is False
    plugin.post_model_load(DictDefault({"torch_compile": True}), model)
    compiled = loss()
    compiled.backward()
    assert counters["stats"]["unique_graphs"] >= 1  # the blocks ran through Dynamo
    assert abs(float(compiled) - eager) < 0.05
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
