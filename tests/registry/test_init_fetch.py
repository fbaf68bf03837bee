"""The init container's fetch, run as the pod runs it: the ConfigMap's files laid out under
a scripts folder, `python -m llmops.kubernetes.fetch` with only that folder on the path
(`-S`: not the installed package),
against the GitLab emulator (a test double)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from http.client import HTTPMessage
from pathlib import Path

import pytest
from gitlab_emulator import GitlabEmulator

from llmops.errors import StageFailed
from llmops.kubernetes.fetch import (
    SHIPPED,
    TokenRedirects,
    safe_relative,
    shipped_sources,
    shipped_trust,
    trust_items,
)
from llmops.registry.base import ModelVersion
from llmops.registry.gitlab import GitlabRegistry
from llmops.signatures import Trusted, local_key_paths

LINEAGE = {"base_model": "smollm2", "gate.passed": "true"}


@pytest.fixture()
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        yield gl


def scripts(tmp_path: Path, trust: list[Trusted] | None = None) -> Path:
    """The ConfigMap as the pod mounts it: the modules, and the trusted keys under trust/
    (default: the key registration signed with)."""
    root = tmp_path / "scripts"
    for key, source in shipped_sources().items():
        (root / SHIPPED[key]).parent.mkdir(parents=True, exist_ok=True)
        (root / SHIPPED[key]).write_text(source)
    if trust is None:
        public = local_key_paths(tmp_path / "state")[1]
        trust = [Trusted(key=public)] if public.is_file() else []
    data = shipped_trust(trust, root=str(root / "trust"))
    (root / "trust").mkdir(exist_ok=True)
    for item in trust_items(data):
        (root / item["path"]).write_text(data[item["key"]])
    return root


def registered(gl: GitlabEmulator, tmp_path: Path) -> tuple[GitlabRegistry, ModelVersion]:
    folder = tmp_path / "package"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    reg = GitlabRegistry(gl.url, "1", gl.state.api_token, retry_wait_s=0.01)
    return reg, reg.register("bot", folder, "run1", "1.4.0", LINEAGE)


def run_fetch(gl: GitlabEmulator, tmp_path: Path, digest: str,
              trust: list[Trusted] | None = None) -> subprocess.CompletedProcess[str]:
    """The pod's command: the pipeline image's Python (model-signing installed), the
    ConfigMap's folder first on the path, so its llmops modules are the ones that run."""
    root = scripts(tmp_path, trust)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(root),
           "TRUST_FILE": str(root / "trust" / "trust.json"),
           "REGISTRY_API": f"{gl.url}/api/v4/projects/1", "REGISTRY_TOKEN": gl.state.api_token,
           "MODEL": "bot", "VERSION": "1.4.0", "EXPECTED_DIGEST": digest,
           "MODEL_DIR": str(tmp_path / "models" / "adapter")}
    code = ("import llmops, runpy, sys; assert llmops.__file__.startswith(sys.argv[1]), "
            "llmops.__file__; sys.argv = sys.argv[:1]; "
            "runpy.run_module('llmops.kubernetes.fetch', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, str(root)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_the_shipped_module_fetches_and_verifies_a_version(emulator: GitlabEmulator,
                                                           tmp_path: Path) -> None:
    _, mv = registered(emulator, tmp_path)
    done = run_fetch(emulator, tmp_path, mv.digest)
    assert done.returncode == 0, done.stderr
    assert "verified 2 files, signed by key " in done.stdout
    out = tmp_path / "models" / "adapter"
    assert (out / "adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((out / "manifest.json").read_text())["files"]
    assert (out / "model.sig").is_file()


def test_a_version_signed_by_an_untrusted_key_leaves_nothing_to_serve(
        emulator: GitlabEmulator, tmp_path: Path) -> None:
    from signing_keys import fresh_public_pem

    _, mv = registered(emulator, tmp_path)
    other = tmp_path / "production.pub"
    other.write_bytes(fresh_public_pem())
    done = run_fetch(emulator, tmp_path, mv.digest, trust=[Trusted(key=other)])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "refusing to serve" in done.stderr and "signed by another key" in done.stderr
    assert list((tmp_path / "models").iterdir()) == []


def test_an_unsigned_version_leaves_nothing_to_serve(emulator: GitlabEmulator,
                                                     tmp_path: Path) -> None:
    """A version registered before signing existed (or whose signature was removed from
    the registry) is refused, not served unchecked."""
    _, mv = registered(emulator, tmp_path)
    del emulator.state.versions[int(mv.registry_id)].files["model.sig"]
    done = run_fetch(emulator, tmp_path, mv.digest)
    assert done.returncode == 1 and "no model.sig" in done.stderr, done.stderr
    assert list((tmp_path / "models").iterdir()) == []


def test_a_pod_whose_configmap_trusts_nobody_serves_nothing(emulator: GitlabEmulator,
                                                            tmp_path: Path) -> None:
    _, mv = registered(emulator, tmp_path)
    done = run_fetch(emulator, tmp_path, mv.digest, trust=[])
    assert done.returncode == 1 and "names nobody" in done.stderr, done.stderr


def test_a_wrong_digest_leaves_nothing_to_serve(emulator: GitlabEmulator,
                                               tmp_path: Path) -> None:
    registered(emulator, tmp_path)
    done = run_fetch(emulator, tmp_path, "sha256:" + "0" * 64)
    assert done.returncode == 1 and "refusing to serve" in done.stderr
    assert not (tmp_path / "models" / "adapter").exists()
    assert list((tmp_path / "models").iterdir()) == []  # no staging folder left behind


def test_an_unknown_version_is_reported_not_raised(emulator: GitlabEmulator,
                                                   tmp_path: Path) -> None:
    done = run_fetch(emulator, tmp_path, "sha256:" + "0" * 64)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "registered-models/alias" in done.stderr and "404" in done.stderr


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/passwd", "a\\\\..\\\\b", "x/../../y"])
def test_paths_that_leave_the_folder_are_refused(rel: str) -> None:
    with pytest.raises(StageFailed, match="outside the model folder"):
        safe_relative(rel)


def test_a_redirected_download_arrives_and_the_token_stays_behind(tmp_path: Path) -> None:
    """GitLab with object storage answers a file GET with a 302 to a pre-signed URL on
    another origin: the files come from there and verify, and the token never goes there
    (urllib alone copies `Authorization` to any redirect target)."""
    with GitlabEmulator(object_storage="127.0.0.1", proxy_download=True) as gl:
        _, mv = registered(gl, tmp_path)
        gl.state.proxy_download = False
        done = run_fetch(gl, tmp_path, mv.digest)
    assert done.returncode == 0, done.stderr
    assert "verified 2 files" in done.stdout
    # the manifest, two files and the signature
    assert gl.store is not None and len(gl.store.seen) == 4
    assert gl.store.tokens_seen(gl.state.api_token) == []


def test_a_redirect_to_plain_http_on_another_host_is_refused(tmp_path: Path) -> None:
    with GitlabEmulator(object_storage="localhost", proxy_download=True) as gl:
        _, mv = registered(gl, tmp_path)
        gl.state.proxy_download = False
        done = run_fetch(gl, tmp_path, mv.digest)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "refusing to serve" in done.stderr and "plain http to another host" in done.stderr
    assert "X-Amz-Signature" not in done.stderr  # a pre-signed URL's query is a credential
    assert gl.store is not None and gl.store.seen == []
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize(("target", "keeps"), [("http://127.0.0.1:8/b", True),
                                               ("http://127.0.0.1:9/b", False),
                                               ("https://127.0.0.1:8/b", False)])
def test_the_token_follows_a_redirect_to_its_own_origin_only(target: str, keeps: bool) -> None:
    first = "http://127.0.0.1:8/a"
    request = urllib.request.Request(first)
    request.add_unredirected_header("Authorization", "Bearer tok")
    new = TokenRedirects(first, "tok").redirect_request(
        request, io.BytesIO(), 302, "Found", HTTPMessage(), target)
    assert new is not None and new.full_url == target
    assert new.get_header("Authorization") == ("Bearer tok" if keeps else None)
