"""One redaction at every exit: remembered secrets, URI credentials, credential shapes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops import redact as r
from llmops.config.settings import Settings


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    r.forget_all()
    yield
    r.forget_all()


@pytest.mark.parametrize("name,secret", [
    ("GITLAB_TOKEN", True), ("LLMOPS_REGISTRY_TOKEN", True), ("wandb_key", True),
    ("passwd", True), ("credentials", True), ("private_key", True), ("db-password", True),
    ("MLFLOW_TRACKING_PASSWORD", True), ("api_key", True), ("apikey", True),
    ("tokenizer_type", False), ("max_new_tokens", False), ("special_tokens", False),
    ("keyboard", False), ("author", False), ("MLFLOW_TRACKING_URI", False),
    ("PWD", False), ("OLDPWD", False), ("SSH_AUTH_SOCK", False),
])
def test_secret_names_are_whole_segments(name: str, secret: bool) -> None:
    assert r.is_secret_name(name) is secret


def test_uri_credentials_are_replaced_and_the_host_kept() -> None:
    text = "MLflow at http://ci:S3cr3tPw@mlflow.internal:5000/api failed (http://ci:S3cr3tPw@…)"
    out = r.redact(text)
    assert "S3cr3tPw" not in out and "ci:" not in out
    assert "http://[REDACTED]@mlflow.internal:5000/api" in out


@pytest.mark.parametrize("value", [
    "glpat-abcdefghijklmnopqrstu", "ghp_" + "a" * 36, "AKIAABCDEFGHIJKLMNOP",
    "sk-abcdefghijklmnopqrstuvwx", "-----BEGIN RSA PRIVATE KEY-----"])
def test_credential_shapes_are_redacted_anywhere(value: str) -> None:
    assert value not in r.redact(f"before {value} after")


def test_a_private_key_is_redacted_with_its_body() -> None:
    body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n" \
           "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFc"
    text = f"config: -----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\nnext"
    out = r.redact(text)
    assert "MIIE" not in out and "7onLRnrq0" not in out and "END RSA" not in out
    assert out.startswith("config: [REDACTED]") and out.endswith("next")


def test_the_settings_remember_the_environments_secrets() -> None:
    env = {"GITLAB_TOKEN": "plain-looking-1234", "LLMOPS_REGISTRY_TOKEN": "reg-987654",
           "MLFLOW_TRACKING_URI": "http://bot:Pw-0000xyz@host:5000", "HOME": "/home/me"}
    Settings.from_env(env)
    text = "a plain-looking-1234 b reg-987654 c Pw-0000xyz d /home/me"
    assert r.redact(text) == "a [REDACTED] b [REDACTED] c [REDACTED] d /home/me"


def test_the_working_directory_is_not_a_secret() -> None:
    """PWD is in every environment: remembered, it redacted every path printed."""
    Settings.from_env({"PWD": "/srv/checkout", "OLDPWD": "/home/me",
                       "SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1"})
    assert r.redact("report: /srv/checkout/.llmops/x.html") == \
        "report: /srv/checkout/.llmops/x.html"


def test_short_values_are_not_remembered() -> None:
    r.remember(["abc"])
    assert r.redact("abc abc") == "abc abc"


def test_subprocesses_get_only_the_secrets_they_need() -> None:
    env = {"PATH": "/bin", "GITLAB_TOKEN": "t1", "LLMOPS_REGISTRY_TOKEN": "t2",
           "MLFLOW_TRACKING_URI": "http://u:p@h", "MLFLOW_TRACKING_TOKEN": "t3",
           "HF_TOKEN": "t4", "SOME_PROXY": "http://u:pw@proxy:3128"}
    assert r.scrubbed_env(env) == {"PATH": "/bin"}
    kept = r.scrubbed_env(env, keep=("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"))
    assert set(kept) == {"PATH", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"}


def test_the_training_process_inherits_no_gitlab_or_registry_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.train.run import training_env

    monkeypatch.setenv("GITLAB_TOKEN", "glpat-should-not-pass-000000")
    monkeypatch.setenv("LLMOPS_REGISTRY_TOKEN", "registry-should-not-pass")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tracking-is-needed")
    env = training_env(0)
    assert "GITLAB_TOKEN" not in env and "LLMOPS_REGISTRY_TOKEN" not in env
    assert env["MLFLOW_TRACKING_TOKEN"] == "tracking-is-needed"


def test_nested_values_are_redacted_by_key_and_by_shape() -> None:
    out = r.redact_mapping({"a": {"wandb_key": "v1234567", "url": "https://u:pw12@h"},
                            "b": ["x", "https://u:pw12@h"], "n": 3, "flag": True})
    assert out == {"a": {"wandb_key": "[REDACTED]", "url": "https://[REDACTED]@h"},
                   "b": ["x", "https://[REDACTED]@h"], "n": 3, "flag": True}


def test_every_log_record_is_redacted_whichever_logger_writes_it(
        caplog: pytest.LogCaptureFixture) -> None:
    previous = logging.getLogRecordFactory()
    try:
        r.remember(["remembered-secret-value"])
        r.install_logging_filter()
        with caplog.at_level(logging.INFO):
            logging.getLogger("mlflow.some.module").info(
                "connecting to %s with %s", "http://u:pw1234@h", "remembered-secret-value")
        assert caplog.records[-1].getMessage() == \
            "connecting to http://[REDACTED]@h with [REDACTED]"
    finally:
        logging.setLogRecordFactory(previous)


def test_the_tracking_uri_s_credentials_move_to_mlflow_s_own_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow prints "View run at <tracking URI>" to stdout: the URI it knows must be clean."""
    from llmops.tracking import tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ci%40bot:p%3Aw0rd@mlflow.example:8443/x")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert tracking_uri() == "https://mlflow.example:8443/x"
    import os

    assert os.environ["MLFLOW_TRACKING_URI"] == "https://mlflow.example:8443/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ci@bot"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p:w0rd"


