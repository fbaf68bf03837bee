"""Int8 weights served for real: a merged model quantized by llmops, loaded by vLLM CPU."""

from __future__ import annotations

from pathlib import Path

from llmops.compute import serve_settings
from llmops.config import load_deploy
from llmops.models import derived
from llmops.serve import process as serve


def test_an_int8_deployment_loads_in_vllm_and_answers(repo_copy: Path, tiny_base: Path,
                                                      tmp_path: Path) -> None:
    import torch
    from openai import OpenAI
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "run"  # an untrained adapter: what matters here is the path
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"])) \
        .save_pretrained(adapter)
    # int8 decoder layers keep bf16 around them, whatever this machine's plan serves.
    settings = serve_settings(load_deploy("local"), "tiny").model_copy(
        update={"quantization": "w8a8-int8", "dtype": "bfloat16"})

    dep = serve.start("tiny", "test", "0.0.1", str(tiny_base), adapter, settings)
    try:
        # Built in the state folder, never among the version's files.
        int8 = derived.deployed_cache("tiny", str(tiny_base), adapter) / "merged-w8a8"
        assert dep.args[dep.args.index("--model") + 1] == str(int8)
        derived.verify(int8)  # its manifest, written when it was built
        assert (int8 / derived.DERIVED).is_file()
        assert not (adapter / "merged-w8a8").exists() and not (adapter / "merged").exists()
        api = OpenAI(base_url=dep.url, api_key=serve.local_api_key(), max_retries=0)
        reply = api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "What port does sync use?"}],
            max_tokens=8, temperature=0)
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        log = Path(dep.log_path).read_text()
        assert "CompressedTensorsW8A8Int8" in log  # vLLM's int8 kernels, not a fallback
    finally:
        dep.kill()
    assert not Path(dep.sockets_dir).exists()
