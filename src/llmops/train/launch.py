"""How Axolotl is launched: one process, or `accelerate launch` over processes and nodes.

`plan` reads the machine (its CUDA GPUs), the cluster's variables (NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT, as a Kubernetes job or Slurm sets them), an explicit number of
processes per node (LLMOPS_TRAIN_PROCESSES, which is what makes a CPU-only machine run
several) and the resolved Axolotl YAML (`deepspeed:`, `fsdp:` / `fsdp_config:`); `argv`
renders the exact command. The same `Launch` renders on every node: only the node rank
differs (`python -m llmops.train.node CONFIG` is the command of the nodes other than 0).

What is rendered, and why (accelerate 1.13, Axolotl 0.19):

- One process in all: `python -m axolotl.cli.train CONFIG`. Axolotl reads `deepspeed:` and
  `fsdp_config:` from the YAML itself (`prepare_optim_env` sets accelerate's variables in
  the process), so a single-GPU DeepSpeed run needs no launcher.
- Several processes: `python -m accelerate.commands.launch` with the world's size
  (`--num_processes` counts every node's processes), `--num_machines`, `--machine_rank`,
  `--main_process_ip` and `--main_process_port` (0: a free port, on one node).
- Plain data parallelism: `--multi_gpu`, on CPUs too. accelerate's `--cpu` takes its
  single-process launcher (one process, or `mpirun` with a hostfile), so N CPU processes
  come from its torchrun path instead; on a machine without CUDA, the CPU plugin
  (`llmops.train.axolotl_cpu`) joins them into a gloo process group before Axolotl
  creates its distributed state (which would otherwise leave each process on its own).
- `deepspeed:` → `--use_deepspeed --deepspeed_config_file FILE` (the file Axolotl reads, so
  both agree), and over several nodes `--deepspeed_multinode_launcher standard`: one
  torchrun per node, as a cluster starts pods (accelerate's default, pdsh, would ssh into
  hosts from a hostfile).
- `fsdp_config:` → `--use_fsdp --fsdp_version V` and every key of the YAML that accelerate
  accepts, as `--fsdp_<key> value`. Rendering each key matters: with `--use_fsdp`
  accelerate exports all its FSDP settings (with its defaults, e.g.
  `cpu_ram_efficient_loading true`), and Axolotl then overrides only the keys the YAML
  sets to a true value, so a `false` in the YAML would otherwise lose to the default.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import UsageError

PROCESSES_VAR = "LLMOPS_TRAIN_PROCESSES"
DEFAULT_MASTER_PORT = 29500

# accelerate launch's FSDP options (`--fsdp_<name>`), as `accelerate launch --help` lists them.
FSDP_OPTIONS = ("version", "offload_params", "min_num_params", "sharding_strategy",
                "reshard_after_forward", "auto_wrap_policy", "transformer_layer_cls_to_wrap",
                "backward_prefetch", "state_dict_type", "forward_prefetch", "use_orig_params",
                "cpu_ram_efficient_loading", "sync_module_states", "activation_checkpointing")


@dataclass(frozen=True)
class Launch:
    """One node's share of a training: how many processes, where the world meets."""

    processes_per_node: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0  # 0: accelerate picks a free port (one node only)
    cpu: bool = True
    deepspeed: str | None = None  # the DeepSpeed JSON the YAML names
    fsdp: tuple[tuple[str, str], ...] = ()  # (accelerate option, value), empty: no FSDP

    @property
    def world_size(self) -> int:
        return self.processes_per_node * self.nodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int_var(env: Mapping[str, str], name: str, default: int | None, low: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise UsageError(f"{name} is not set: a training over several nodes needs it "
                             "(NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT)")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r}: a whole number is expected") from None
    if value < low:
        raise UsageError(f"{name}={value}: at least {low} is expected")
    return value


