"""What one command works with, built once from its settings and passed down: the registry
client, the run tags, the deployment targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from llmops.config.settings import Settings
from llmops.registry.base import Registry
from llmops.registry.promote import registry_backend
from llmops.tracking import git_tags


@dataclass
class Context:
    settings: Settings = field(default_factory=Settings.from_env)

    @cached_property
    def registry(self) -> Registry:
        return registry_backend(self.settings)

    @cached_property
    def run_tags(self) -> dict[str, str]:
        """Commit and CI identifiers, recorded on every run and version."""
        return git_tags(self.settings.ci_tags)
