"""What signing adds to registering and deploying a version: model-signing's sign and
verify of a version's folder, against the manifest check every deploy already ran
(`digests.verify_manifest`, sha256 of every file), in the same run on the same folder.

The folder: an adapter-sized file and a merged-weights-sized file of random bytes (the
sizes of support-bot's: `--adapter-mb`, `--weights-mb`), with a manifest, as a version
ships them.

    .venv/bin/python benchmarks/signing.py [--weights-mb 270] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from llmops.digests import verify_manifest, write_manifest
from llmops.signatures import Signer, Trusted, ensure_local_key, local_key_paths, sign, verify


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter-mb", type=int, default=19)
    parser.add_argument("--weights-mb", type=int, default=270)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "version"
        (folder / "merged").mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(args.adapter_mb << 20))
        (folder / "merged" / "model.safetensors").write_bytes(os.urandom(args.weights_mb << 20))
        digest = write_manifest(folder)
        key = ensure_local_key(Path(tmp))
        trust = [Trusted(key=local_key_paths(Path(tmp))[1])]
        rows: dict[str, list[float]] = {"manifest check (baseline)": [], "sign": [],
                                        "signature check": []}
        for _ in range(args.rounds):  # alternating, so a machine's drift hits all three
            rows["manifest check (baseline)"].append(
                timed(lambda: verify_manifest(folder, digest)))
            rows["sign"].append(timed(lambda: sign(folder, Signer("key", key))))
            rows["signature check"].append(timed(lambda: verify(folder, trust, "bench")))
    base = statistics.median(rows["manifest check (baseline)"])
    size = args.adapter_mb + args.weights_mb
    print(f"{size} MB in 2 files, {args.rounds} rounds, median seconds (ratio to baseline):")
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"  {name:<26} {median:7.3f} s  {median / base:5.2f}x  "
              f"({size / median:.0f} MB/s)")


if __name__ == "__main__":
    main()
