"""The quiet terminal: the trainer-log parser, the stage lines of a `Steps` runner, the -v
flag, and third-party warnings kept in the command's log, off the terminal."""
# ruff: noqa: E501  (the trainer's lines, as printed)

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from llmops.cli import output
from llmops.cli.console import Terminal, format_seconds
from llmops.cli.main import build_parser
from llmops.process import activity
from llmops.stages.steps import Steps, reporting
from llmops.train.progress import ProgressParser, clock_seconds, parse_dict

# What Axolotl 0.x / transformers 4.5x print while training, tqdm updates split at '\r'.
TRAINER_LINES = """\
[2026-11-30 10:01:02,345] [INFO] [axolotl.utils.data.sft.prepare_dataset:123] Loading prepared dataset
Map (num_proc=2):  50%|█████     | 100/200 [00:00<00:00, 812.31 examples/s]
Tokenizing Prompts (num_proc=2): 100%|██████████| 200/200 [00:01<00:00, 160.2 examples/s]
[2026-11-30 10:01:05,001] [INFO] [axolotl.utils.trainer.calculate_total_num_steps:410] total_num_steps: 60
  0%|          | 0/60 [00:00<?, ?it/s]
  2%|▏         | 1/60 [00:02<02:10,  2.21s/it]
{'loss': 2.4512, 'grad_norm': 1.873, 'learning_rate': 2e-05, 'epoch': 0.02}
 10%|█         | 6/60 [00:12<01:48,  2.01s/it]
{'loss': '2.1034', 'grad_norm': '0.9521', 'learning_rate': '0.0002', 'epoch': '0.1', 'tokens_per_second': 1834.5}
 50%|█████     | 30/60 [01:00<01:00,  2.00s/it]
  0%|          | 0/4 [00:00<?, ?it/s]
 75%|███████▌  | 3/4 [00:01<00:00,  2.9it/s]
{'eval_loss': 1.9821, 'eval_runtime': 1.52, 'eval_samples_per_second': 26.3, 'epoch': 0.5}
 52%|█████▏    | 31/60 [01:04<01:01,  2.11s/it]
{'train_runtime': 125.3, 'train_samples_per_second': 3.8, 'train_steps_per_second': 0.48, 'train_loss': 1.8123, 'epoch': 1.0}
100%|██████████| 60/60 [02:05<00:00,  2.09s/it]
"""


def test_tqdm_clock_and_dict_lines_parse() -> None:
    assert clock_seconds("01:48") == 108.0 and clock_seconds("1:02:03") == 3723.0
    assert clock_seconds("?") is None
    assert parse_dict("{'loss': '2.1', 'epoch': 0.5, 'note': 'x'}") == {"loss": 2.1,
                                                                        "epoch": 0.5}
    assert parse_dict("not a dict {") is None


def test_the_parser_follows_the_training_bar_and_the_logged_numbers() -> None:
    parser = ProgressParser()
    states = [s for line in TRAINER_LINES.splitlines() if (s := parser.feed(line))]
    assert states[0].total == 60 and states[0].step == 0  # the stated total, first
    assert all(s.total == 60 for s in states)  # dataset and eval bars are not training
    steps = [s.step for s in states]
    assert steps == sorted(steps) and steps[-1] == 60
    at6 = next(s for s in states if s.step == 6)
    assert at6.loss == 2.4512 and at6.eta_s == 108.0 and at6.elapsed_s == 12.0
    assert at6.tokens_per_s is None  # not logged yet: left out, never guessed
    at30 = next(s for s in states if s.step == 30)
    assert at30.loss == 2.1034 and at30.tokens_per_s == 1834.5
    last = parser.state
    assert last.eval_loss == 1.9821 and last.loss == 2.1034  # train_loss: not a step loss
    assert last.eta_s == 0.0
    shown = next(s for s in states if s.step == 30).as_progress()
    assert (shown.completed, shown.total, shown.eta_s) == (30, 60, 60.0)
    assert shown.detail == "loss 2.103 · 1,834 tok/s"


def test_eta_is_computed_when_tqdm_gives_none() -> None:
    parser = ProgressParser()
    state = parser.feed(" 25%|██▌       | 10/40 [00:20, 2.00s/it]")
    assert state is not None and state.total == 40 and state.eta_s == pytest.approx(60.0)
    assert format_seconds(3725) == "1:02:05" and format_seconds(65.4) == "1:05"