def test_what_is_printed_to_the_terminal_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    r.remember(["printed-secret-value"])
    stream = r.RedactingStream(sys.stdout)
    stream.write("🏃 View run at: http://u:pw99@h:5000/#/runs/1 printed-secret-value\n")
    stream.flush()
    assert capsys.readouterr().out == "🏃 View run at: http://[REDACTED]@h:5000/#/runs/1 " \
        "[REDACTED]\n"


@pytest.mark.parametrize("password", ["p@ss@w0rd", "x" * 300, "a@" + "y" * 300])
def test_a_uri_password_with_an_at_sign_or_over_256_characters_is_redacted_whole(
        password: str) -> None:
    text = f"clone https://bot:{password}@gitlab.example.com/ml/llmops.git failed"
    assert r.redact(text) == "clone https://[REDACTED]@gitlab.example.com/ml/llmops.git failed"
    assert password in r.uri_credentials(text)


def test_uri_redaction_stays_linear_on_hostile_text() -> None:
    """The user information is unbounded now (a password of any length): each attempt
    still ends at the authority's end, so a megabyte of near-URIs is one pass."""
    import time

    hostile = ["x://" + "a:" * 500_000, "x://" + "@" * 1_000_000 + "/", "a:" * 500_000,
               "a." * 500_000 + "@", "a.a.a://" * 125_000, ("x://" + "a-" * 999 + " ") * 500,
               "Bearer " * 150_000 + "@", "?private_token=&" * 60_000 + "@"]
    started = time.monotonic()
    for text in hostile:
        r.redact(text)
        r.uri_credentials(text)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("text,expected", [
    ("token glpat-aBcDeFgHiJkLmNoPqRsT.01.1a2b3c4d5 end", "token [REDACTED] end"),
    ("deploy gldt-aBcDeFgHiJkLmNoPqRsT12 end", "deploy [REDACTED] end"),
    ("job glcbt-64_aBcDeFgHiJkLmNoPqRsT end", "job [REDACTED] end"),
    ("hub hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH end", "hub [REDACTED] end"),
    ("GET https://gitlab.example.com/api/v4/projects?private_token=s3cr3t-v4lue&per_page=1",
     "GET https://gitlab.example.com/api/v4/projects?private_token=[REDACTED]&per_page=1"),
    ("GET /api/v4/jobs/1/artifacts?ref=main&job_token=abc123def456 HTTP/1.1",
     "GET /api/v4/jobs/1/artifacts?ref=main&job_token=[REDACTED] HTTP/1.1"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
     "Authorization: Bearer [REDACTED]"),
    ("-H 'authorization: bearer 0123456789abcdef0123' x",
     "-H 'authorization: bearer [REDACTED]' x"),
])
def test_gitlab_hub_and_bearer_tokens_are_recognised_by_shape(text: str, expected: str) -> None:
    """Not only when they come from the environment: a token read from a file, a config or
    another tool's output has the same shape."""
    assert r.redact(text) == expected


