#!/usr/bin/env bash
# The quickstart demo: sets everything up, starts the autoscaler on deploy/demo.toml and shows
# two services at once:
#   demo         a web service behind its load balancer: CPU load through it takes it from
#                1 replica up to 4 and back to 1;
#   demo-worker  a queue worker with no load balancer: a burst of jobs pushed onto a Redis list
#                takes it from 0 replicas up to 4 and back to 0, and every job is checked to have
#                been done exactly once.
# Afterwards it stops the daemon and removes what the demo created (containers and networks
# labelled autoscaler.service=demo, autoscaler.service=demo-worker or autoscaler.demo=quickstart),
# also when it fails or is interrupted.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The daemon runs from the virtualenv, not from its image: the demo needs only these.
bash "$repo/deploy/setup.sh" autoscaler-haproxy autoscaler-demo-app autoscaler-redis
cd "$repo"

# The worker's queue: on the workers' network by name, on loopback for the daemon (demo.toml).
redis_name=autoscaler-demo-redis
redis_port=16379
worker_network=autoscaler-demo-worker
labels=(autoscaler.service=demo autoscaler.service=demo-worker autoscaler.demo=quickstart)

# Tolerant and repeated: a lease container may be removing itself as the daemon stops, and a
# network can be removed only once its containers are gone.
remove_demo_objects() {
    local label ids attempt left
    for attempt in 1 2 3 4 5; do
        left=0
        for label in "${labels[@]}"; do
            ids=$(docker ps -aq --filter "label=$label")
            if [ -n "$ids" ]; then
                docker rm -f $ids >/dev/null 2>&1 || left=1
            fi
        done
        for label in "${labels[@]}"; do
            ids=$(docker network ls -q --filter "label=$label")
            if [ -n "$ids" ]; then
                docker network rm $ids >/dev/null 2>&1 || left=1
            fi
        done
        [ "$left" -eq 0 ] && return 0
        sleep 1
    done
    echo "demo: could not remove everything labelled ${labels[*]} (docker ps -a --filter label=...)" >&2
    return 1
}

cleanup() {
    if [ -n "${loadgen_pid:-}" ] && kill -0 "$loadgen_pid" 2>/dev/null; then
        kill -TERM "$loadgen_pid"
    fi
    if [ -n "${daemon_pid:-}" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"
        wait "$daemon_pid" || true
    fi
    remove_demo_objects && echo "demo: cleaned up"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

.venv/bin/python -m autoscaler.cli validate --config deploy/demo.toml
remove_demo_objects  # what a killed earlier run may have left
docker network create --label autoscaler.demo=quickstart "$worker_network" >/dev/null
docker run -d --name "$redis_name" --label autoscaler.demo=quickstart --network "$worker_network" \
    -p "127.0.0.1:$redis_port:6379" autoscaler-redis:latest >/dev/null
for _ in $(seq 1 30); do
    docker exec "$redis_name" redis-cli ping 2>/dev/null | grep -q PONG && break
    sleep 0.5
done

# python -m from the repository: the daemon is this checkout's code.
.venv/bin/python -m autoscaler.cli run --config deploy/demo.toml &
daemon_pid=$!
for _ in $(seq 1 60); do
    curl -fs http://127.0.0.1:9465/status 2>/dev/null | grep -q '"ready": 1' && break
    sleep 1
done
echo "demo: clients use http://127.0.0.1:8088 ; metrics at http://127.0.0.1:9465/metrics ; jobs queue redis://127.0.0.1:$redis_port (list \"jobs\")"
# In the background and waited for, so that Ctrl-C or a TERM reaches the traps at once.
.venv/bin/python deploy/loadgen.py --lb 127.0.0.1:8088 --status http://127.0.0.1:9465/status --service demo \
    --worker-service demo-worker --redis "redis://127.0.0.1:$redis_port/0" --jobs 80 &
loadgen_pid=$!
wait "$loadgen_pid"
