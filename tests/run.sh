#!/usr/bin/env bash
# The test command: sets up what the tests need (Docker engine, venv, images), then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/unit -q`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/deploy/setup.sh"
cd "$repo"
exec .venv/bin/python -m pytest "${@:-tests}"
