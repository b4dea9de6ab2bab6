#!/usr/bin/env bash
# The quickstart demo: sets everything up, starts the autoscaler on deploy/demo.toml, drives
# CPU load through the load balancer and prints what happens: 1 replica -> up to 4 -> back to 1.
# Afterwards it stops the daemon and removes what the demo created (label autoscaler.service=demo).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/deploy/setup.sh"
cd "$repo"

cleanup() {
    if [ -n "${daemon_pid:-}" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        wait "$daemon_pid" || true
    fi
    ids=$(docker ps -aq --filter label=autoscaler.service=demo)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null
    docker network ls -q --filter label=autoscaler.service=demo | xargs -r docker network rm >/dev/null
    echo "demo: cleaned up"
}
trap cleanup EXIT

.venv/bin/autoscaler validate --config deploy/demo.toml
.venv/bin/autoscaler run --config deploy/demo.toml &
daemon_pid=$!
for _ in $(seq 1 60); do
    curl -fs http://127.0.0.1:9465/status 2>/dev/null | grep -q '"ready": 1' && break
    sleep 1
done
echo "demo: clients use http://127.0.0.1:8088 ; metrics at http://127.0.0.1:9465/metrics"
.venv/bin/python deploy/loadgen.py --lb 127.0.0.1:8088 --status http://127.0.0.1:9465/status --service demo
