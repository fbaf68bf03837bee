"""How vLLM's OpenAI server is started, on every target: one definition of its arguments.

The arguments every target shares come from `VllmServer`; a target adds its own extras
(the CPU engine's block size and stream interval locally, tensor parallelism and GPU
memory on Kubernetes). Adapters are served as LoRA modules under their own names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmops.errors import UsageError

# vLLM accepts only these --max-lora-rank values.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_LORA_RANK = 16


@dataclass(frozen=True)
class VllmServer:
    """One vLLM OpenAI server: its weights, names, address and batch limits."""

    model: str  # a folder or a hub id
    served_name: str
    host: str
    port: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    loras: dict[str, str] = field(default_factory=dict)  # served name -> adapter folder
    max_lora_rank: int | None = None  # the adapters' largest rank (None: vLLM's default)


def supported_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds `rank`."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise UsageError(f"LoRA rank {rank} is larger than vLLM supports ({LORA_RANKS[-1]})")


GUARD_DIR = Path(__file__).resolve().parent / "guard"
GUARD_MODULE = "llmops_keyguard"
GUARD_MIDDLEWARE = f"{GUARD_MODULE}.KeyGuard"


def vllm_args(server: VllmServer, extras: list[str]) -> list[str]:
    """The server's command-line arguments; never --trust-remote-code."""
    args = ["--model", server.model, "--served-model-name", server.served_name,
            "--host", server.host, "--port", str(server.port),
            # The key on every path but /health (vLLM's own check guards /v1... only); the
            # guard's folder is on the server's PYTHONPATH (GUARD_DIR).
            "--middleware", GUARD_MIDDLEWARE,
            "--dtype", server.dtype,
            "--max-model-len", str(server.max_model_len),
            "--max-num-seqs", str(server.max_num_seqs),
            *extras]
    if server.loras:
        args += lora_args(len(server.loras), server.max_lora_rank)
        args += ["--lora-modules", *(f"{name}={path}" for name, path in server.loras.items())]
    return args


def lora_args(max_loras: int, max_rank: int | None) -> list[str]:
    """LoRA serving with room for `max_loras` adapters in a batch, each of rank up to
    `max_rank` (None: vLLM's default); the adapters are named by --lora-modules or loaded
    at run time."""
    rank = supported_rank(max_rank or VLLM_DEFAULT_LORA_RANK)
    return ["--enable-lora", "--max-loras", str(max_loras), "--max-lora-rank", str(rank)]
