"""The parallelism planner on known shapes; the arithmetic is worked by hand in comments."""

from __future__ import annotations

import pytest

from llmops.kubernetes.plan import GpuBudget, ModelShape, kv_cache_gib, plan, weights_gib

LLAMA3_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256}
LLAMA3_70B = {"hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
              "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256}


def test_parameter_count_of_llama3_8b() -> None:
    # per layer: attention 4096·32·128·2 + 4096·8·128·2 = 41,943,040; MLP 3·4096·14336 =
    # 176,160,768; norms 8,192 → 218,112,000 × 32 = 6,979,584,000; embeddings (untied)
    # 128256·4096·2 = 1,050,673,152; final norm 4,096 → 8,030,261,248 (Meta: 8.03B).
    assert ModelShape.from_config(LLAMA3_8B).params == 8_030_261_248


def test_8b_bf16_fits_one_80gb_gpu() -> None:
    shape, target = ModelShape.from_config(LLAMA3_8B), GpuBudget(80, 1, 1)
    # weights 8,030,261,248 × 2 B = 14.96 GiB; KV per token 2·32·8·128·2 B = 128 KiB,
    # × 8192 tokens × 16 seqs = 16 GiB; 30.96 GiB ≤ usable 80·0.9 − 2 = 70 GiB → TP=1.
    assert weights_gib(shape, target) == pytest.approx(14.96, abs=0.01)
    assert kv_cache_gib(shape, target) == pytest.approx(16.0)
    p = plan(shape, target)
    assert (p.fits, p.tensor_parallel, p.pipeline_parallel) == (True, 1, 1)
    assert p.per_gpu_gib == pytest.approx(30.96, abs=0.01)


def test_70b_bf16_on_80gb_gpus_needs_tp4() -> None:
    shape, target = ModelShape.from_config(LLAMA3_70B), GpuBudget(80, 8, 1)
    # params 70,553,706,496 → weights 131.42 GiB; KV per token 2·80·8·128·2 B = 320 KiB,
    # × 131,072 tokens = 40 GiB. TP=2: 65.71 + 20 = 85.71 > 70; TP=4: 32.85 + 10 = 42.85 ✓.
    assert shape.params == 70_553_706_496
    p = plan(shape, target)
    assert (p.fits, p.tensor_parallel, p.pipeline_parallel) == (True, 4, 1)
    assert p.per_gpu_gib == pytest.approx(42.85, abs=0.01)


def test_70b_does_not_fit_a_single_node_of_small_gpus() -> None:
    shape = ModelShape.from_config(LLAMA3_70B)
    # 4 × 24 GiB: usable 24·0.9 − 2 = 19.6 GiB; TP=4 needs 32.85 + 10 = 42.85 GiB per GPU.
    p = plan(shape, GpuBudget(24, 4, 1))
    assert not p.fits and "does not fit" in p.explanation and "add nodes" in p.explanation


def test_70b_spreads_over_nodes_with_pipeline_parallelism() -> None:
    shape = ModelShape.from_config(LLAMA3_70B)
    # PP=2 (8 GPUs): 131.42/8 + 40/(4·2) = 16.43 + 5 = 21.43 > 19.6;
    # PP=3 (12 GPUs): 131.42/12 + 40/(4·3) = 10.95 + 3.33 = 14.28 ≤ 19.6 → TP=4, PP=3.
    p = plan(shape, GpuBudget(24, 4, 4))
    assert (p.fits, p.tensor_parallel, p.pipeline_parallel) == (True, 4, 3)
    assert "3 nodes" in p.explanation


def test_tp_must_divide_the_attention_heads() -> None:
    # 12 heads on a node of 8 GPUs: TP ∈ {1, 2, 3, 4, 6} (8 does not divide 12).
    shape = ModelShape(params=30_000_000_000, layers=40, hidden=6144, heads=12, kv_heads=12,
                       head_dim=512)
    p = plan(shape, GpuBudget(24, 8, 1, max_num_seqs=1, max_model_len=1024))
    assert p.fits and 12 % p.tensor_parallel == 0
    # weights 55.88 GiB: TP=3 → 18.63 + KV (2·40·12·512·2·1024 B = 0.94 GiB)/3 = 18.94 ≤ 19.6
    assert p.tensor_parallel == 3