def test_a_bar_before_any_stated_total_sets_it() -> None:
    parser = ProgressParser()
    assert parser.feed("  3%|▎         | 2/80 [00:04<02:36,  2.00s/it]") is not None
    assert parser.state.total == 80
    assert parser.feed("  0%|          | 0/5 [00:00<?, ?it/s]") is None  # an eval bar


@dataclass
class FakeReporter:
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def on_start(self, name: str) -> None:
        self.events.append(("start", name))

    def on_end(self, name: str, seconds: float, result: Any) -> None:
        self.events.append(("end", name, output.key_number(name, result)))

    def on_fail(self, name: str, seconds: float, exc: BaseException) -> None:
        self.events.append(("fail", name, str(exc)))


@dataclass
class _Dataset:
    examples: int


@dataclass
class _DataReport:
    datasets: list[_Dataset]
    passed: bool = True


@dataclass
class _Trained:
    adapter_dir: Path
    metrics: dict[str, float]


@dataclass
class _Evaluated:
    metrics: dict[str, dict[str, float]]


@dataclass
class _Registered:
    version: str
    digest: str


def test_a_steps_runner_reports_each_step_with_its_key_number() -> None:
    fake = FakeReporter()
    steps = Steps(reporter=fake)
    steps("check-data", lambda: _DataReport([_Dataset(120), _Dataset(30)]))
    steps("train", lambda: _Trained(Path("a"), {"train_loss": 1.23456, "eval_loss": 1.5}))
    steps("evaluate", lambda: _Evaluated({"base": {"golden_accuracy": 0.25},
                                          "candidate": {"golden_accuracy": 0.875}}))
    steps("register", lambda: _Registered("1.0.0", "sha256:" + "a" * 64))

    def refuse() -> None:
        raise RuntimeError("the gate refused it")

    with pytest.raises(RuntimeError):
        steps("gate", refuse)
    assert fake.events == [
        ("start", "check-data"), ("end", "check-data", "150 examples checked, all checks passed"),
        ("start", "train"), ("end", "train", "final loss 1.235, eval loss 1.5"),
        ("start", "evaluate"), ("end", "evaluate", "golden accuracy base 25%, candidate 88%"),
        ("start", "register"), ("end", "register", "version 1.0.0 (digest sha256:aaaaaaaaaaaa)"),
        ("start", "gate"), ("fail", "gate", "the gate refused it")]
    assert set(steps.seconds) == {"check-data", "train", "evaluate", "register", "gate"}


def test_a_runner_built_without_a_reporter_uses_the_installed_one() -> None:
    fake = FakeReporter()
    with reporting(fake):
        Steps()("deploy", lambda: None)  # as flows/ build theirs
    Steps()("deploy", lambda: None)  # outside: nobody hears it
    assert fake.events == [("start", "deploy"), ("end", "deploy", "")]


def test_stage_lines_print_one_line_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    out = Console(file=buffer, width=120)
    previous = activity.install(Terminal(verbose=False, out=out))
    try:
        steps = Steps(reporter=output.StageLines(out=out))
        steps("check-data", lambda: _DataReport([_Dataset(7)]))
        with pytest.raises(ValueError):
            steps("train", lambda: (_ for _ in ()).throw(ValueError("bad")))
    finally:
        activity.install(previous)
    lines = [x for x in buffer.getvalue().splitlines() if x.strip()]
    assert lines[0].strip() == "▶ check-data"  # no terminal: a line for the start
    assert lines[1].startswith("✓ check-data") and lines[1].endswith(
        "7 examples checked, all checks passed")
    assert lines[-1].startswith("✗ train") and "failed" in lines[-1]


def test_the_verbose_flag_parses_before_or_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["release", "tiny"]).verbose is False
    assert parser.parse_args(["-v", "release", "tiny"]).verbose is True
    assert parser.parse_args(["release", "--verbose", "tiny"]).verbose is True
    assert parser.parse_args(["--verbose", "status"]).verbose is True


