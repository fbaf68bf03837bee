"""Training progress read from the trainer's own output, for a progress bar.

Axolotl's trainer (transformers' `Trainer`) prints two kinds of lines worth reading:

- its tqdm bar, one update per step (carriage returns become lines when the output is read
  as text): `  8%|▊         | 5/60 [00:03<00:30,  1.80it/s]`. The training bar has no
  description; the datasets' bars do (`Map (num_proc=2):  50%|...`, `Tokenizing Prompts`).
  Evaluation bars inside training have no description either, but another total: the
  training bar is the first one without a description (evaluation comes after the first
  steps). Until it appears, the total is the one the trainer states
  (`total_num_steps: 60`, `Total optimization steps = 60`, `max_steps`).
- its logged dicts: `{'loss': 2.1, 'grad_norm': 0.5, 'learning_rate': 0.0002, 'epoch': 0.5}`
  (values may be quoted strings in newer versions), evaluation dicts (`eval_loss`), and the
  closing one (`train_runtime`, `train_loss`, ...). Tokens per second come from any
  `...tokens_per_second` key when the trainer logs one; otherwise they are left out.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, replace

from llmops.process.activity import Progress

_BAR = re.compile(r"^\s*(?:\d{1,3}%\|[^|]*\|)?\s*(\d+)/(\d+)\s*\[([\d:]+)(?:<([\d:?]+))?")
_DESCRIBED = re.compile(r"^\s*[A-Za-z][^|]*:\s*\d{1,3}%\|")
_TOTAL = re.compile(r"(?:total_num_steps|Total optimization steps|max_steps)\s*[:=]\s+(\d+)\s*$")


def clock_seconds(text: str) -> float | None:
    """tqdm's `[HH:]MM:SS` in seconds; None for `?`."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(seconds)


def parse_dict(line: str) -> dict[str, float] | None:
    """The numbers of a logged dict line (`{'loss': 2.1, ...}`), or None."""
    start, end = line.find("{'"), line.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = ast.literal_eval(line[start:end + 1])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    out: dict[str, float] = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class TrainProgress:
    step: int = 0
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None

    def as_progress(self) -> Progress:
        detail = []
        if self.loss is not None:
            detail.append(f"loss {self.loss:.4g}")
        if self.eval_loss is not None:
            detail.append(f"eval loss {self.eval_loss:.4g}")
        if self.tokens_per_s is not None:
            detail.append(f"{self.tokens_per_s:,.0f} tok/s")
        return Progress(self.step, self.total, self.eta_s, " · ".join(detail))


class ProgressParser:
    """Feed it the trainer's lines; each line that moves the progress returns the new state."""

    def __init__(self) -> None:
        self.state = TrainProgress()
        self.bar_total: int | None = None  # the training bar's total, once seen

    def feed(self, line: str) -> TrainProgress | None:
        s = self.state
        if found := _TOTAL.search(line):
            if s.total is None:
                self.state = replace(s, total=int(found.group(1)))
                return self.state
            return None
        if "{'" in line:
            values = parse_dict(line)
            if not values:
                return None
            changes: dict[str, float | None] = {}
            if "loss" in values:
                changes["loss"] = values["loss"]
            elif "train_loss" in values and s.loss is None:
                changes["loss"] = values["train_loss"]
            if "eval_loss" in values:
                changes["eval_loss"] = values["eval_loss"]
            rate = next((v for k, v in values.items() if k.endswith("tokens_per_second")), None)
            if rate is not None:
                changes["tokens_per_s"] = rate
            if not changes:
                return None
            self.state = replace(s, **changes)  # type: ignore[arg-type]
            return self.state
        if _DESCRIBED.match(line) or not (bar := _BAR.match(line)):
            return None
        step, total = int(bar.group(1)), int(bar.group(2))
        if self.bar_total is None:
            if total <= 0:
                return None
            self.bar_total = total
            s = replace(s, total=total)
        elif total != self.bar_total:
            return None  # another bar: evaluation inside training
        elapsed = clock_seconds(bar.group(3))
        remaining = clock_seconds(bar.group(4)) if bar.group(4) else None
        if remaining is None and elapsed is not None and step > 0 and s.total is not None:
            remaining = elapsed / step * (s.total - step)
        self.state = replace(s, step=step, elapsed_s=elapsed, eta_s=remaining)
        return self.state
