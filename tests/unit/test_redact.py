"""One redaction at every exit: remembered secrets, URI credentials, credential shapes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
