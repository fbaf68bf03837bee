"""`llmops`: one entry point, verb subcommands, exit codes CI can act on.

0 done; 1 a check or gate refused the data or the candidate, or a stage failed;
2 bad input (unknown model, missing file, malformed YAML, unreachable MLflow).

Parsing and the process's life are here; each command (`commands`) calls one engine
function and prints its result (`output`).
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from rich.markup import escape

from llmops.cli.console import QuietLogging, Terminal, command_log, console
from llmops.errors import LlmopsError
from llmops.redact import redact, redact_process

EPILOG = """examples:
  llmops release support-bot          # the whole release on CPU, embedded defaults
  llmops validate-data tiny           # the data gate alone
  llmops validate-data --changed-since origin/main   # the models a change touches
  llmops check-config                 # every YAML, in seconds, no model loaded
  llmops init my-bot --from ~/my-axolotl.yml         # bring your own model
  llmops register tiny --run <id> --version 1.2.0
  llmops promote tiny 1.2.0 --to production          # opens a merge request
  llmops promote tiny 1.2.0 --to production --local  # edits registry/production.yml
  llmops status                       # local deployments
  llmops doctor                       # this machine's ISA, compute plan, what it lacks
  llmops rollback support-bot         # serve the previous verified version again
  llmops history support-bot          # what was deployed, when, with which result
  llmops lineage support-bot 0.1.0    # data, run, commit, gate, version, deploys, cost
  llmops stop support-bot --env local # end one
