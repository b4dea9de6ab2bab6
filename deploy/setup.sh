#!/usr/bin/env bash
# Idempotent set-up shared by the quickstart commands and CI: a Docker engine, a virtualenv
# with the project installed, and the project's images built with no registry.
# Safe to run again: every step checks first and is fast when already done.
# Arguments, if any, name the images to build (see build-images.sh); default: all of them.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -q >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "$@" >/dev/null
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        say "installing Debian's docker.io (no Docker engine found)"
        apt_install docker.io
    fi
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd in the background (log: /tmp/dockerd.log)"
        as_root sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    docker info >/dev/null 2>&1 || { say "dockerd did not come up; see /tmp/dockerd.log"; exit 1; }
}

ensure_venv() {
    local venv="$repo/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        python3 -m venv "$venv"
    fi
    # Reinstall only when the project's dependencies changed.
    local stamp="$venv/.installed-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        say "installing the project and its test dependencies into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[test]"
        rm -f "$venv"/.installed-*
        touch "$stamp"
    fi
}

ensure_tools() {
    # debootstrap makes the Debian base image when no registry is reachable.
    if ! command -v debootstrap >/dev/null 2>&1 && ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
        say "installing debootstrap"
        apt_install debootstrap
    fi
}

ensure_docker
ensure_tools
ensure_venv
"$repo/deploy/build-images.sh" "$@"
