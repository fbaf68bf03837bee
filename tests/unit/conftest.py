"""Fixtures of the unit tier."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmops.compute.machine import Capabilities, Speeds
from llmops.compute.plan import ComputePlan, decide
from llmops.evaluation.suite import EvalEndpoint

# (served model name, the request's messages) → the assistant's answer
Answerer = Callable[[str, list[dict[str, str]]], str]
StartChat = Callable[..., tuple[EvalEndpoint, list[dict[str, Any]]]]


class _ChatHandler(BaseHTTPRequestHandler):
    """/v1/chat/completions as vLLM's OpenAI server answers it (non-streaming), with the
    bearer key the EvalEndpoint names."""

    answer: Answerer
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers["Authorization"] != "Bearer k":
            self.send_error(401)
            return
        self.seen.append(body)
        text = type(self).answer(body["model"], body["messages"])
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_chat_server() -> Iterator[StartChat]:
    """start(answer, roles=("base", "candidate")) → (EvalEndpoint, the request bodies seen)."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answerer, roles: tuple[str, ...] = ("base", "candidate")) -> \
            tuple[EvalEndpoint, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        handler = type("H", (_ChatHandler,), {"answer": staticmethod(answer), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return EvalEndpoint(f"http://127.0.0.1:{server.server_port}/v1", "k", roles, 16, 4), seen

    yield start
    for server in servers:
        server.shutdown()


# CPU classes as /proc/cpuinfo flags them, with matmul speeds (GFLOP/s; GOP/s for int8) of
# the order measured on 2-vCPU machines of each class (AVX2: an AMD EPYC, where torch
# emulates bf16 and int8).
MACHINES: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "AMX": (("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8",
             "amx_tile"), {"fp32": 310.0, "bf16": 1200.0, "int8": 650.0}),
    "AVX512-BF16": (("avx2", "avx512f", "avx512_bf16", "avx512_vnni"),
                    {"fp32": 300.0, "bf16": 520.0, "int8": 600.0}),
    "AVX512-VNNI": (("avx2", "avx512f", "avx512_vnni"),
                    {"fp32": 300.0, "bf16": 3.0, "int8": 600.0}),
    "AVX-VNNI": (("avx2", "avx_vnni"), {"fp32": 170.0, "bf16": 1.5, "int8": 330.0}),
    "AVX2": (("avx2",), {"fp32": 168.0, "bf16": 1.0, "int8": 1.9}),
}
PlanFor = Callable[..., ComputePlan]


@pytest.fixture()
def plan_for() -> PlanFor:
    """plan_for(isa, gpus=(), gflops=None) → the compute plan of such a machine."""

    def make(isa: str, gpus: tuple[str, ...] = (), gflops: dict[str, float] | None = None,
             gpu_bf16: bool = True) -> ComputePlan:
        flags, speeds = MACHINES[isa]
        caps = Capabilities("test CPU", isa, flags, 2, 24.0, gpus, gpu_bf16)
        return decide(caps, Speeds(gflops or speeds))

    return make


def tiny_base_and_adapter(folder: Path) -> tuple[Path, Path]:
    """A random 2-layer Llama with the tiny tokenizer in `folder/base`, and a LoRA adapter
    of it in `folder/run` whose B matrices are not zero (a fresh adapter would change
    nothing and prove nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmops.models.base import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    base_dir, adapter_dir = folder / "base", folder / "run"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           init_lora_weights=False))
    peft.save_pretrained(adapter_dir)
    return base_dir, adapter_dir
