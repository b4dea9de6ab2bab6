#!/usr/bin/env bash
# A real three-node Docker Swarm (one manager, two workers) on this one machine, made of
# Docker-in-Docker nodes, with the project's images delivered to every node (no registry).
#
#   bash deploy/swarm-lab.sh up       # builds, starts, joins, loads images; prints DOCKER_HOST
#   bash deploy/swarm-lab.sh down     # removes the nodes, their volumes and the network
#   bash deploy/swarm-lab.sh env      # prints the export lines again
#   bash deploy/swarm-lab.sh load     # delivers the images again (after deploy/build-images.sh)
#
# The daemon on this host then talks to the manager: DOCKER_HOST=unix://$LAB_RUN/docker.sock.
# The manager shares /run/autoscaler with this host, so a load balancer the daemon runs there
# puts its admin socket where the daemon can reach it. Nodes are reachable from this host on
# the lab network (clients: <manager address>:<published port>).
# Flags as measured on this kind of machine (../shared/ENVIRONMENT.md): --privileged fails here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NETWORK=autoscaler-swarmlab
NODE_IMAGE=autoscaler-swarm-node:latest
NODES=(swarmlab-manager swarmlab-worker1 swarmlab-worker2)
LAB_RUN=${LAB_RUN:-/run/autoscaler-swarmlab}
IMAGES=(autoscaler-demo-app:latest autoscaler-haproxy:latest autoscaler:latest)

say() { printf 'swarm-lab: %s\n' "$*" >&2; }

node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$1"; }

in_node() { local node=$1; shift; docker exec "$node" docker "$@"; }

build_node_image() {
    local hash current
    hash=$( (cd "$here/swarm-node" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
    current=$(docker image inspect -f '{{ index .Config.Labels "autoscaler.context-hash" }}' "$NODE_IMAGE" 2>/dev/null || true)
    if [ "$current" != "$hash" ]; then
        say "building $NODE_IMAGE (about 25 s)"
        docker build -q --label "autoscaler.context-hash=$hash" -t "$NODE_IMAGE" "$here/swarm-node" >/dev/null
    fi
}

start_node() {
    local name=$1 extra=()
    if [ "$name" = "${NODES[0]}" ]; then
        extra=(-v /run/autoscaler:/run/autoscaler -v "$LAB_RUN:/run/lab")
    fi
    docker run -d --name "$name" --hostname "$name" --network "$NETWORK" \
        --label autoscaler.swarmlab=true \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --security-opt systempaths=unconfined --device-cgroup-rule='a *:* rwm' \
        -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run \
        --mount "type=volume,source=$name-docker,target=/var/lib/docker,volume-label=autoscaler.swarmlab=true" \
        "${extra[@]}" "$NODE_IMAGE" >/dev/null
}

wait_engine() {
    local node=$1
    for _ in $(seq 1 60); do
        in_node "$node" info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    say "the engine in $node did not come up"; docker logs "$node" 2>&1 | tail -20 >&2; return 1
}

print_env() {
    local manager_ip
    manager_ip=$(node_ip "${NODES[0]}")
    echo "export DOCKER_HOST=unix://$LAB_RUN/docker.sock"
    echo "export SWARMLAB_MANAGER_IP=$manager_ip"
}

up() {
    if docker ps -q --filter label=autoscaler.swarmlab=true | grep -q .; then
        say "the lab is already up"; print_env; return
    fi
    bash "$here/build-images.sh" >&2
    build_node_image
    mkdir -p "$LAB_RUN" /run/autoscaler
    chmod 700 "$LAB_RUN"
    docker network inspect "$NETWORK" >/dev/null 2>&1 ||
        docker network create --label autoscaler.swarmlab=true "$NETWORK" >/dev/null
    for node in "${NODES[@]}"; do start_node "$node"; done
    for node in "${NODES[@]}"; do wait_engine "$node"; done
    local manager=${NODES[0]} manager_ip token
    manager_ip=$(node_ip "$manager")
    in_node "$manager" swarm init --advertise-addr "$manager_ip" >/dev/null
    token=$(in_node "$manager" swarm join-token -q worker)
    for node in "${NODES[@]:1}"; do
        in_node "$node" swarm join --token "$token" --advertise-addr "$(node_ip "$node")" "$manager_ip:2377" >/dev/null
    done
    say "swarm of ${#NODES[@]} nodes up"
    load_images
    in_node "$manager" node ls >&2
    print_env
}

# Every node gets the project's images from this host's engine (there is no registry).
load_images() {
    say "loading ${IMAGES[*]} into every node"
    local saved pids=()
    saved=$(mktemp /tmp/swarmlab-images.XXXXXX.tar)
    docker save -o "$saved" "${IMAGES[@]}"
    for node in "${NODES[@]}"; do
        docker exec -i "$node" docker load -q < "$saved" >/dev/null & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    rm -f "$saved"
}

down() {
    local ids
    ids=$(docker ps -aq --filter label=autoscaler.swarmlab=true)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null
    docker volume ls -q --filter label=autoscaler.swarmlab=true | xargs -r docker volume rm -f >/dev/null
    docker network ls -q --filter label=autoscaler.swarmlab=true | xargs -r docker network rm >/dev/null
    rm -rf "$LAB_RUN"
    say "the lab is down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) print_env ;;
    load) load_images ;;
    *) echo "usage: $0 up|down|env|load" >&2; exit 2 ;;
esac
