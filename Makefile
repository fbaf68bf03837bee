# The two commands of the README: `make release` and `make test`. Both build first.
.PHONY: setup release test test-slow lint orchestrator

setup:
	bash scripts/setup.sh
	bash scripts/setup-native.sh

release: setup
	.venv/bin/llmops release support-bot

lint: setup
	.venv/bin/ruff check src flows tests benchmarks datasets
	.venv/bin/mypy src/llmops flows
	.venv/bin/lint-imports

# One worker per core (at most 4), each taking whole files: most tests and the imports
# behind every server and training start use one core, and a module's steps stay in order.
test: lint
	.venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile \
		-m "not slow and not gpu" --durations=25

# Heavier end-to-end runs (.ci/run runs them too): `prefect deployment run` via a worker,
# resume after SIGKILL, the tag pipeline through gitlab-ci-local.
test-slow: setup
	bash scripts/setup-ci-tools.sh
	.venv/bin/python -m pytest -m "slow and not gpu" --durations=25

# A local Prefect server + process worker with prefect.yaml's deployments (foreground).
orchestrator: setup
	bash scripts/orchestrator.sh