@pytest.mark.parametrize("text", [
    "the bearer of bad news", "bearer securities and bearer bonds", "hf_hub_download(repo)",
    "use ?private_token= in the URL", "max_new_tokens: 256", "glpat- is GitLab's prefix",
    "the HF_TOKEN variable", "Authorization: Bearer k"])
def test_ordinary_words_near_the_token_shapes_are_kept(text: str) -> None:
    assert r.redact(text) == text


def test_a_logged_exception_s_traceback_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect logs a failing flow's exception with its traceback (`logger.exception`): the
    handler that ships it to the API formats `exc_info`, which is no part of the message."""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("prefect.flow_runs.test-redaction")
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    previous = logging.getLogRecordFactory()
    secret, url = "remembered-secret-value", "https://u:pw1234@h"
    try:
        r.remember([secret])
        r.install_logging_filter()
        try:
            raise RuntimeError(f"push with {secret} to {url} failed")
        except RuntimeError:
            logger.exception("Encountered exception during execution")
    finally:
        logging.setLogRecordFactory(previous)
    out = stream.getvalue()
    assert "remembered-secret-value" not in out and "pw1234" not in out
    assert "RuntimeError: push with [REDACTED] to https://[REDACTED]@h failed" in out


def test_an_exception_keeps_its_type_unless_its_message_is_computed() -> None:
    """A failed command keeps its type (its arguments are redacted in place); a validation
    error computes its message from the input it refused: its redacted text stands in."""
    import subprocess

    import pydantic

    secret = "remembered-secret-value"
    r.remember([secret])
    failed = subprocess.CalledProcessError(1, ["git", "push", secret])
    assert r.redact_exception(failed) is failed and secret not in str(failed)

    class Port(pydantic.BaseModel):
        port: int

    try:
        Port(port=secret)  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        refused = exc
    clean = r.redact_exception(refused)
    assert isinstance(clean, r.RedactedError) and clean.__traceback__ is refused.__traceback__
    assert secret not in str(clean) and str(clean).startswith("ValidationError: 1 validation")
    assert "input_value='[REDACTED]'" in str(clean)


def test_the_history_file_carries_no_secret(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """history.jsonl is a CI artifact: a failure's reason quotes the errors it met."""
    from llmops.serve.history import History

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    r.remember(["remembered-secret-value"])
    secret_at_the_cut = "x" * 1990 + "remembered-secret-value"  # the reason is cut at 2000
    History("m", "staging").record(
        "1.0.0", "deploy", "failed",
        "pull from https://ci:pw1234@registry.example.com failed: remembered-secret-value",
        {"deployment": "m-1", "note": secret_at_the_cut})
    History("m", "staging").record("1.0.1", "deploy", "failed", secret_at_the_cut)
    text = History("m", "staging").path.read_text()
    assert "pw1234" not in text and "remembered-secret-value" not in text
    assert "remembered-sec" not in text  # nor the half of one that the cut left
    first, second = History("m", "staging").read()
    assert first["reason"] == "pull from https://[REDACTED]@registry.example.com failed: " \
        "[REDACTED]"
    assert first["deployment"] == "m-1" and second["reason"].endswith("[REDACTED]")
