"""Prefect flows: thin wiring of `llmops.stages.release` (deployments in ../prefect.yaml)."""
