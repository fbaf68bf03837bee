"""`extra_args` carries only allowlisted vLLM options (and their values): nothing that serves
other weights, loads code, reads a file of options, or moves the server's address or key.
Refused when deploy/<env>.yml loads, naming the file, line, entry, why and what to do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from llmops.config import DeployConfig, ServeSettings
from llmops.config.vllm_args import (
    ALLOWED_VLLM_ARGS,
    NOT_ALLOWED,
    POSITIONAL,
    REFUSED_VLLM_ARGS,
    VLLM_FLAGS,
    VLLM_VALUED,
    check_extra_args,
)
from llmops.config.yamlfile import load_model_file
from llmops.errors import UsageError
from llmops.serve.process import serve_python

# (extra_args, the refused entry, the option it names, why)
REFUSED = [
    (["--trust-remote-code"], 0, "--trust-remote-code", "it runs Python from the model's"),
    (["--trust_remote_code"], 0, "--trust-remote-code", "it runs Python"),  # _ read as -
    (["--trust-remote"], 0, "--trust-remote", NOT_ALLOWED),  # argparse takes a prefix
    (["--enable-prefix"], 0, "--enable-prefix", NOT_ALLOWED),  # even of an allowed option
    (["--host", "0.0.0.0"], 0, "--host", "the target chooses the address"),
    (["--host=0.0.0.0"], 0, "--host", "the target chooses the address"),
    (["--config", "more.yaml"], 0, "--config", "a vLLM config file can set any option"),
    (["--api-key", "sk-123"], 0, "--api-key", "a key in YAML ends up in git"),
    (["--model", "/other/weights"], 0, "--model", "the registered version's weights"),
    (["--model=/other/weights"], 0, "--model", "the registered version's weights"),
    (["--lora-modules", "x=/other/adapter"], 0, "--lora-modules", "the registered version's"),
    (["--tool-parser-plugin", "/tmp/p.py"], 0, "--tool-parser-plugin", "loads Python code"),
    (["--middleware", "evil.Middleware"], 0, "--middleware", "is code loaded into it"),
    (["--worker-extension-cls", "m.C"], 0, "--worker-extension-cls", "loads Python code"),
    (["--generation-config", "/tmp/g"], 0, "--generation-config", "from a folder"),
    (["--dtype", "float16"], 0, "--dtype", "serve.dtype (or models.<name>.dtype) sets it"),
    (["--served-model-name", "x"], 0, "--served-model-name", "under its own name"),
    (["--hf-config-path", "/cfg"], 0, "--hf-config-path", NOT_ALLOWED),  # names a file
    (["--compilation-config.cache_dir", "/tmp"], 0, "--compilation-config.cache-dir",
     NOT_ALLOWED),  # vLLM's dotted keys
    (["-tp", "2"], 0, "-tp", NOT_ALLOWED),  # short forms too
    (["-O3"], 0, "-O3", NOT_ALLOWED),
    (["--", "/other/weights"], 0, "--", NOT_ALLOWED),
    # Values follow their option; anything else is read as the model to serve.
    (["/other/weights"], 0, None, POSITIONAL),
    (["--enforce-eager-not", "x"], 0, "--enforce-eager-not", NOT_ALLOWED),
    (["--disable-log-stats", "/other/weights"], 1, None, POSITIONAL),
    (["--seed", "1", "/other/weights"], 2, None, POSITIONAL),
    (["--seed=1", "/other/weights"], 1, None, POSITIONAL),
    (["--seed", "-1", "-5"], 2, None, POSITIONAL),  # argparse reads -5 as a positional
    (["--seed", "--model", "/w"], 1, "--model", "the registered version's weights"),
    (["--seed"], 0, "--seed", "it takes a value"),  # it would take the target's next one
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy" / "local.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("args", "index", "option", "why"), REFUSED)
def test_serve_extra_args_refuse_all_but_the_allowlisted_options(
        tmp_path: Path, args: list[str], index: int, option: str | None, why: str) -> None:
    listed = "".join(f"    - {a!r}\n" for a in args)
    path = write(tmp_path, f"target: local\nserve:\n  max_num_seqs: 4\n  extra_args:\n{listed}")
    with pytest.raises(UsageError) as exc:
        load_model_file(path, DeployConfig)
    message = str(exc.value)
    assert f"{path}:4: serve.extra_args:" in message  # the file, line and key
    named = f" ({option})" if option else ""
    assert f"extra_args[{index}]: {args[index]!r}{named} is refused: " in message
    assert why in message


def test_the_refusal_says_what_may_be_set() -> None:
    with pytest.raises(ValueError) as exc:
        check_extra_args(["--swap-space", "4"], "serve.extra_args")
    assert "see serve.extra_args in docs/configuration.md" in str(exc.value)
    assert "--max-num-batched-tokens" in str(exc.value)


def test_per_model_extra_args_are_refused_when_the_file_loads(tmp_path: Path) -> None:
    """Model overrides are otherwise validated only when used; these not."""
    path = write(tmp_path, "target: local\nmodels:\n  tiny:\n    max_model_len: 512\n"
                           "    extra_args: [--max-cpu-loras, 2, --host=0.0.0.0]\n")
    with pytest.raises(UsageError, match=r"models\.tiny\.extra_args\[2\]: '--host=0\.0\.0\.0' "
                                         r"\(--host\) is refused: the target chooses"):
        load_model_file(path, DeployConfig)


def test_allowed_options_and_their_values_pass() -> None:
    args = ["--max-num-batched-tokens", "2048", "--enable-prefix-caching",
            "--max_logprobs=5", "--seed", "-1", "--no-trust-remote-code",
            "--uvicorn-log-level", "info", "--tool-call-parser", "hermes",
            "--enable-auto-tool-choice", "--kv-cache-dtype=auto"]
    assert ServeSettings(extra_args=args).extra_args == args
    config = DeployConfig.model_validate(
        {"target": "local", "models": {"tiny": {"extra_args": args}}})
    assert config.serve_for("tiny", None).extra_args == args


def test_the_shipped_deploy_files_pass() -> None:
    for path in sorted((Path(__file__).resolve().parents[2] / "deploy").glob("*.yml")):
        load_model_file(path, DeployConfig)


# The installed vLLM's serve parser: each option's spellings and how many values it takes.
DUMP_PARSER = """
import json
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
print(json.dumps({o: a.nargs for a in make_arg_parser(FlexibleArgumentParser())._actions
                  for o in a.option_strings}))
"""


def test_the_lists_match_the_vllm_the_pipeline_serves_with() -> None:
    """Every listed option exists in the serving env's vLLM with the arity assumed here: a
    flag taking a value would turn the next argument into its value, a valued option read
    as a flag would leave its value to be read as the model."""
    try:
        python = serve_python()
    except UsageError:
        pytest.skip("no serving environment (.venv-serve)")
    done = subprocess.run([str(python), "-c", DUMP_PARSER], capture_output=True, text=True,
                          timeout=300, check=True)
    nargs = json.loads(done.stdout.strip().splitlines()[-1])
    assert {o: nargs.get(o, "missing") for o in VLLM_FLAGS} == dict.fromkeys(VLLM_FLAGS, 0)
    assert {o: nargs.get(o, "missing") for o in VLLM_VALUED} == dict.fromkeys(VLLM_VALUED)
    assert set(REFUSED_VLLM_ARGS) <= set(nargs) - ALLOWED_VLLM_ARGS
