#!/usr/bin/env bash
# Container entrypoint, and the same command outside Docker: ./run.sh <verb> [args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
# Use the project's environment when there is one (outside Docker); the image installs into its system Python.
if [[ -x "$here/.venv/bin/python" ]]; then
  PY="$here/.venv/bin/python"
else
  PY="${PYTHON:-python3}"
fi
export AXOLOTL_DO_NOT_TRACK=1           # Axolotl telemetry retries against closed networks
export TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m pipeline.cli "$@"
