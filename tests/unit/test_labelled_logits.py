"""The training loss computed on the labelled positions only gives the same loss and the same
adapter gradients as transformers' own (which runs the LM head on every position)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from llmops.train.labelled_logits import IGNORE, labelled_logits_only


def lora_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False)).train()


def batch() -> dict[str, torch.Tensor]:
    """Two packed rows: prompts unlabelled, answers labelled, a boundary in between."""
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (2, 24))
    labels = ids.clone()
    labels[0, :7] = IGNORE
    labels[0, 12:16] = IGNORE  # the second example's prompt in the packed row
    labels[1, :15] = IGNORE
    return {"input_ids": ids, "labels": labels,
            "position_ids": torch.cat([torch.arange(12), torch.arange(12)]).repeat(2, 1)}


def loss_and_grads(model: Any, **extra: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**batch(), **extra).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.requires_grad}


@pytest.mark.parametrize("num_items", [None, torch.tensor(40)])
def test_same_loss_and_gradients_as_every_position(num_items: Any) -> None:
    extra = {} if num_items is None else {"num_items_in_batch": num_items}
    reference, patched = lora_model(), lora_model()
    assert labelled_logits_only(patched.get_base_model())
    want_loss, want_grads = loss_and_grads(reference, **extra)
    got_loss, got_grads = loss_and_grads(patched, **extra)
    torch.testing.assert_close(got_loss, want_loss)
    assert want_grads.keys() == got_grads.keys() and len(got_grads) > 0
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, msg=name)


def test_lm_head_sees_only_the_labelled_positions() -> None:
    model = lora_model()
    base = model.get_base_model()
    labelled_logits_only(base)
    rows: list[int] = []
    base.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    model(**batch())
    data = batch()
    # the label of position t is the token at t + 1: the last position of a row has none
    assert rows == [int((data["labels"][:, 1:] != IGNORE).sum())]


def test_evaluation_and_generation_keep_every_position() -> None:
    model = lora_model()
    labelled_logits_only(model.get_base_model())
    model.eval()
    with torch.no_grad():
        out = model(**batch())
    assert out.logits.shape == (2, 24, 97) and out.loss is not None


def test_a_model_without_the_standard_head_is_left_as_it_was() -> None:
    other = torch.nn.Linear(3, 3)
    assert not labelled_logits_only(other)
    assert "forward" not in vars(other)