"""


# How long the exit waits for threads still at work once the command has ended; nothing of
# ours works past its command, so a thread still running after this is stuck.
EXIT_WAIT_S = 60.0


def _embedded_env() -> None:
    """Point Prefect and MLflow at `.llmops/` unless the environment says otherwise."""
    from llmops.config.paths import state_dir, state_subdir

    os.environ.setdefault("PREFECT_HOME", str(state_subdir("prefect")))
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                          str(state_subdir("prefect-results")))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The first ephemeral start migrates a fresh database, slowly on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{state_dir() / 'mlflow.db'}")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops", description="Release fine-tuned LLMs: validate, train, gate, register, "
        "deploy.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="stream the full output of Axolotl, vLLM, Prefect and the "
                        "libraries to the terminal (default: spinners, a training progress "
                        "bar, one line per stage; the rest in .llmops/logs/ and each run's "
                        "own logs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser("release", help="run the whole release flow for a model")
    p.add_argument("model")
    p.add_argument("--env", default="local", help="target environment (deploy/<env>.yml)")
    p.add_argument("--version", help="SemVer to register (default: next patch)")
    p.set_defaults(func="cmd_release")
    p = sub.add_parser("validate-data", help="run the data gate on a model's datasets")
    p.add_argument("model", nargs="?", help="the model (or use --changed-since)")
    p.add_argument("--dataset", help="check this file instead, against the model's rules")
    p.add_argument("--changed-since", metavar="REF",
                   help="every model whose datasets, golden sets, suite or training YAML "
                        "differ from commit REF (a merge request's base)")
    p.set_defaults(func="cmd_validate_data")
    p = sub.add_parser("check-config", help="check the YAMLs: models (ours and Axolotl's "
                       "config model), deploy targets, registry pins; no model is loaded")
    p.add_argument("models", nargs="*", help="these models only (default: all)")
    p.set_defaults(func="cmd_check_config")
    p = sub.add_parser("evaluate", help="measure base, candidate and production; apply the gate")
    p.add_argument("model")
    p.add_argument("--candidate", required=True, help="a run id or a registered version")
    p.add_argument("--env", default="local", help="evaluate the candidate as deploy/<env>.yml "
                   "serves it: the adapter, merged or int8 weights (default: local)")
    p.set_defaults(func="cmd_evaluate")
    p = sub.add_parser("register", help="register a gated run's adapter as a new version")
    p.add_argument("model")
    p.add_argument("--run", required=True, help="MLflow run id of the release")
    p.add_argument("--version", help="SemVer (default: the CI tag, else the next patch)")
    p.set_defaults(func="cmd_register")
    p = sub.add_parser("promote", help="pin a version to an environment by merge request")
    p.add_argument("model")
    p.add_argument("version")
    p.add_argument("--to", required=True, metavar="ENV", help="environment (registry/<env>.yml)")
    p.add_argument("--local", action="store_true", help="edit the pin file, no GitLab")
    p.set_defaults(func="cmd_promote")
    p = sub.add_parser("apply-promotion", help="after merge: check pins, point env aliases")
    p.add_argument("--env", required=True)
    p.add_argument("--deploy", action="store_true", help="then deploy each pin whose version "
                   "does not serve yet (and only those)")
    p.add_argument("--local", action="store_true", help="with --deploy: after a rollback, "
                   "edit the pin file here instead of opening a merge request")
    p.set_defaults(func="cmd_apply_promotion")
    p = sub.add_parser("deploy", help="serve a registered version (default: the pinned one)")
    p.add_argument("model")
    p.add_argument("--env", default="local")
    p.add_argument("--version", help="SemVer (default: the pin in registry/<env>.yml)")
    p.add_argument("--render", metavar="DIR", help="write Kubernetes manifests, apply nothing")
    p.add_argument("--local", action="store_true", help="after a rollback of a pinned "
                   "environment, edit its pin file here instead of opening a merge request")
    p.set_defaults(func="cmd_deploy")
    p = sub.add_parser("train", help="data gate, then fine-tune into a new MLflow run")
    p.add_argument("model")
    p.add_argument("--backend", choices=("auto", "axolotl", "unsloth"), default="auto",
                   help="auto: unsloth on one CUDA GPU with unsloth installed, else axolotl")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest unfinished run from its last checkpoint")
    p.add_argument("--dotenv", metavar="FILE", help="write LLMOPS_RUN_ID=<run id> here")
    p.set_defaults(func="cmd_train")
    model_env(sub, "verify", "smoke + load test a model's serving deployment", "cmd_verify")
    p = sub.add_parser("release-notes", help="notes, model card and gate report of a version")
    p.add_argument("model")
    p.add_argument("--version", required=True)
    p.add_argument("--out", default="release", help="folder to write (default: release/)")
    p.set_defaults(func="cmd_release_notes")
    p = model_env(sub, "rollback", "serve the previous verified version again",
                  "cmd_rollback")
    p.add_argument("--local", action="store_true", help="pin the version now serving by "
                   "editing registry/<env>.yml here instead of opening a merge request")
    p = model_env(sub, "history", "what was deployed where, when, and how it went",
                  "cmd_history")
    p.add_argument("--last", type=int, default=20, help="show the last N events")
    p = sub.add_parser(
        "lineage", help="one release record: datasets, run and config, commit and CI, gate, "
        "registry version and digest, every deployment, and the compute cost",
        description="Trace a registered version (default: the latest) back to its datasets "
        "(sha256), training run and config, git commit and CI pipeline/job, and gate "
        "decision, and forward to every deployment in the histories of deploy/<env>.yml's "
        "environments, with the device-hours of training and evaluation and, from each "
        "verified load test, tokens/s and the cost per million generated tokens (given "
        "cost.price_per_device_hour in deploy/<env>.yml). Works on MLflow's registry and "
        "GitLab's.")
    p.add_argument("model")
    p.add_argument("version", nargs="?", help="SemVer (default: the latest registered)")
    p.add_argument("--json", action="store_true", help="the record as JSON")
    p.add_argument("--verify", action="store_true",
                   help="check the version's signature against each environment's trusted "
                   "signers and every digest of its provenance this machine can reach; "
                   "exit 1 if none accepts the signature or a digest differs")
    p.set_defaults(func="cmd_lineage")
    p = sub.add_parser("plan", help="explain the tensor/pipeline parallel plan for a target")
    p.add_argument("model")
    p.add_argument("--env", required=True)
    p.set_defaults(func="cmd_plan")
    p = sub.add_parser("status", help="list local deployments")
    p.set_defaults(func="cmd_status")
    p = sub.add_parser(
        "doctor", help="this machine's CPU (ISA) or GPUs, the compute plan decided from them, "
        "and what a release may lack here",
        description="Name the CPU's instruction set (AMX, AVX512-BF16, AVX2, ...) or the GPUs, "
        "the matmul speed of each dtype measured on this machine (once, cached in "
        "~/.cache/llmops), and the plan decided from them: the training dtype, the served "
        "dtype and artefact (merged or int8 weights), vLLM's threads and KV cache. Then check "
        "Python, disk, memory, TCMalloc, the serving environment, local ports and every "
        "model's base model. Exit 1 when something a release needs is missing.")
    p.set_defaults(func="cmd_doctor")
    model_env(sub, "stop", "stop a model's local server", "cmd_stop")
    p = sub.add_parser(
        "init", help="bring your own model: copy an Axolotl YAML in, write its validation "
        "suite and golden-set template, check it",
        description="Copy the Axolotl YAML to axolotl_configs/<name>.yml (the keys the "
        "pipeline sets for each run removed, the rest as written), write validation/<name>.yml "
        "(data checks and gates, explained in comments) and datasets/<name>/golden.jsonl (a "
        "template to replace), then check the Axolotl YAML and list what to fill in. Exit 0 "
        "when the files are written and the YAML passes the check; 2 when the name is taken or "
        "invalid or the file is missing (nothing written), or when the check finds problems "
        "in the YAML (files written: fix them, then `llmops check-config <name>`).")
    p.add_argument("name", help="the new model's name: lowercase letters, digits and '-'")
    p.add_argument("--from", dest="source", required=True, metavar="AXOLOTL_YML",
                   help="your Axolotl training config")
    p.set_defaults(func="cmd_init")
    p = sub.add_parser(
        "build-retention", help="build a model's retention set: the prompts of the pool "
        "its base model answers correctly, with their provenance (files to commit)",
        description="Serve the model's base with vLLM, ask it every prompt of "
        "eval.retention.pool (validation/retention/pool.jsonl), and write the ones it "
        "answers correctly to eval.retention.path (validation/retention/<model>.jsonl) with "
        "<model>.provenance.json beside it (base model digest, pool sha256, vLLM release, "
        "date, what was kept and dropped). Evaluation asks the set of base, candidate and "
        "production; the gate rule on retention_kept refuses a candidate that forgot it.")
    p.add_argument("model")
    p.set_defaults(func="cmd_build_retention")
    p = sub.add_parser("config-reference", help="write the configuration reference "
                       "(docs/configuration.md) from the config schemas")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write it (default: docs/configuration.md of the repository; "
                        "- for standard output)")
    p.set_defaults(func="cmd_config_reference")
    for each in sub.choices.values():  # `llmops release -v tiny` as well as `llmops -v ...`
        each.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="stream everything to the terminal (see llmops --help)")
    return parser


def model_env(sub: Any, name: str, help_: str, func: str) -> argparse.ArgumentParser:
    """A `<command> MODEL [--env ENV]` subcommand (env default: local)."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("model")
    p.add_argument("--env", default="local", help="target environment (deploy/<env>.yml)")
    p.set_defaults(func=func)
    return p


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so that every `finally`
    # runs: child processes are stopped and the MLflow run is marked FAILED.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; from the command line (no `argv`), end the
    process here instead (see `end_process`)."""
    code = _run(argv)
    if argv is None:
        end_process(code)
    return code


def end_process(code: int, wait_s: float = EXIT_WAIT_S) -> NoReturn:
    """Exit without the interpreter's teardown, which garbage-collects every module object
    several times over, for seconds once Axolotl, torch, MLflow and Prefect are imported,
    after the work is done. (Freezing the collector instead makes Triton's bindings report
    their types as leaked.) What exit does for us is done here, in the interpreter's order:
    threading's exit hooks run and the other threads are joined (`_finish_threads`, for at
    most `wait_s`), the atexit handlers run (Prefect's API server stops, logs and temporary
    folders are cleaned up), and the standard streams are flushed."""
    _finish_threads(wait_s)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _finish_threads(wait_s: float) -> None:
    """What the interpreter does first at exit (`threading._shutdown`), bounded: a thread
    still running after `wait_s` is named on stderr and left behind, so that a stuck
    library thread cannot hold the command (and a CI job) forever."""
    deadline = time.monotonic() + wait_s
    finisher = threading.Thread(target=_threading_exit, args=(deadline,), daemon=True,
                                name="llmops-exit")
    finisher.start()
    finisher.join(wait_s)
    if stuck := _other_threads():
        sys.stdout.flush()
        sys.stderr.write(f"llmops: {len(stuck)} thread(s) still running {wait_s:g} s after "
                         f"the command ended, exiting without them: "
                         f"{', '.join(t.name for t in stuck)}\n")


def _threading_exit(deadline: float) -> None:
    # threading's exit hooks stop the idle workers of thread pools (concurrent.futures
    # registers its shutdown there, as MLflow's artifact download leaves a pool behind):
    # until they run, those workers wait for work, and a join waits on them forever.
    # Python runs them at exit only, from a private list: no public call runs them.
    for hook in reversed(list(getattr(threading, "_threading_atexits", []))):
        try:
            hook()
        except Exception as exc:  # as the interpreter does: say so and go on exiting
            sys.stderr.write(f"llmops: a threading exit hook failed: {exc!r}\n")
    for thread in _other_threads():
        thread.join(max(0.0, deadline - time.monotonic()))


def _other_threads() -> list[threading.Thread]:
    """The live non-daemon threads besides the main one: those exit waits for."""
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    quiet: QuietLogging | None = None
    try:
        _embedded_env()
        # Secrets given to this process are redacted from what it prints and logs (each
        # Prefect flow does the same, for a worker that runs it without this CLI).
        redact_process(os.environ)
        quiet = quiet_terminal(args.command, bool(getattr(args, "verbose", False)))
        from llmops.cli import commands  # here: `--help` and usage errors load no engine
        from llmops.cli.output import StageLines
        from llmops.stages.steps import reporting

        with reporting(StageLines(on_start=quiet.reroute if quiet else None)):
            return int(getattr(commands, args.func)(args))
    except LlmopsError as exc:
        console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", highlight=False)
        _point_at_log(quiet, with_tail=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("interrupted")
        _point_at_log(quiet, with_tail=False)
        return 130
    except Exception as exc:  # a bug or an unexpected failure: say what, and how to see more
        if os.environ.get("LLMOPS_DEBUG") == "1":
            raise
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(redact(str(exc)))}\n"
                      "(set LLMOPS_DEBUG=1 for the traceback)", highlight=False)
        _point_at_log(quiet, with_tail=True)
        return 1


def quiet_terminal(command: str, verbose: bool) -> QuietLogging | None:
    """Spinners, a progress bar and stage lines for the engine's announcements; unless
    `verbose`, warnings and third-party logs into `.llmops/logs/<command>-<time>.log`
    (returned; None with -v: everything reaches the terminal as it always did)."""
    from llmops.cli import output
    from llmops.process import activity

    output.VERBOSE = verbose
    activity.install(Terminal(verbose))
    if verbose:
        return None
    # In-process progress bars (the data gate's, datasets') are no log; the Axolotl process
    # gets its bar back (`llmops.train.run`): the training progress is read from it.
    os.environ.setdefault("TQDM_DISABLE", "1")
    # MLflow attaches its own terminal handler on import unless told not to: its records
    # (database migrations, retries) then reach the command's log file like the others.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    # "View run at …" after every run a remote server ends: the summary names the run.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    quiet = QuietLogging(command_log(command))
    quiet.install()
    return quiet


def _point_at_log(quiet: QuietLogging | None, with_tail: bool) -> None:
    """After a failure: where the command's full log is (and its last lines, for a failure
    whose message carries no log of its own). A stage's own log (train.log, the server's
    log) is already named, with its tail, in its error."""
    if quiet is None or not quiet.path.is_file() or not quiet.path.stat().st_size:
        return
    if with_tail and (tail := quiet.tail(20).rstrip("\n")):
        console.print(escape(redact(tail)), highlight=False, style="dim")
    console.print(f"full log: {quiet.path}", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
