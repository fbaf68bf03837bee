"""MLflow's registry on an embedded store: registration is idempotent, fails loudly on a
store error, and numbers concurrent local releases of one model apart."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops.registry.base import MlflowRegistry

LINEAGE = {"base_model": "smollm2", "gate.passed": "true"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One SQLite store for the module (creating one costs seconds); each test uses its own
    model name."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("LLMOPS_HOME", str(root / "state"))
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("registry", (root / "artifacts").as_uri())
        yield client, experiment


def a_run(store: Any, tmp_path: Path, payload: bytes) -> tuple[str, Path]:
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    folder = tmp_path / run_id
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return run_id, folder


def versions(store: Any, name: str) -> list[str]:
    return sorted(mv.tags["version"] for mv in store[0].search_model_versions(f"name='{name}'"))


@pytest.mark.parametrize("asked", [None, "1.0.0"])
def test_a_retried_registration_returns_the_version_it_made(
        store: Any, tmp_path: Path, asked: str | None) -> None:
    name = f"retried-{asked}"
    run_id, folder = a_run(store, tmp_path, b"weights")
    first = MlflowRegistry().register(name, folder, run_id, asked, LINEAGE)
    # Prefect retries the task when the first attempt's answer is lost.
    again = MlflowRegistry().register(name, folder, run_id, asked, LINEAGE)
    assert (again.version, again.registry_id) == (first.version, first.registry_id)
    assert versions(store, name) == [asked or "0.1.0"]


def test_a_lost_answer_to_the_create_is_looked_up_not_repeated(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "lost-answer"
    run_id, folder = a_run(store, tmp_path, b"weights")
    reg = MlflowRegistry()
    create = reg.client.create_model_version

    def made_then_lost(*args: Any, **kw: Any) -> Any:
        create(*args, **kw)
        raise ConnectionError("the server closed the connection before answering")

    monkeypatch.setattr(reg.client, "create_model_version", made_then_lost)
    mv = reg.register(name, folder, run_id, None, LINEAGE)
    assert mv.version == "0.1.0" and versions(store, name) == ["0.1.0"]
    assert str(store[0].get_model_version_by_alias(name, "candidate").version) == mv.registry_id


def test_a_search_error_is_raised_not_read_as_no_versions(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    name = "search-error"
    MlflowRegistry().register(name, *reversed(a_run(store, tmp_path, b"one")), None, LINEAGE)
    run_id, folder = a_run(store, tmp_path, b"two")
    reg = MlflowRegistry()

    def unavailable(*args: Any, **kw: Any) -> Any:
        raise MlflowException("the registry store is unavailable")

    monkeypatch.setattr(reg.client, "search_model_versions", unavailable)
    with pytest.raises(MlflowException, match="unavailable"):
        reg.register(name, folder, run_id, None, LINEAGE)
    assert versions(store, name) == ["0.1.0"]  # no second 0.1.0


def test_two_concurrent_local_releases_get_distinct_versions(
        store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    name = "concurrent"
    runs = [a_run(store, tmp_path, payload) for payload in (b"a", b"b")]
    # Hold each upload until both releases have reached it (or a second has passed): without
    # a lock both have read the versions by then and picked the same next patch.
    arrived = threading.Barrier(2, timeout=1)
    upload = mlflow.MlflowClient.log_artifacts

    def meet_then_upload(self: Any, *args: Any, **kw: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            arrived.wait()
        return upload(self, *args, **kw)

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifacts", meet_then_upload)
    made: list[str] = []
    errors: list[BaseException] = []

    def release(run_id: str, folder: Path) -> None:
        try:
            made.append(MlflowRegistry().register(name, folder, run_id, None, LINEAGE).version)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=release, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(made) == ["0.1.0", "0.1.1"] and versions(store, name) == ["0.1.0", "0.1.1"]


def test_a_create_answer_lost_on_the_wire_leaves_one_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client retries every method, POST included, when a connection drops before
    the answer: the server then makes the version twice. Through a real server and a proxy
    that loses the first answer to `model-versions/create`, registration still leaves one."""
    import mlflow
    from mlflow_server import LosingProxy, mlflow_server

    name = "lost-on-the-wire"
    with (mlflow_server(tmp_path) as (url, _, artifacts),
          LosingProxy(url, "/model-versions/create") as proxy):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        client = mlflow.MlflowClient(proxy.url)
        run_id = client.create_run(client.create_experiment("lost", artifacts.as_uri())
                                   ).info.run_id
        folder = tmp_path / "adapter"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        mv = MlflowRegistry().register(name, folder, run_id, None, LINEAGE)
        creates = [s for s in proxy.seen if s.endswith("/model-versions/create")]
        assert len(creates) == 2, proxy.seen  # the client did retry the lost POST
        made = mlflow.MlflowClient(url).search_model_versions(f"name='{name}'")
        assert [(m.tags["version"], str(m.version)) for m in made] == [("0.1.0",
                                                                         mv.registry_id)]
        alias = mlflow.MlflowClient(url).get_model_version_by_alias(name, "candidate")
        assert str(alias.version) == mv.registry_id
