"""Prefect flows: thin wiring of `llmops.stages` (deployments in ../prefect.yaml)."""
