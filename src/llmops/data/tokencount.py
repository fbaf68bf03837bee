"""Exact token counts, fast: tiktoken's BPE when it provably counts like the model's tokenizer.

Counting tokens is most of the data gate's time at scale. Many LLM tokenizers (GPT-2 style:
SmolLM2, StarCoder, Llama 3 and others) are byte-level BPE with a regex pre-tokenizer and
no normaliser; tiktoken runs that same algorithm faster per core than the Hugging Face
tokenizers library. `counter_for` builds an equivalent tiktoken encoding from the
tokenizer's own merges (ranks in merge order; token ids do not matter for a count) and uses
it only after it counted a probe of real examples exactly as the tokenizer does. Anything
else (SentencePiece, normalisers, a probe that disagrees) counts with the tokenizer itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

Counter = Callable[[list[str]], list[int]]

# The GPT-2 pre-tokenizer, which `ByteLevel(use_regex=true)` applies.
GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def hf_counter(tokenizer: Any) -> Counter:
    """Token counts from the Rust tokenizer directly (no per-row Python conversion).

    A saved tokenizer can carry padding (a batch padded to its longest row) or truncation;
    either would misreport a row's length, so the counter uses a copy without them."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and (backend.padding or backend.truncation):
        backend = copy.deepcopy(backend)
        backend.no_padding()
        backend.no_truncation()

    def count(texts: list[str]) -> list[int]:
        if not texts:
            return []
        if backend is None:
            return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets
        return [len(e.ids) for e in encode(texts, add_special_tokens=False)]

    return count


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for the 256 byte values, reversed."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = dict(zip(keep, keep, strict=True))
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def tiktoken_counter(tokenizer: Any) -> Counter | None:
    """A tiktoken-backed counter for a byte-level BPE tokenizer, or None if it is not one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        import tiktoken

        spec = json.loads(backend.to_str()) if backend is not None else None
    except Exception:
        return None
    if not spec:
        return None
    model, pre, norm = spec.get("model") or {}, spec.get("pre_tokenizer") or {}, \
        spec.get("normalizer")
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" \
            or not pre.get("use_regex", True) or pre.get("add_prefix_space") \
            or model.get("ignore_merges") or model.get("dropout") \
            or (norm and norm.get("normalizers", None) != []):
        return None
    decode = _byte_decoder()
    try:
        ranks = {bytes([b]): b for b in range(256)}
        for i, merge in enumerate(model["merges"]):
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            ranks.setdefault(bytes(decode[c] for c in left + right), 256 + i)
        special = {t["content"]: len(ranks) + j
                   for j, t in enumerate(spec.get("added_tokens") or [])}
        enc = tiktoken.Encoding("llmops-count", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                special_tokens=special)
    except (KeyError, ValueError, TypeError):
        return None

    def count(texts: list[str]) -> list[int]:
        return [len(enc.encode(t, allowed_special="all")) for t in texts]

    return count


class TokenCounter:
    """Counts tokens with tiktoken once a probe agreed exactly, else with the tokenizer."""

    PROBE = 512

    def __init__(self, tokenizer: Any) -> None:
        self.exact = hf_counter(tokenizer)
        self.tokenizer = tokenizer
        self.fast: Counter | None = None
        self.checked = False

    @property
    def engine(self) -> str:
        return "tiktoken" if self.fast is not None else "tokenizers"

    def __call__(self, texts: list[str]) -> list[int]:
        if not self.checked:
            self.checked = True
            fast = tiktoken_counter(self.tokenizer)
            probe = texts[: self.PROBE]
            if fast is not None and probe and fast(probe) == self.exact(probe):
                self.fast = fast
        return (self.fast or self.exact)(texts)
