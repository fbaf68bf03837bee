#!/usr/bin/env python
"""Screenshots of the MLflow UI as a team sees it, taken by headless Chromium.

Starts `mlflow server` on a store (the embedded `.llmops/mlflow.db` by default), opens the
experiment's runs page, the compare view of its two latest releases (top-level runs) and
the latest one's logged model, saves `runs.png`, `compare.png` and `model.png` (and the
rendered DOM as `.html`) under `--out`, and checks the rendered pages for the releases'
names, links to their models (or registered versions), their datasets, and the model's source run.
Prints one JSON summary; exits 1 when something expected is missing from a page.

    .venv/bin/python scripts/mlflow_screenshots.py --experiment support-bot --out shots/

Needs `chromium` (scripts/setup-ci-tools.sh installs it).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("mlflow_screenshots: no chromium: run scripts/setup-ci-tools.sh "
             "(or apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mlflow_screenshots: mlflow server exited; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    stop(proc)
    sys.exit(f"mlflow_screenshots: mlflow server did not answer in 90 s; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def what_to_expect(store: str, experiment: str) -> dict[str, Any]:
    """The experiment, its two latest top-level runs, their logged models and datasets."""
    import mlflow

    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"mlflow_screenshots: no experiment {experiment!r} in {store}")
    runs = [r for r in client.search_runs([exp.experiment_id],
                                          order_by=["attributes.start_time DESC"],
                                          max_results=200)
            if "mlflow.parentRunId" not in r.data.tags][:2]
    if not runs:
        sys.exit(f"mlflow_screenshots: experiment {experiment!r} has no runs")
    model_ids = [o.model_id for r in runs for o in (r.outputs.model_outputs if r.outputs else [])]
    logged = [client.get_logged_model(m) for m in model_ids]
    models = sorted({m.name for m in logged})
    # The Models column links a registered model to its version, else to the logged model.
    model_links = []
    for m in logged:
        versions = json.loads(m.tags.get("mlflow.modelVersions") or "[]")
        model_links.append(f"models/{versions[-1]['name']}/versions/{versions[-1]['version']}"
                           if versions else f"models/{m.model_id}")
    datasets = sorted({d.dataset.name for r in runs for d in r.inputs.dataset_inputs})
    return {"experiment_id": exp.experiment_id, "runs": [r.info.run_id for r in runs],
            "run_names": [r.info.run_name for r in runs], "models": models,
            "model_ids": model_ids, "model_links": model_links, "datasets": datasets}


def render(browser: str, url: str, png: Path, size: str, budget_ms: int) -> str:
    """Screenshot `url` into `png`; the DOM Chromium rendered, as text with its links."""
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-dev-shm-usage", f"--window-size={size}",
             f"--virtual-time-budget={budget_ms}", "--run-all-compositor-stages-before-draw"]
    subprocess.run([*flags, f"--screenshot={png}", url], check=True, capture_output=True,
                   timeout=180)
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=180).stdout
    png.with_suffix(".html").write_text(dom)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    links = " ".join(re.findall(r'href="([^"]*)"', text))
    return html.unescape(re.sub(r"<[^>]+>", " ", text) + " " + links)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend-store-uri",
                    default=f"sqlite:///{ROOT / '.llmops' / 'mlflow.db'}")
    ap.add_argument("--experiment", required=True, help="the model's name")
    ap.add_argument("--out", type=Path, default=ROOT / ".llmops" / "screenshots")
    ap.add_argument("--window-size", default="2000,1300")
    ap.add_argument("--budget-ms", type=int, default=20000,
                    help="Chromium's virtual time for the React app to load and render")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    browser = chromium()
    want = what_to_expect(args.backend_store_uri, args.experiment)
    port = free_port()
    server = start_server(args.backend_store_uri, port, args.out / "mlflow-server.log")
    base = f"http://127.0.0.1:{port}/#"
    exp = want["experiment_id"]
    pages = {"runs": f"{base}/experiments/{exp}/runs"}
    if len(want["runs"]) == 2:
        pages["compare"] = (f"{base}/compare-runs?runs={json.dumps(want['runs'])}"
                            f"&experiments={json.dumps([exp])}").replace(" ", "")
    if want["model_ids"]:  # the latest release's logged model: its metrics and versions
        pages["model"] = f"{base}/experiments/{exp}/models/{want['model_ids'][0]}"
    summary: dict[str, Any] = {"expected": want, "pages": {}}
    try:
        for page, url in pages.items():
            png = args.out / f"{page}.png"
            text = render(browser, url, png, args.window_size, args.budget_ms)
            expect = {
                # each release, a link to its logged model, its datasets
                "runs": [*want["run_names"], *want["model_links"], *want["datasets"]],
                "compare": want["run_names"],
                "model": [want["model_ids"][0] if want["model_ids"] else "",
                          want["run_names"][0]],
            }[page]
            summary["pages"][page] = {
                "url": url, "screenshot": str(png),
                "found": [t for t in expect if t in text],
                "missing": [t for t in expect if t not in text],
                "says_traces": "Traces" in text and "Runs" not in text,
            }
    finally:
        stop(server)
    print(json.dumps(summary, indent=2))
    return 1 if any(p["missing"] for p in summary["pages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
