#!/usr/bin/env bash
# One command from a fresh clone: a virtual environment in .venv with the project, its cluster
# extra and its test tools, and the Dagster instance folder (.dagster_home) with the project's
# settings.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet -e ".[dev,cluster]"
mkdir -p .dagster_home
[ -f .dagster_home/dagster.yaml ] || cp dagster.yaml .dagster_home/dagster.yaml
echo "ready: run the tests with  $VENV/bin/pytest"
