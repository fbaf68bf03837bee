#!/usr/bin/env bash
# One command for local orchestration: a Prefect server on 127.0.0.1, the `manual` deployments
# of prefect.yaml registered against it, and a process worker that runs their flow runs.
# Runs in the foreground; Ctrl-C (or SIGTERM) stops the worker and the server.
#   PREFECT_PORT (default 4200), LLMOPS_HOME (default .llmops) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
export LLMOPS_ROOT="$PWD"
export LLMOPS_HOME="${LLMOPS_HOME:-$PWD/.llmops}"
export PREFECT_HOME="${PREFECT_HOME:-$LLMOPS_HOME/prefect-server}"
export PREFECT_RESULTS_LOCAL_STORAGE_PATH="${PREFECT_RESULTS_LOCAL_STORAGE_PATH:-$LLMOPS_HOME/prefect-results}"
export PREFECT_API_URL="http://127.0.0.1:${PREFECT_PORT:-4200}/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # flow runs import flows/ from here
PREFECT=.venv/bin/prefect
mkdir -p "$PREFECT_HOME"
log="$PREFECT_HOME/server.log"

"$PREFECT" server start --host 127.0.0.1 --port "${PREFECT_PORT:-4200}" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT  # until the worker runs
echo "starting the Prefect server (log: $log)"
for _ in $(seq 1 180); do
  if .venv/bin/python -c "import httpx,sys; sys.exit(httpx.get('$PREFECT_API_URL/health').status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 $server 2>/dev/null || { echo "the Prefect server exited:"; tail -20 "$log"; exit 1; }
  sleep 1
done
"$PREFECT" work-pool create llmops-local --type process --overwrite >/dev/null
# The `manual` deployments only: `production` ones go to the Kubernetes pool
# (scripts/prefect-kubernetes.sh).
"$PREFECT" --no-prompt deploy --name manual >/dev/null
echo "Prefect server: ${PREFECT_API_URL%/api}  (deployments: $("$PREFECT" deployment ls | grep -c manual || true))"
echo "run one with:  PREFECT_API_URL=$PREFECT_API_URL .venv/bin/prefect deployment run 'release/manual' --param model=tiny"
"$PREFECT" worker start --pool llmops-local --type process &
worker=$!
# The worker first, while its server still answers, then the server; each gets 30 s to stop
# (Prefect's worker can keep forwarding the signal to itself without exiting).
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 1; done
  echo "orchestrator: pid $1 did not stop within 30 s: killing it" >&2
  kill -9 "$1" 2>/dev/null || true
}
trap 'stop $worker; stop $server; wait 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
wait $worker
