"""Data gate throughput: llmops' gate against a straightforward per-row Python loop.

Both run the same checks (parse, schema, template + token length, duplicates, PII) with
the same tokenizer (SmolLM2's, the support-bot base) on the same generated chat examples.
Each measurement runs in a fresh subprocess; peak memory is that process's peak RSS plus
its largest worker's (the gate forks one worker per core).

    .venv/bin/python benchmarks/data_gate.py                 # 10k, 100k, 1M (baseline to 100k)
    .venv/bin/python benchmarks/data_gate.py --sizes 10000   # quick
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["quillbox", "sync", "note", "notebook", "trial", "port", "backup", "export", "device",
         "plan", "team", "password", "title", "tag", "search", "status", "language", "offline",
         "attachment", "encryption", "mascot", "app"]


def generate(path: Path, n: int) -> None:
    """n chat examples, varied in length, ~1% duplicates and a few PII rows."""
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            q = " ".join(rng.choices(WORDS, k=rng.randint(6, 30))) + "?"
            a = " ".join(rng.choices(WORDS, k=rng.randint(10, 80))) + "."
            if i % 97 == 0:
                a += " Mail ops@corp.example.org."
            row = {"messages": [{"role": "user", "content": q},
                                {"role": "assistant", "content": a}]}
            line = json.dumps(row)
            fh.write(line + "\n")
            if i % 100 == 0:
                fh.write(line + "\n")


def run_llmops(path: Path) -> dict[str, float]:
    """The gate as a release runs it: features + Great Expectations + reports."""
    from transformers import AutoTokenizer

    from llmops.config import DatasetRef, load_model
    from llmops.data import validate_model_data
    from llmops.models.base import ensure_base_model

    spec = load_model("support-bot")
    tok = AutoTokenizer.from_pretrained(ensure_base_model(spec.base_model))
    ref = DatasetRef(path, "chat_template", "train",
                     {"path": str(path), "type": "chat_template"})
    started = time.perf_counter()
    report = validate_model_data(spec, tok, [ref])
    return {"seconds": time.perf_counter() - started,
            "examples": report.datasets[0].examples}


PII = [re.compile(p) for p in (
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,4}(?![\w-])",
    r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----", r"\bglpat-[0-9A-Za-z_-]{20,}")]


def run_baseline(path: Path) -> dict[str, float]:
    """The straightforward way: one row at a time, tokenized one at a time."""
    from transformers import AutoTokenizer

    from llmops.config import load_model
    from llmops.models.base import ensure_base_model

    spec = load_model("support-bot")
    tok = AutoTokenizer.from_pretrained(ensure_base_model(spec.base_model))
    started = time.perf_counter()
    seen, failures, n = set(), [], 0
    with open(path, encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            n += 1
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                failures.append((line_no, "parse"))
                continue
            msgs = row.get("messages")
            if not isinstance(msgs, list) or not msgs:
                failures.append((line_no, "fields"))
                continue
            roles = [m.get("role") for m in msgs]
            if any(r not in ("system", "user", "assistant") for r in roles):
                failures.append((line_no, "roles"))
            if any(not str(m.get("content", "")).strip() for m in msgs):
                failures.append((line_no, "content"))
            alternates = all(a != b for a, b in zip(roles, roles[1:], strict=False))
            if "assistant" not in roles or not alternates:
                failures.append((line_no, "structure"))
            ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
            if len(ids) > spec.sequence_len:
                failures.append((line_no, "length"))
            key = " ".join("\n".join(m["content"] for m in msgs).lower().split())
            if key in seen:
                failures.append((line_no, "duplicate"))
            seen.add(key)
            text = "\n".join(m["content"] for m in msgs)
            if any(p.search(text) for p in PII):
                failures.append((line_no, "pii"))
    return {"seconds": time.perf_counter() - started, "examples": n}


def measure(which: str, path: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; add its peak RSS."""
    code = (f"import json,resource,sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
            f"import data_gate as b; r = b.run_{which}(__import__('pathlib').Path({str(path)!r}));"
            "r['peak_mib'] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss +"
            " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024;"
            "print('RESULT', json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"{which} failed:\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--baseline-max", type=int, default=100_000,
                        help="largest size the (slow) baseline runs at")
    args = parser.parse_args()
    folder = ROOT / ".llmops" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'size':>9} {'gate ex/s':>10} {'gate s':>7} {'gate MiB':>8} "
          f"{'base ex/s':>10} {'base s':>7} {'base MiB':>8} {'ratio':>6}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for size in (int(s) for s in args.sizes.split(",")):
        path = folder / f"chat-{size}.jsonl"
        if not path.is_file():
            generate(path, size)
        gate = measure("llmops", path)
        base = measure("baseline", path) if size <= args.baseline_max else None
        g_rate = gate["examples"] / gate["seconds"]
        row = f"{size:>9} {g_rate:>10.0f} {gate['seconds']:>7.1f} {gate['peak_mib']:>8.0f}"
        if base:
            b_rate = base["examples"] / base["seconds"]
            row += (f" {b_rate:>10.0f} {base['seconds']:>7.1f} {base['peak_mib']:>8.0f}"
                    f" {g_rate / b_rate:>6.2f}")
        print(row, flush=True)


if __name__ == "__main__":
    main()
