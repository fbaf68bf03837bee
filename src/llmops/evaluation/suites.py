"""The evaluation suites a model runs (llmops.evaluation.suite), from its configuration.

Each suite module offers a builder, `ModelSpec -> Suite | None` (None: not configured for
this model); they are listed here, once.
"""

from __future__ import annotations

from collections.abc import Callable

from llmops.config import ModelSpec
from llmops.evaluation.suite import Suite

SuiteBuilder = Callable[[ModelSpec], "Suite | None"]


def builders() -> list[SuiteBuilder]:
    """Every suite builder (imported here, so that a suite's dependencies load only when
    an evaluation runs)."""
    from llmops.evaluation import lmeval, retention
    from llmops.evaluation.probes import probes_suite
    return [
        retention.build,
        lmeval.build,
        probes_suite,
    ]


def suites_for(spec: ModelSpec) -> list[Suite]:
    return [s for build in builders() if (s := build(spec)) is not None]


def check_files(spec: ModelSpec) -> None:
    """The suites' own files, read as evaluation reads them (the probe set, the retention
    set, the lm-eval tasks), without the training data: the data gate reads that next and
    names its bad lines. UsageError names the file."""
    from llmops.config.paths import resolve_in_repo
    from llmops.evaluation import lmeval, retention
    from llmops.evaluation.probes import load_probe_set

    probes = spec.validation.probes
    if probes is not None and probes.path:
        load_probe_set(resolve_in_repo(probes.path))
    retention.read_set(spec)
    lmeval.build(spec)