def _flag(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def fsdp_options(cfg: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The YAML's FSDP settings as accelerate launch options; empty without FSDP.

    Axolotl spells the keys of `fsdp_config` with or without the `fsdp_` prefix
    (`offload_params` or `fsdp_offload_params`); `fsdp_version` may be at the top."""
    settings = cfg.get("fsdp_config") or {}
    if not settings and not cfg.get("fsdp"):
        return ()
    if not isinstance(settings, Mapping):
        raise UsageError("fsdp_config: a mapping of FSDP settings is expected")
    keys = {str(k).removeprefix("fsdp_"): v for k, v in settings.items() if v is not None}
    version = keys.pop("version", None) or cfg.get("fsdp_version") or 1
    out = [("fsdp_version", _flag(version))]
    if isinstance(cfg.get("fsdp"), list | str) and "sharding_strategy" not in keys:
        # the older list form (`fsdp: [full_shard, auto_wrap]`) names the strategy
        words = cfg["fsdp"] if isinstance(cfg["fsdp"], list) else str(cfg["fsdp"]).split()
        if strategies := [w.upper() for w in words if "shard" in str(w).lower()]:
            keys["sharding_strategy"] = strategies[0]
    for name in FSDP_OPTIONS[1:]:
        if name in keys:
            out.append((f"fsdp_{name}", _flag(keys[name])))
    return tuple(out)


def plan(cfg: Mapping[str, Any], gpus: int, env: Mapping[str, str]) -> Launch:
    """This node's launch, from the machine, the cluster's variables and the YAML."""
    nodes = _int_var(env, "NNODES", 1, low=1)
    processes = _int_var(env, PROCESSES_VAR, max(gpus, 1), low=1)
    if nodes > 1:
        node_rank = _int_var(env, "NODE_RANK", None, low=0)
        if node_rank >= nodes:
            raise UsageError(f"NODE_RANK={node_rank}: NNODES={nodes}, so 0 to {nodes - 1}")
        master_addr = env.get("MASTER_ADDR", "").strip()
        if not master_addr:
            raise UsageError("MASTER_ADDR is not set: a training over several nodes "
                             "(NNODES>1) needs the address of node 0")
        port = _int_var(env, "MASTER_PORT", DEFAULT_MASTER_PORT, low=1)
    else:
        node_rank, master_addr = 0, env.get("MASTER_ADDR", "").strip() or "127.0.0.1"
        port = _int_var(env, "MASTER_PORT", 0, low=0)
    deepspeed = cfg.get("deepspeed")
    if deepspeed is not None and not isinstance(deepspeed, str):
        raise UsageError("deepspeed: the path of a DeepSpeed JSON is expected here (the "
                         "pipeline writes an inline mapping to a file first)")
    fsdp = fsdp_options(cfg)
    if deepspeed and fsdp:
        raise UsageError("deepspeed and fsdp_config are both set: choose one")
    if (deepspeed or fsdp) and not gpus:
        raise UsageError(f"{'deepspeed' if deepspeed else 'fsdp_config'}: needs NVIDIA GPUs, "
                         "and this machine has none (remove it to train on the CPU)")
    return Launch(processes_per_node=processes, nodes=nodes, node_rank=node_rank,
                  master_addr=master_addr, master_port=port, cpu=not gpus,
                  deepspeed=deepspeed or None, fsdp=fsdp)


def argv(launch: Launch, config_path: Path, python: str = sys.executable) -> list[str]:
    """The exact command that trains `config_path` on this node (see the module's notes)."""
    train = ["-m", "axolotl.cli.train", str(config_path)]
    if not launch.distributed:
        return [python, *train]
    cmd = [python, "-m", "accelerate.commands.launch",
           "--num_processes", str(launch.world_size),
           "--num_machines", str(launch.nodes),
           "--machine_rank", str(launch.node_rank),
           "--main_process_ip", launch.master_addr,
           "--main_process_port", str(launch.master_port)]
    if launch.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", launch.deepspeed]
        if launch.nodes > 1:
            cmd += ["--deepspeed_multinode_launcher", "standard"]
    elif launch.fsdp:
        cmd += ["--use_fsdp"]
        for option, value in launch.fsdp:
            cmd += [f"--{option}", value]
    else:
        cmd += ["--multi_gpu"]  # torchrun's path; on CPUs too (gloo, see above)
    return [*cmd, *train]
