"""`extra_args` cannot turn on remote code or move the server's address (nor smuggle either
in through a vLLM config file, nor put an API key in git): refused when deploy/<env>.yml
loads, naming the file, line, key and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.config import DeployConfig, ServeSettings
from llmops.config.yamlfile import load_model_file
from llmops.errors import UsageError

REFUSED = [
    (["--trust-remote-code"], "--trust-remote-code"),
    (["--trust_remote_code"], "--trust-remote-code"),  # vLLM reads _ as -
    (["--trust-remote"], "--trust-remote-code"),  # argparse takes a unique prefix
    (["--host", "0.0.0.0"], "--host"),
    (["--host=0.0.0.0"], "--host"),
    (["--config", "more.yaml"], "--config"),
    (["--api-key", "sk-123"], "--api-key"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy" / "local.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("args", "option"), REFUSED)
def test_serve_extra_args_refuse_remote_code_and_the_host(
        tmp_path: Path, args: list[str], option: str) -> None:
    listed = "".join(f"    - {a!r}\n" for a in args)
    path = write(tmp_path, f"target: local\nserve:\n  max_num_seqs: 4\n  extra_args:\n{listed}")
    with pytest.raises(UsageError) as exc:
        load_model_file(path, DeployConfig)
    message = str(exc.value)
    assert f"{path}:4: serve.extra_args:" in message  # the file, line and key
    assert f"extra_args[0]: {args[0]!r} ({option}) is refused; remove it: " in message


def test_per_model_extra_args_are_refused_when_the_file_loads(tmp_path: Path) -> None:
    """Model overrides are otherwise validated only when used; these not."""
    path = write(tmp_path, "target: local\nmodels:\n  tiny:\n    max_model_len: 512\n"
                           "    extra_args: [--max-loras, '2', --host=0.0.0.0]\n")
    with pytest.raises(UsageError, match=r"models\.tiny\.extra_args\[2\]: '--host=0\.0\.0\.0' "
                                         r"\(--host\) is refused"):
        load_model_file(path, DeployConfig)


def test_other_arguments_pass() -> None:
    args = ["--max-loras", "2", "--config-format", "hf", "--no-trust-remote-code",
            "--hf-config-path", "/cfg", "-O", "0"]
    assert ServeSettings(extra_args=args).extra_args == args
    config = DeployConfig.model_validate(
        {"target": "local", "models": {"tiny": {"extra_args": args}}})
    assert config.serve_for("tiny", None).extra_args == args