# Run in a fresh interpreter, as the CLI is: what earlier tests left in this process's
# logging and warnings machinery (handlers, filters, pytest's own capture) is not the CLI's.
QUIET_SCRIPT = """
import logging, sys, warnings
from pathlib import Path
from llmops.cli.console import QuietLogging
from llmops.redact import remember

third = logging.getLogger("transformers.modeling_utils_test")
terminal = logging.StreamHandler(sys.stderr)
third.addHandler(terminal)  # as transformers does on import
quiet = QuietLogging(Path(sys.argv[1]))
quiet.install()
warnings.simplefilter("always")
warnings.warn("TypedStorage is deprecated", UserWarning, stacklevel=1)
third.warning("Some weights of the model were not initialized")
logging.getLogger("prefect.flow_runs").error("Finished in state Failed()")
late = logging.getLogger("torch._dynamo_test")
late.addHandler(logging.StreamHandler(sys.stderr))  # imported after the setup
late.propagate = False
late.warning("Enum subclass ... register_constant() is deprecated")
remember(["tb-secret-4711"])
try:
    raise ConnectionError("http://u:tb-secret-4711@mlflow:5000 refused")
except ConnectionError:
    logging.getLogger("somelib.store_test").exception("request failed")
quiet.uninstall()
print("terminal still attached" if terminal in third.handlers else "terminal detached")
"""


def test_third_party_warnings_go_to_the_log_file_not_the_terminal(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "release-x.log"
    done = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(log)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "TypedStorage" not in err and "Some weights" not in err and "Failed()" not in err
    logged = log.read_text()
    assert "TypedStorage is deprecated" in logged and "Some weights" in logged
    assert "Finished in state Failed()" in logged
    assert logged.count("register_constant() is deprecated") == 1
    assert "register_constant" not in err
    assert "request failed" in logged and "tb-secret-4711" not in logged + err  # traceback too
    assert done.stdout.strip() == "terminal detached"


def test_the_data_gate_is_one_line_when_it_passes(capsys: pytest.CaptureFixture[str]) -> None:
    @dataclass
    class Report:
        model: str = "tiny"
        datasets: list[_Dataset] = field(default_factory=lambda: [_Dataset(40)])
        json_path: str = "/s/reports/tiny/data_report.json"
        passed: bool = True

    output.print_data_report(Report(), verbose=False)  # type: ignore[arg-type]
    assert capsys.readouterr().out == (
        "data gate: tiny: 40 examples checked in 1 dataset(s), all checks passed; report: "
        "/s/reports/tiny/data_report.json\n")


class _Recorder:
    """An activity handler that records what training reports, streaming nothing."""

    def __init__(self) -> None:
        self.updates: list[activity.Progress] = []
        self.notes: list[str] = []
        self.lines: list[str] = []

    def activity(self, text: str) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def note(self, text: str) -> None:
        self.notes.append(text)

    def tell(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(f"warning: {text}")

    def progress(self, label: str) -> Any:
        import contextlib

        return contextlib.nullcontext(self.updates.append)

    def streaming(self) -> bool:
        return False


def test_run_axolotl_logs_every_line_and_feeds_the_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import sys

    from llmops.redact import remember
    from llmops.train import run

    remember(["hf_secretvalue123"])
    script = tmp_path / "fake_trainer.py"
    text = TRAINER_LINES.replace("\n 50%", "\r 50%") + "token hf_secretvalue123\n"
    script.write_text(f"import sys\nsys.stderr.write({text!r})\n")
    monkeypatch.setattr(run, "_cuda_count", lambda: 0)
    monkeypatch.setattr(run, "training_env", lambda gpus: dict(os.environ))
    monkeypatch.setattr(run, "axolotl_command", lambda *a: [sys.executable, str(script)])
    recorder = _Recorder()
    previous = activity.install(recorder)  # type: ignore[arg-type]
    try:
        run.run_axolotl(tmp_path / "axolotl.yml", tmp_path / "train.log", "run-1")
    finally:
        activity.install(previous)
    terminal = capsys.readouterr()
    assert terminal.err == ""  # nothing streamed by default
    log = (tmp_path / "train.log").read_text()
    assert log.startswith("training: ") and "{'loss': 2.4512" in log
    assert "hf_secretvalue123" not in log  # redacted as before
    # the command, once on the terminal (CI's job log) and as train.log's first line
    [told] = [line for line in recorder.lines if line.startswith("training: ")]
    assert log.splitlines()[0] == told and terminal.out == ""  # told, never printed
    assert recorder.updates[-1].completed == 60 and recorder.updates[-1].total == 60
    assert any(u.detail.startswith("loss 2.103") for u in recorder.updates)
