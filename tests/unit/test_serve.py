"""The local vLLM server's arguments and environment, as deploy/local.yml configures them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.config import ServeSettings, ServingChoice, load_deploy
from llmops.serve.process import server_env, vllm_args

PLAN = ServingChoice("bfloat16", "none", 1)
RESOLVED = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1)


def test_support_bot_compiles_with_small_blocks_and_chunked_streams(repo_copy: Path) -> None:
    settings = load_deploy("local").serve_for("support-bot", PLAN)
    args = vllm_args("/m", "support-bot", {}, 8000, settings)
    assert "--enforce-eager" not in args
    assert args[args.index("--block-size") + 1] == "32"
    assert args[args.index("--stream-interval") + 1] == "8"
    assert "--trust-remote-code" not in args


def test_the_test_model_starts_without_compiling(repo_copy: Path) -> None:
    args = vllm_args("/m", "tiny", {}, 8000, load_deploy("local").serve_for("tiny", PLAN))
    assert "--enforce-eager" in args
    assert args[args.index("--max-model-len") + 1] == "512"


def test_lora_serving_names_the_module_and_a_supported_rank(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    args = vllm_args("/base", "m-base", {"m": tmp_path}, 8000, RESOLVED)
    assert args[args.index("--lora-modules") + 1] == f"m={tmp_path}"
    assert args[args.index("--max-lora-rank") + 1] == "16"


@pytest.mark.parametrize("size", [16, 48, 0])
def test_a_block_size_vllm_cpu_refuses_is_refused_here(size: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        ServeSettings(block_size=size)


def test_every_server_shares_one_cache_per_machine_and_runs_the_model_in_process(
        repo_copy: Path, tmp_path: Path) -> None:
    env = server_env(RESOLVED, tmp_path / "sockets")
    # Outside the state dir: a fresh checkout or state dir does not inspect and compile again.
    assert env["VLLM_CACHE_ROOT"] == str(Path.home() / ".cache" / "llmops" / "vllm")
    # The uni executor (no worker process importing vLLM again), which vLLM's CPU platform
    # replaces by its multiprocess one unless V1 multiprocessing is off.
    args = vllm_args("/m", "tiny", {}, 8000, RESOLVED)
    assert args[args.index("--distributed-executor-backend") + 1] == "uni"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["VLLM_USE_AOT_COMPILE"] == "0"  # its cache does not load back (see serve.py)
    assert env["VLLM_RPC_BASE_PATH"] == str(tmp_path / "sockets")
    assert env["HF_HUB_OFFLINE"] == "1"


def test_auto_settings_are_decided_by_the_plan_and_explicit_ones_win(repo_copy: Path) -> None:
    deploy = load_deploy("local")
    assert deploy.serve.dtype == "auto" and deploy.serve.quantization == "auto"
    avx2 = ServingChoice("float32", "none", 1)
    amx = ServingChoice("bfloat16", "w8a8-int8", 2)
    assert deploy.serve_for("support-bot", avx2).dtype == "float32"
    assert deploy.serve_for("support-bot", amx).quantization == "w8a8-int8"
    assert deploy.serve_for("support-bot", amx).kvcache_space_gib == 2
    lora = deploy.model_copy(update={"models": {"m": {"serve": "lora"}}})
    assert lora.serve_for("m", amx).quantization == "none"  # int8 needs merged weights
    pinned = deploy.model_copy(update={"models": {"m": {"dtype": "bfloat16",
                                                        "quantization": "none"}}})
    assert pinned.serve_for("m", avx2).dtype == "bfloat16"
    assert pinned.serve_for("m", amx).quantization == "none"


def test_a_server_is_never_started_with_undecided_settings() -> None:
    with pytest.raises(ValueError, match="compute plan"):
        vllm_args("/m", "m", {}, 8000, ServeSettings())
