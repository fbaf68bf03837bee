"""A real Prometheus for tests (Debian's `prometheus` package, which
scripts/setup-ci-tools.sh installs), scraping once a second a metrics endpoint the test
controls: vLLM's series (http_requests_total by status, the TTFT and request latency
histograms) per version, labelled as deploy/monitoring/scrape-config.yml labels the pods.
Only the values are the test's; the storage, scraping, rate() and histogram_quantile()
are Prometheus' own."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from mlflow_server import free_port

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Version:
    """What one version's pods report, from now on: requests a second, the share of them
    answered 5xx, and the TTFT and latency every request takes."""

    rps: float = 20.0
    error_share: float = 0.0
    ttft_s: float = 0.2
    latency_s: float = 2.0
    ok: float = 0.0  # counters so far
    errors: float = 0.0


@dataclass
class VllmMetrics:
    """The /metrics of a Deployment's pods, one series set per version."""

    namespace: str
    name: str  # app.kubernetes.io/name
    model: str
    versions: dict[str, Version] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def text(self) -> str:
        with self.lock:
            now = time.monotonic()
            dt, self.last = now - self.last, now
            lines = []
            for version, v in self.versions.items():
                new = v.rps * dt
                v.errors += new * v.error_share
                v.ok += new * (1 - v.error_share)
                labels = (f'namespace="{self.namespace}",app_kubernetes_io_name="{self.name}",'
                          f'llmops_model="{self.model}",llmops_version="{version}"')
                api = f'{labels},handler="/v1/chat/completions",method="POST"'
                lines += [f'http_requests_total{{{api},status="2xx"}} {v.ok}',
                          f'http_requests_total{{{api},status="5xx"}} {v.errors}']
                count = v.ok + v.errors
                for metric, seconds in (("vllm:time_to_first_token_seconds", v.ttft_s),
                                        ("vllm:e2e_request_latency_seconds", v.latency_s)):
                    for le in BUCKETS:
                        lines.append(f'{metric}_bucket{{{labels},le="{le}"}} '
                                     f'{count if seconds <= le else 0}')
                    lines += [f'{metric}_bucket{{{labels},le="+Inf"}} {count}',
                              f"{metric}_count{{{labels}}} {count}",
                              f"{metric}_sum{{{labels}}} {count * seconds}"]
            return "\n".join(lines) + "\n"


class PrometheusServer:
    """`prometheus` on a free port, scraping `metrics` every second."""

    def __init__(self, root: Path, metrics: VllmMetrics) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (Debian's prometheus package): "
                               "run `bash scripts/setup-ci-tools.sh`")
        self.binary, self.root, self.metrics = binary, root, metrics
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exporter: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> PrometheusServer:
        metrics = self.metrics

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = metrics.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.exporter.serve_forever, daemon=True).start()
        target = f"127.0.0.1:{self.exporter.server_address[1]}"
        config = self.root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: llmops-vllm\n"
            "    honor_labels: true  # the pods' labels, as the scrape config relabels them\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.start()
        return self

    def start(self) -> None:
        log = open(self.root / "prometheus.log", "ab")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: "
                                   + (self.root / "prometheus.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready; see {self.root}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if self.exporter is not None:
            self.exporter.shutdown()
