"""Run the LM head only where a label is: the training loss without the wasted logits.

A causal LM's training forward multiplies every position's hidden state by the vocabulary
(49,152 × 576 for SmolLM2: a fifth of its matmul FLOPs) and takes a log-softmax over it, then
the loss ignores the positions labelled -100: prompts, system turns, padding. For a chat
fine-tune trained on the assistant's turns only, most of that work is thrown away. Here
the head and the cross-entropy run on the labelled positions only; the loss and the
gradients are transformers' own (`ForCausalLMLoss`: summed over the labelled tokens, divided
by `num_items_in_batch` when the Trainer gives it, else their mean). Evaluation, generation
and calls without labels run the model's own forward.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100


def labelled_logits_only(model: Any) -> bool:
    """Give `model` (a transformers `...ForCausalLM`, not its PEFT wrapper) a training forward
    that runs its LM head on the labelled positions only. Returns False, changing nothing,
    for a model without the standard layout (`.model` returning `last_hidden_state`, then
    `.lm_head`) or with logit soft-capping (the head's output is not the logits there)."""
    config = getattr(model, "config", None)
    if not all(hasattr(model, key) for key in ("model", "lm_head", "config")) or \
            getattr(config, "final_logit_softcapping", None):
        return False
    original = model.forward

    def forward(input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                past_key_values: Any = None, inputs_embeds: Any = None, labels: Any = None,
                use_cache: Any = None, logits_to_keep: Any = 0, **kwargs: Any) -> Any:
        if labels is None or not model.training:
            return original(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, past_key_values=past_key_values,
                            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache,
                            logits_to_keep=logits_to_keep, **kwargs)
        import torch
        from transformers.modeling_outputs import CausalLMOutputWithPast

        num_items = kwargs.pop("num_items_in_batch", None)
        targets = kwargs.pop("shift_labels", None)
        outputs = model.model(input_ids=input_ids, attention_mask=attention_mask,
                              position_ids=position_ids, past_key_values=past_key_values,
                              inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
        if targets is None:  # position t predicts the token at t + 1
            targets = torch.nn.functional.pad(labels[..., 1:], (0, 1), value=IGNORE)
        keep = targets != IGNORE
        logits = model.lm_head(outputs.last_hidden_state[keep]).float()
        loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
        if num_items is None:
            num_items = keep.sum().clamp(min=1)
        elif torch.is_tensor(num_items):
            num_items = num_items.to(loss.device)
        return CausalLMOutputWithPast(loss=loss / num_items, logits=None,
                                      past_key_values=outputs.past_key_values)

    model.forward = forward
    return True
