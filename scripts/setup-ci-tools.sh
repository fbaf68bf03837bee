#!/usr/bin/env bash
# Tools to run the GitLab CI pipelines on this machine: gitlab-ci-local (npm, runs on
# Node 20) into .tools/, and rsync (Debian), which gitlab-ci-local uses for artifacts; and
# the checkers of deploy/monitoring/: promtool (Debian) and Grafana's dashboard schema (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
GCL_VERSION=4.65.0
GRAFANA_SCHEMA_VERSION=13.2.3
TSJSG_VERSION=2.4.0
if ! command -v rsync >/dev/null; then
  bash scripts/apt-install.sh rsync || {
    echo "setup-ci-tools: rsync is missing: install it (e.g. sudo apt-get install rsync)" >&2
    exit 2; }
fi
# Headless Chromium (Debian) for tests/e2e/test_mlflow_ui.py's screenshots of the MLflow UI;
# that test skips, saying so, where it cannot be installed.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  bash scripts/apt-install.sh chromium ||
    echo "setup-ci-tools: chromium is missing: the MLflow UI check will skip" >&2
fi
# promtool (Debian's prometheus package) checks and unit-tests deploy/monitoring/alerts.yml.
if ! command -v promtool >/dev/null; then
  bash scripts/apt-install.sh prometheus || {
    echo "setup-ci-tools: promtool is missing (e.g. sudo apt-get install prometheus)" >&2
    exit 2; }
fi
# A Kubernetes 1.20 control plane for the cluster tests (tests/k8s_sim, a test harness):
# built from Debian's sources once per machine into ~/.cache/llmops (minutes cold, then
# instant); the tests' fixture would build it too, this only says so up front. KEDA's
# ScaledObject CRD for it, likewise cached.
bash scripts/k8s-sim/build.sh >/dev/null
bash scripts/k8s-sim/keda-crd.sh >/dev/null
command -v npm >/dev/null || { echo "setup-ci-tools: npm is missing (Node 20)" >&2; exit 2; }
if [ "$(.tools/node_modules/.bin/gitlab-ci-local --version 2>/dev/null)" != "$GCL_VERSION" ]; then
  npm install --prefix .tools --no-audit --no-fund --silent "gitlab-ci-local@$GCL_VERSION"
fi
# Grafana's dashboard types (@grafana/schema) and the generator that turns them into a JSON
# schema, which the dashboards llmops renders are validated against.
node_version() { node -p "require('./.tools/node_modules/$1/package.json').version" 2>/dev/null; }
if [ "$(node_version @grafana/schema)" != "$GRAFANA_SCHEMA_VERSION" ] ||
   [ "$(node_version ts-json-schema-generator)" != "$TSJSG_VERSION" ]; then
  npm install --prefix .tools --no-audit --no-fund --silent \
    "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "ts-json-schema-generator@$TSJSG_VERSION"
fi
echo "setup-ci-tools: gitlab-ci-local $(.tools/node_modules/.bin/gitlab-ci-local --version), $(rsync --version | head -1), $(promtool --version 2>&1 | head -1), @grafana/schema $(node_version @grafana/schema)"
