"""The data gate's verdict: per dataset, each check with its first offending lines."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class CheckResult:
    """One row of the report: a check, its verdict, and the first offending lines."""

    check: str
    passed: bool
    observed: str
    threshold: str
    lines: list[int] = field(default_factory=list)


@dataclass
class DatasetReport:
    path: str
    split: str
    sha256: str
    examples: int
    token_p50: int
    token_p95: int
    token_max: int
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class DataReport:
    """The verdict over every dataset of a model, with where its reports are: the JSON, the
    self-contained HTML page (readable offline) and Great Expectations' Data Docs."""

    model: str
    datasets: list[DatasetReport]
    json_path: str
    docs_path: str
    seconds: float
    html_path: str = ""

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.datasets)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({**asdict(self), "passed": self.passed}, indent=2))

    @classmethod
    def read_json(cls, path: str | Path) -> DataReport:
        """A report back from its data_report.json."""
        body = json.loads(Path(path).read_text())
        datasets = [
            DatasetReport(**{**{k: v for k, v in ds.items() if k != "checks"},
                             "checks": [CheckResult(**c) for c in ds["checks"]]})
            for ds in body["datasets"]]
        return cls(body["model"], datasets, body["json_path"], body["docs_path"],
                   body["seconds"], body.get("html_path", ""))
