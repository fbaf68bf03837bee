"""A real Kubernetes v1.20 control plane on 127.0.0.1 for tests (a test harness, not part
of the product): etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the
binaries `scripts/k8s-sim/build.sh` builds once per machine, and `fakekubelet.py` for the
nodes (GPU capacity, pods Running/Ready without a container runtime).

Everything is real except the nodes: apply, server-side field managers, the Deployment
controller's ReplicaSets and progress deadlines, the scheduler's GPU accounting,
`rollout status`/`undo`. Nothing answers on a pod's IP.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "k8s-sim" / "build.sh"


def build() -> Path:
    """The binaries' folder (built on first use: about 10 minutes on 2 cores)."""
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD} failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    bin: Path
    run: Path
    gpus: int = 8  # per node
    nodes: int = 1
    labels: dict[str, str] = field(default_factory=dict)  # every node's extra labels
    server: str = ""
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.run / "kubeconfig"

    @property
    def token(self) -> str:
        return (self.run / "token").read_text().strip()

    def env(self) -> dict[str, str]:
        """An environment whose kubectl is 1.20's and whose cluster is this one."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin / "kubectl"), *args], capture_output=True,
                              text=True, env=self.env(), input=stdin, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def keep_unready(self, *labels: dict[str, str]) -> None:
        """Pods with these labels stay Running but never Ready (a rollout that fails)."""
        (self.run / "unready.json").write_text(json.dumps(list(labels)))

    def _start(self, name: str, *cmd: str) -> None:
        log = open(self.run / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (the child's)
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def _wait(self, what: str, check: object, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    tail = (self.run / "logs" / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
            try:
                if check():  # type: ignore[operator]
                    return
            except (httpx.HTTPError, OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.run / 'logs'}")

    def start(self) -> Cluster:
        (self.run / "logs").mkdir(parents=True, exist_ok=True)
        pki = self.run / "pki"
        pki.mkdir(exist_ok=True)
        token = secrets.token_hex(24)
        (self.run / "token").write_text(token)
        (pki / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        key, pub = pki / "sa.key", pki / "sa.pub"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                           capture_output=True)
            subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                           check=True, capture_output=True)
        etcd, peer, api = _free_port(), _free_port(), _free_port()
        self.server = f"https://127.0.0.1:{api}"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "sim", "cluster": {"server": self.server,
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "admin"}}],
            "current-context": "sim"}))
        self.kubeconfig.chmod(0o600)
        b = self.bin
        self._start("etcd", str(b / "etcd"), "--name", "sim", "--data-dir",
                    str(self.run / "etcd"),
                    "--listen-client-urls", f"http://127.0.0.1:{etcd}",
                    "--advertise-client-urls", f"http://127.0.0.1:{etcd}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", f"sim=http://127.0.0.1:{peer}",
                    "--listen-metrics-urls", "", "--unsafe-no-fsync")
        self._wait("etcd", lambda: httpx.get(f"http://127.0.0.1:{etcd}/health",
                                             timeout=2).status_code == 200, 60)
        self._start("kube-apiserver", str(b / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd}", "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1", f"--secure-port={api}",
                    "--insecure-port=0", f"--cert-dir={pki}",
                    f"--token-auth-file={pki / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
                    f"--service-account-key-file={pub}",
                    f"--service-account-signing-key-file={key}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    # Only one apiserver, on loopback: no Endpoints reconciliation to do.
                    "--endpoint-reconciler-type=none", "--profiling=false", "-v=1")
        headers = {"Authorization": f"Bearer {token}"}
        self._wait("kube-apiserver", lambda: httpx.get(
            f"{self.server}/readyz", headers=headers, verify=False,
            timeout=2).status_code == 200, 90)
        self._start("kube-controller-manager", str(b / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--port=0",
                    "--secure-port=0", f"--service-account-private-key-file={key}",
                    f"--root-ca-file={pki / 'apiserver.crt'}", "--controllers=*",
                    "--profiling=false", "-v=1")
        self._start("kube-scheduler", str(b / "kube-scheduler"),
                    f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--port=0",
                    "--secure-port=0", "--profiling=false", "-v=1")
        (self.run / "unready.json").write_text("[]")
        self._start("fakekubelet", sys.executable, "-u", str(Path(__file__).with_name(
                    "fakekubelet.py")), "--server", self.server, "--token-file",
                    str(self.run / "token"), "--nodes", str(self.nodes), "--gpus",
                    str(self.gpus), "--labels", json.dumps(self.labels),
                    "--unready-rules", str(self.run / "unready.json"))
        self._wait("Ready nodes", lambda: self.kubectl(
            "get", "nodes", "--no-headers", check=False).stdout.count(" Ready ")
            == self.nodes, 90)
        # Kubernetes 1.20 admits pods only once the namespace's `default` ServiceAccount
        # has its token Secret.
        self._wait("the default ServiceAccount's token", lambda: "default-token" in
                   self.kubectl("-n", "default", "get", "secrets", "-o", "name",
                                check=False).stdout, 90)
        return self

    def namespace(self, name: str) -> None:
        """Create a namespace and wait until pods can be created in it."""
        self.kubectl("create", "namespace", name)
        self._wait(f"namespace {name}'s ServiceAccount token", lambda: "default-token" in
                   self.kubectl("-n", name, "get", "secrets", "-o", "name",
                                check=False).stdout, 90)

    def stop(self) -> None:
        """Newest first: SIGTERM, then SIGKILL after 10 s."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()
