"""Write support-bot's conversations in two other dataset shapes, for the tiny-* test models.

- `tiny-sharegpt/`: ShareGPT keys (`conversations`, `from`/`value`) with role names Axolotl
  does not know by default (customer, agent), mapped in axolotl_configs/tiny-sharegpt.yml;
- `tiny-alpaca/`: instruction / input / output.

Same conversations, same order: a release of either model reads what `tiny` reads.

    python datasets/generate_tiny_shapes.py     # rewrites datasets/tiny-{sharegpt,alpaca}/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROLES = {"user": "customer", "assistant": "agent", "system": "system"}


def sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"conversations": [{"from": ROLES[m["role"]], "value": m["content"]}
                              for m in messages]}


def alpaca(messages: list[dict[str, str]]) -> dict[str, Any]:
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"]:
        raise SystemExit(f"alpaca holds one user and one assistant turn, not {roles}")
    return {"instruction": messages[0]["content"], "input": "",
            "output": messages[1]["content"]}


def main() -> None:
    for split in ("train", "eval"):
        rows = [json.loads(line)["messages"] for line in
                (HERE / "support-bot" / f"{split}.jsonl").read_text().splitlines() if line]
        for name, convert in (("tiny-sharegpt", sharegpt), ("tiny-alpaca", alpaca)):
            out = HERE / name / f"{split}.jsonl"
            out.parent.mkdir(exist_ok=True)
            out.write_text("".join(json.dumps(convert(m)) + "\n" for m in rows))


if __name__ == "__main__":
    main()
