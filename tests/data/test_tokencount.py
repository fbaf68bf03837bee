"""The fast token counter counts exactly like the model's tokenizer, or is not used."""

from __future__ import annotations

import copy
from typing import Any

from tokenizers import normalizers

from llmops.data.tokencount import TokenCounter, hf_counter, tiktoken_counter

TEXTS = [
    "<|im_start|>user\nHow long is the Quillbox trial?<|im_end|>\n<|im_start|>assistant\n"
    "23 days.<|im_end|>\n",
    "héllo wörld 12345 ñ 日本語 😀  tabs\t\tand\n\nnewlines   x",
    "   leading spaces, it's they'll we'd 'quoted' 3.14159 ---- !!",
    "",
    "a" * 500,
]


def test_tiktoken_counts_exactly_like_the_tokenizer(tokenizer: Any) -> None:
    fast = tiktoken_counter(tokenizer)
    assert fast is not None
    assert fast(TEXTS) == hf_counter(tokenizer)(TEXTS)


def test_counter_uses_tiktoken_after_an_exact_probe(tokenizer: Any) -> None:
    count = TokenCounter(tokenizer)
    assert count(TEXTS) == hf_counter(tokenizer)(TEXTS)
    assert count.engine == "tiktoken"


def test_a_normaliser_keeps_the_tokenizer_itself(tokenizer: Any) -> None:
    lower = copy.deepcopy(tokenizer)
    lower.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert tiktoken_counter(lower) is None
    count = TokenCounter(lower)
    assert count(["ABC Def"]) == hf_counter(lower)(["ABC Def"])
    assert count.engine == "tokenizers"


def test_a_probe_that_disagrees_keeps_the_tokenizer(tokenizer: Any, monkeypatch: Any) -> None:
    import llmops.data.tokencount as tc

    monkeypatch.setattr(tc, "tiktoken_counter", lambda tok: lambda texts: [0] * len(texts))
    count = TokenCounter(tokenizer)
    assert count(TEXTS) == hf_counter(tokenizer)(TEXTS)
    assert count.engine == "tokenizers"


def test_a_tokenizer_saved_with_padding_or_truncation_still_counts_each_row(
        tokenizer: Any) -> None:
    """A batch padded to its longest row (or cut) must not change any row's count."""
    want = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    padded = copy.deepcopy(tokenizer)
    padded.backend_tokenizer.enable_padding(pad_token="<|endoftext|>")
    padded.backend_tokenizer.enable_truncation(max_length=8)
    assert hf_counter(padded)(TEXTS) == want
    count = TokenCounter(padded)
    assert count(TEXTS) == want and count.engine == "tiktoken"
    assert padded.backend_tokenizer.padding is not None  # the caller's tokenizer is untouched
