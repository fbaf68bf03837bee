"""`llmops init <name> --from axolotl.yml`: a user's own Axolotl YAML becomes a model of the
repository, whatever its dataset format, with the pipeline's keys removed and the rest kept
as written, a valid commented suite and a golden-set template that cannot be released as is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from llmops.cli import commands
from llmops.cli.main import build_parser
from llmops.config import DeployConfig, ValidationConfig, load_model
from llmops.config.golden import read_golden
from llmops.config.yamlfile import load_model_file
from llmops.errors import UsageError
from llmops.stages.data import check_all_configs
from llmops.stages.init import init_model

REPO = Path(__file__).resolve().parents[2]
# What a user's file typically carries that the pipeline owns: added at the top (with a
# comment), in the middle and at the end of each config.
OWNED_TOP = "output_dir: ./outputs/my-run   # Axolotl's own output folder\n"
OWNED_END = "mlflow_experiment_name: my-experiment\nmlflow_run_name: >-\n  a folded\n  name\n"


def users_yaml(tmp_path: Path, config: str) -> tuple[Path, str]:
    """The repository's `config` as a user would bring it: (its path, the text we expect
    in axolotl_configs/, i.e. the original)."""
    original = (REPO / "axolotl_configs" / config).read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("sequence_len:"))
    text = "".join([OWNED_TOP, *lines[:at], "mlflow_tracking_uri: http://mlflow:5000\n",
                    *lines[at:], OWNED_END])
    path = tmp_path / "mine" / config
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path, original


def llmops(*argv: str) -> int:
    """The command as the CLI parses and dispatches it (without the process set-up)."""
    args = build_parser().parse_args(argv)
    return int(getattr(commands, args.func)(args))


@pytest.mark.parametrize("config", ["tiny.yml", "tiny-sharegpt.yml", "tiny-alpaca.yml"],
                         ids=["chat_template", "sharegpt-style", "alpaca"])
def test_init_brings_a_config_of_each_dataset_type(repo_copy: Path, config: str) -> None:
    source, original = users_yaml(repo_copy.parent, config)
    local = (repo_copy / "deploy" / "local.yml").read_text()

    done = init_model("my-model", source)

    written = (repo_copy / "axolotl_configs" / "my-model.yml").read_text(encoding="utf-8")
    assert written == original  # the owned keys' lines removed, every other byte kept
    assert done.comments_kept
    assert sorted(done.removed_keys) == sorted(
        ["output_dir", "mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name"])
    assert done.problems == []  # Axolotl's config model, our rules, the dataset format
    assert done.missing_datasets == []  # the repository's data is in place
    # The suite validates and points at the golden template, whose rows are examples that
    # loading refuses until they are replaced.
    suite = load_model_file(repo_copy / "validation" / "my-model.yml", ValidationConfig)
    assert [g.path for g in suite.eval.golden] == ["datasets/my-model/golden.jsonl"]
    assert {r.metric for r in suite.gates} == {
        "eval_loss", "golden_accuracy", "format_template_leak_rate",
        "probe.regurgitation_failures", "probe.pii_findings", "probe.secret_findings"}
    assert suite.probes is not None and suite.probes.regurgitation.max_verbatim_tokens == 30
    golden = repo_copy / "datasets" / "my-model" / "golden.jsonl"
    assert done.golden_written and golden.is_file()
    with pytest.raises(UsageError, match=r"golden.jsonl:1: an example row"):
        read_golden(golden)
    # No deploy entry: sequence_len 256 fits the local serve settings of every model.
    assert "no deploy entry needed" in done.deploy_note
    assert (repo_copy / "deploy" / "local.yml").read_text() == local
    assert done.next_steps()[-3:] == ["llmops check-config my-model",
                                      "llmops validate-data my-model",
                                      "llmops release my-model"]
    # Once the golden set is filled in, the model loads and passes `llmops check-config`.
    shutil.copy(repo_copy / "datasets" / "support-bot" / "golden.jsonl", golden)
    spec = load_model("my-model")
    assert spec.datasets == load_model(Path(config).stem).datasets
    assert [c.problem for c in check_all_configs(["my-model"])
            if c.label == "model my-model"] == [None]


def test_the_command_reports_what_it_removed_and_what_to_fill_in(
        repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = users_yaml(repo_copy.parent, "tiny.yml")
    text = source.read_text().replace("datasets/support-bot/train.jsonl", "data/mine.jsonl")
    source.write_text(text)

    assert llmops("init", "mine", "--from", str(source)) == 0
    out = capsys.readouterr().out
    assert "removed output_dir: the pipeline sets it for each run" in out
    assert "removed mlflow_tracking_uri" in out
    assert "a template: replace its example rows" in out
    assert "put your data at data/mine.jsonl" in out
    assert "llmops validate-data mine" in out and "llmops release mine" in out


def test_a_config_the_check_refuses_is_written_and_exits_2(
        repo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = yaml.safe_load((REPO / "axolotl_configs" / "tiny.yml").read_text())
    del cfg["adapter"], cfg["save_steps"]
    cfg["datasets"][0]["type"] = "sharegpt"  # Axolotl's old type: no stage reads it
    source = repo_copy.parent / "full.yml"
    source.write_text(yaml.safe_dump(cfg, sort_keys=False))

    with pytest.raises(UsageError, match="does not pass the config check"):
        llmops("init", "full-ft", "--from", str(source))
    assert (repo_copy / "axolotl_configs" / "full-ft.yml").is_file()
    assert (repo_copy / "validation" / "full-ft.yml").is_file()
    done_problems = capsys.readouterr()
    printed = done_problems.out + done_problems.err
    for key in ("adapter", "save_steps", "'sharegpt' is not checked by the data gate"):
        assert key in printed


def test_a_long_sequence_gets_a_local_deploy_entry(repo_copy: Path) -> None:
    source, _ = users_yaml(repo_copy.parent, "tiny-alpaca.yml")
    source.write_text(source.read_text().replace("sequence_len: 256", "sequence_len: 4096"))
    before = (repo_copy / "deploy" / "local.yml").read_text()

    done = init_model("long-one", source)

    after = (repo_copy / "deploy" / "local.yml").read_text()
    assert after.startswith(before)  # appended under models:, comments kept
    assert "models.long-one.max_model_len: 4096" in done.deploy_note
    deploy = DeployConfig.model_validate(yaml.safe_load(after))
    assert deploy.serve_for("long-one", None).max_model_len == 4096
    assert deploy.serve_for("tiny", None).max_model_len == 512


def test_a_flow_style_config_is_dumped_again(repo_copy: Path) -> None:
    cfg = yaml.safe_load((REPO / "axolotl_configs" / "tiny.yml").read_text())
    source = repo_copy.parent / "flow.yml"
    source.write_text(yaml.safe_dump({**cfg, "output_dir": "out"}, default_flow_style=True))

    done = init_model("flowy", source)

    assert not done.comments_kept and done.removed_keys == ["output_dir"]
    assert yaml.safe_load((repo_copy / "axolotl_configs" / "flowy.yml").read_text()) == cfg


def test_an_existing_name_is_refused_and_nothing_written(repo_copy: Path) -> None:
    source, _ = users_yaml(repo_copy.parent, "tiny.yml")
    before = (repo_copy / "axolotl_configs" / "tiny.yml").read_text()
    with pytest.raises(UsageError, match="model 'tiny' exists") as err:
        llmops("init", "tiny", "--from", str(source))
    assert err.value.exit_code == 2
    assert (repo_copy / "axolotl_configs" / "tiny.yml").read_text() == before
    # a suite without its Axolotl YAML takes the name too
    (repo_copy / "validation" / "orphan.yml").write_text("x: 1\n")
    with pytest.raises(UsageError, match="model 'orphan' exists"):
        init_model("orphan", source)
    assert not (repo_copy / "axolotl_configs" / "orphan.yml").exists()


@pytest.mark.parametrize("name", ["My_Model", "-lead", "trail-", "a/b", "../x", "x" * 49, ""])
def test_an_invalid_name_is_refused(repo_copy: Path, name: str) -> None:
    source, _ = users_yaml(repo_copy.parent, "tiny.yml")
    with pytest.raises(UsageError, match="not a valid model name"):
        init_model(name, source)
    assert sorted(p.name for p in (repo_copy / "axolotl_configs").iterdir()) == sorted(
        p.name for p in (REPO / "axolotl_configs").glob("*.yml"))


def test_a_missing_or_unusable_file_is_refused(repo_copy: Path) -> None:
    with pytest.raises(UsageError, match="nope.yml: file not found"):
        init_model("new-model", repo_copy.parent / "nope.yml")
    listed = repo_copy.parent / "list.yml"
    listed.write_text("- base_model: x\n")
    with pytest.raises(UsageError, match="not an Axolotl config"):
        init_model("new-model", listed)
    no_base = repo_copy.parent / "nobase.yml"
    no_base.write_text("adapter: lora\n")
    with pytest.raises(UsageError, match="base_model: required key is missing"):
        init_model("new-model", no_base)
    assert not (repo_copy / "axolotl_configs" / "new-model.yml").exists()
    assert not (repo_copy / "validation" / "new-model.yml").exists()
