"""A node simulator for the test control plane (standard library only), in the manner of KWOK.

It registers nodes that advertise `nvidia.com/gpu` capacity, keeps their Lease and Ready
condition fresh, and plays the kubelet for every pod the scheduler binds to them: the pod
becomes Running and Ready without any container running, and a deleted pod is finalised.
No pod can answer on its IP: there is no container runtime here.

A pod stays Running but not Ready (a rollout that never becomes ready) when it carries the
annotation `fake.kubelet/ready: "false"`, or when its labels match a rule in the file named by
`--unready-rules` (a JSON list of label maps, re-read on every pod event), so a test can make
one version of a Deployment fail without touching the product's manifests.

Usage: python fakekubelet.py --server URL --token-file F [--nodes 1] [--gpus 8] [--labels JSON]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

UNREADY_ANNOTATION = "fake.kubelet/ready"
CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}


def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.datetime.now(datetime.UTC).strftime(fmt)


class Api:
    """A tiny client of the API server: JSON requests with a bearer token, and watches."""

    def __init__(self, server: str, token: str) -> None:
        url = urllib.parse.urlparse(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.token = token
        self.context = ssl._create_unverified_context()  # the test server's own certificate
        self.local = threading.local()

    def _connection(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        for _ in range(5):
            conn = getattr(self.local, "conn", None) or self._connection(30)
            self.local.conn = conn
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                time.sleep(0.5)
        raise RuntimeError(f"{method} {path}: the API server did not answer")

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        conn = self._connection(None)
        conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"watch {path}: {response.status}")
        buffer = b""
        while chunk := response.read1(65536):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)


def node_status(gpus: int | None) -> dict[str, Any]:
    """A Ready node's status; with `gpus`, its capacity too (only on registration, so that
    heartbeats do not rewrite it)."""
    stamp = _now()
    conditions = [{"type": kind, "status": status, "reason": reason,
                   "lastHeartbeatTime": stamp}
                  for kind, status, reason in (
                      ("Ready", "True", "KubeletReady"),
                      ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                      ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                      ("PIDPressure", "False", "KubeletHasSufficientPID"),
                      ("NetworkUnavailable", "False", "RouteCreated"))]
    status: dict[str, Any] = {
        "conditions": conditions, "phase": "Running",
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                     "kubeletVersion": "v1.20.2-sim", "kubeProxyVersion": "v1.20.2-sim",
                     "containerRuntimeVersion": "sim://0", "kernelVersion": "", "osImage": "",
                     "machineID": "", "systemUUID": "", "bootID": ""}}
    if gpus is not None:
        for condition in conditions:
            condition["lastTransitionTime"] = stamp
        capacity = {**CAPACITY, "nvidia.com/gpu": str(gpus)}
        status["capacity"] = status["allocatable"] = capacity
    return status


class Simulator:
    def __init__(self, api: Api, nodes: list[str], gpus: int, labels: dict[str, str],
                 rules: Path | None) -> None:
        self.api, self.nodes, self.gpus, self.rules = api, nodes, gpus, rules
        self.labels = labels
        self.next_ip = 1
        self.lock = threading.Lock()

    def register(self) -> None:
        for name in self.nodes:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "nvidia.com/gpu.present": "true",
                        "llmops.test/simulated": "true", **self.labels}},
                    "spec": {}, "status": node_status(self.gpus)}
            code, answer = self.api.request("POST", "/api/v1/nodes", body)
            if code not in (201, 409):
                raise RuntimeError(f"registering node {name}: {code} {answer}")
            self.heartbeat(name, register=True)

    def heartbeat(self, name: str, register: bool = False) -> None:
        status = node_status(self.gpus if register else None)
        self.api.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status},
                         "application/strategic-merge-patch+json")
        leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _now(True)}
        code, _ = self.api.request("PATCH", f"{leases}/{name}", {"spec": spec},
                                   "application/merge-patch+json")
        if code == 404:
            self.api.request("POST", leases, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec})

    def keep_alive(self) -> None:
        while True:
            time.sleep(10)
            for name in self.nodes:
                try:
                    self.heartbeat(name)
                except Exception as exc:  # a missed heartbeat is retried in 10 s
                    print(f"heartbeat {name}: {exc}", file=sys.stderr, flush=True)

    def wants_ready(self, meta: dict[str, Any]) -> bool:
        if (meta.get("annotations") or {}).get(UNREADY_ANNOTATION) == "false":
            return False
        labels = meta.get("labels") or {}
        try:
            rules = json.loads(self.rules.read_text()) if self.rules else []
        except (OSError, ValueError):
            rules = []
        return not any(all(labels.get(k) == v for k, v in rule.items()) for rule in rules)

    def play(self, pod: dict[str, Any]) -> None:
        meta, spec, old = pod["metadata"], pod["spec"], pod.get("status") or {}
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            self.api.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                              "gracePeriodSeconds": 0,
                                              "preconditions": {"uid": meta["uid"]}})
            return
        ready = self.wants_ready(meta)
        flag = "True" if ready else "False"
        current = {c["type"]: c.get("status") for c in old.get("conditions", [])}
        if old.get("phase") == "Running" and current.get("Ready") == flag:
            return
        stamp = _now()
        with self.lock:
            self.next_ip += 1
            ip = old.get("podIP") or f"10.244.{self.next_ip // 250}.{self.next_ip % 250 + 1}"
        containers = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                       "ready": ready, "restartCount": 0, "started": True,
                       "containerID": f"sim://{meta['uid']}-{c['name']}",
                       "state": {"running": {"startedAt": stamp}}}
                      for c in spec.get("containers", [])]
        status = {"phase": "Running", "hostIP": "127.0.0.1", "podIP": ip,
                  "podIPs": [{"ip": ip}], "startTime": old.get("startTime") or stamp,
                  "conditions": [{"type": kind, "status": value, "lastTransitionTime": stamp}
                                 for kind, value in (("Initialized", "True"), ("Ready", flag),
                                                     ("ContainersReady", flag),
                                                     ("PodScheduled", "True"))],
                  "containerStatuses": containers}
        self.api.request("PATCH", f"{path}/status", {"status": status},
                         "application/merge-patch+json")

    def follow(self, node: str) -> None:
        """List, then watch, the pods bound to `node`; start over when the watch ends."""
        selector = urllib.parse.quote(f"spec.nodeName={node}")
        while True:
            try:
                _, listed = self.api.request("GET", f"/api/v1/pods?fieldSelector={selector}")
                for pod in listed["items"]:
                    self.play(pod)
                version = listed["metadata"]["resourceVersion"]
                for event in self.api.watch(f"/api/v1/pods?watch=1&fieldSelector={selector}"
                                            f"&resourceVersion={version}"):
                    if event["type"] == "ERROR":
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.play(event["object"])
            except Exception as exc:  # the API server restarts, a watch expires: re-list
                print(f"pods of {node}: {exc}", file=sys.stderr, flush=True)
                time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--labels", type=json.loads, default={},
                        help='extra node labels, JSON: {"nvidia.com/gpu.product": "…"}')
    parser.add_argument("--unready-rules", type=Path)
    args = parser.parse_args()
    api = Api(args.server, args.token_file.read_text().strip())
    sim = Simulator(api, [f"gpu-node-{i}" for i in range(args.nodes)], args.gpus,
                    args.labels, args.unready_rules)
    sim.register()
    for node in sim.nodes:
        threading.Thread(target=sim.follow, args=(node,), daemon=True).start()
    print(f"simulating {sim.nodes} with {args.gpus} GPUs each", flush=True)
    sim.keep_alive()


if __name__ == "__main__":
    main()
