# The two commands of the README: `make release` and `make test`. Both build first.
.PHONY: setup release test lint

setup:
	bash scripts/setup.sh

release: setup
	.venv/bin/llmops release support-bot

lint: setup
	.venv/bin/ruff check src flows tests benchmarks datasets
	.venv/bin/mypy src/llmops

test: lint
	.venv/bin/python -m pytest -m "not slow and not gpu"
