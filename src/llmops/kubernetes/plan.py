"""Parallelism planner: the smallest tensor-parallel size that serves a model on a target.

Memory per GPU with tensor parallelism t and pipeline parallelism p (vLLM's layout):
- weights: every parameter once, split over t·p GPUs;
- KV cache for max_model_len × max_num_seqs tokens: 2 (K and V) × layers × KV heads ×
  head_dim × bytes per token, split over p stages and over min(t, KV heads) shards
  (KV heads are replicated when t exceeds their number);
- usable: GPU memory × gpu_memory_utilization − a fixed reserve (activations, CUDA graphs).
t must divide the attention heads, and t ≤ GPUs per node (TP stays inside a node); p goes
across nodes. The plan is the smallest t (then the smallest p) that fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "fp8": 1, "int8": 1, "int4": 0.5}
GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What serving memory depends on, read from a Hugging Face config.json."""

    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
        attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2  # q,o + k,v
        mlp = 3 * hidden * inter  # gate, up, down
        norms = 2 * hidden
        embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
        params = layers * (attention + mlp + norms) + embeddings + hidden
        return cls(params, layers, hidden, heads, kv, head_dim)

    @classmethod
    def from_dir(cls, folder: Path) -> ModelShape:
        return cls.from_config(json.loads((folder / "config.json").read_text()))


@dataclass(frozen=True)
class GpuBudget:
    gpu_memory_gib: float
    gpus_per_node: int
    nodes: int
    dtype: str = "bfloat16"
    kv_dtype: str = "bfloat16"
    gpu_memory_utilization: float = 0.9
    reserve_gib: float = 2.0
    max_model_len: int = 8192
    max_num_seqs: int = 16


@dataclass(frozen=True)
class Plan:
    fits: bool
    tensor_parallel: int
    pipeline_parallel: int
    weights_gib: float
    kv_cache_gib: float
    per_gpu_gib: float
    usable_gib: float
    explanation: str


def weights_gib(shape: ModelShape, target: GpuBudget) -> float:
    return shape.params * DTYPE_BYTES[target.dtype] / GIB


def kv_cache_gib(shape: ModelShape, target: GpuBudget) -> float:
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * DTYPE_BYTES[target.kv_dtype]
    return per_token * target.max_model_len * target.max_num_seqs / GIB


def per_gpu_gib(shape: ModelShape, target: GpuBudget, tp: int, pp: int) -> float:
    kv_shards = min(tp, shape.kv_heads)
    return weights_gib(shape, target) / (tp * pp) + kv_cache_gib(shape, target) / (kv_shards * pp)


def plan(shape: ModelShape, target: GpuBudget) -> Plan:
    """The smallest TP (dividing the heads, within a node), then the smallest PP (nodes)."""
    usable = target.gpu_memory_gib * target.gpu_memory_utilization - target.reserve_gib
    w, kv = weights_gib(shape, target), kv_cache_gib(shape, target)
    tps = [t for t in range(1, target.gpus_per_node + 1) if shape.heads % t == 0]
    for pp in range(1, target.nodes + 1):
        for tp in tps:
            need = per_gpu_gib(shape, target, tp, pp)
            if need <= usable:
                where = "one node" if pp == 1 else f"{pp} nodes (pipeline parallel)"
                return Plan(True, tp, pp, w, kv, need, usable,
                            f"weights {w:.1f} GiB + KV cache {kv:.1f} GiB "
                            f"({target.max_model_len} tokens × {target.max_num_seqs} seqs) "
                            f"→ {need:.1f} GiB per GPU with TP={tp}, PP={pp} on {where}; "
                            f"usable {usable:.1f} GiB per GPU")
    tp = max(tps)
    need = per_gpu_gib(shape, target, tp, target.nodes)
    return Plan(False, tp, target.nodes, w, kv, need, usable,
                f"does not fit: weights {w:.1f} GiB + KV cache {kv:.1f} GiB need {need:.1f} GiB "
                f"per GPU even at TP={tp} × PP={target.nodes} ({target.nodes} node(s) of "
                f"{target.gpus_per_node} × {target.gpu_memory_gib:g} GiB), usable {usable:.1f} "
                "GiB; add nodes, use larger GPUs, quantise, or lower max_model_len/max_num_seqs")


def plan_for(shape: ModelShape, gpu: Any) -> Plan:
    """The plan for a deploy/<env>.yml `gpu` section (a config.GpuTarget)."""
    return plan(shape, GpuBudget(gpu.gpu_memory_gib, gpu.gpus_per_node, gpu.nodes, gpu.dtype,
                              gpu.dtype, gpu.gpu_memory_utilization,
                              max_model_len=gpu.max_model_len, max_num_seqs=gpu.max_num_seqs))
