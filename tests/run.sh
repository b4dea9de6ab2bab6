#!/usr/bin/env bash
# The test command: sets up what the tests need (Docker engine, venv, images, and Debian's
# prometheus/promtool and docker-compose for the observability tests, docker-registry and
# apache2-utils' htpasswd for the registry tests), then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/unit -q`.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests: installing ${missing[*]} (Debian packages)" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

bash "$repo/deploy/setup.sh"
cd "$repo"
# The type checker first: strict on autoscaler/ (pyproject.toml), a second or so.
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "${@:-tests}"
