#!/usr/bin/env bash
# Builds the project's images with no registry:
#   debian:bookworm-slim        (pulled if a registry answers, else made with debootstrap)
#   autoscaler-haproxy:latest   (Debian's HAProxy 2.6, runtime API + Prometheus exporter)
#   autoscaler-demo-app:latest  (stdlib Python HTTP server that burns CPU on request, and a
#                               Redis queue worker: python3 /app/worker.py)
#   autoscaler-redis:latest     (Debian's Redis: the worker demo's queue, the Redis source's tests)
#   autoscaler:latest           (the daemon: deploy/autoscaler/Dockerfile, from the repository's root)
# Idempotent: an image is rebuilt only when the hash of its build context changed.
# With arguments, only the images named (without ":latest"), e.g. the demo's:
#   build-images.sh autoscaler-haproxy autoscaler-demo-app autoscaler-redis
# AUTOSCALER_KEEP_IMAGES=1 uses an image that exists as it is, even when its context changed: on
# an engine shared with someone testing another checkout, rebuilding would change their images.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base_image=debian:bookworm-slim

log() { printf 'build-images: %s\n' "$*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror the host itself uses; read at run time so no host name is written into the repo.
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    printf '%s' "${uri:-http://deb.debian.org/debian}"
}

debian_security_mirror() {
    local uri
    uri=$(awk '/^URIs:/ && /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    printf '%s' "${uri:-http://deb.debian.org/debian-security}"
}

make_base_with_debootstrap() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    fi
    local root mirror security
    root=$(mktemp -d /tmp/autoscaler-rootfs.XXXXXX)
    mirror=$(debian_mirror)
    security=$(debian_security_mirror)
    log "debootstrap bookworm from $mirror (about 30 s)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/usr/share/locale/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
    : > "$root/etc/resolv.conf"
    : > "$root/etc/hostname"
    rm -f "$root/etc/apt/sources.list"
    cat > "$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    tar -C "$root" -c . | docker import - "$base_image" >/dev/null
    rm -rf "$root"
    log "imported $base_image"
}

ensure_base() {
    if have_image "$base_image"; then
        return
    fi
    log "$base_image is missing: trying the registry"
    if timeout 30 docker pull "$base_image" >/dev/null 2>&1; then
        log "pulled $base_image"
        return
    fi
    log "no registry: building $base_image from Debian packages"
    make_base_with_debootstrap
}

context_hash() {
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

kept() {
    if [ -n "${AUTOSCALER_KEEP_IMAGES:-}" ] && have_image "$1"; then
        log "$1 exists: kept as it is (AUTOSCALER_KEEP_IMAGES)"
        return 0
    fi
    return 1
}

# build TAG DIR: rebuilds only when the context hash label differs from the existing image.
build() {
    local tag=$1 dir=$2 hash current
    kept "$tag" && return
    hash=$(context_hash "$dir")
    current=$(docker image inspect -f '{{ index .Config.Labels "autoscaler.context-hash" }}' "$tag" 2>/dev/null || true)
    if [ "$current" = "$hash" ]; then
        log "$tag is up to date ($hash)"
        return
    fi
    log "building $tag"
    docker build -q --label "autoscaler.context-hash=$hash" -t "$tag" "$dir" >/dev/null
    log "built $tag ($hash)"
}

# The daemon's image, built from the repository's root (deploy/autoscaler/Dockerfile): the
# image's own Python resolves and installs the project and its dependencies. They come from
# deploy/autoscaler/wheelhouse/, filled here by the host's pip for the image's Python and platform
# (fetch-wheels.py), so the build's containers need no package index: none may be reachable from
# them (or only through a TLS-inspecting proxy that the host alone trusts).
build_daemon() {
    local repo wheelhouse hash current python venv_stage
    kept autoscaler:latest && return
    repo=$(cd "$here/.." && pwd)
    wheelhouse="$here/autoscaler/wheelhouse"
    hash=$( (cd "$repo" && find .dockerignore pyproject.toml autoscaler deploy/loadgen.py deploy/autoscaler \
        -name '*.pyc' -prune -o -name '*.whl' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -c1-16)
    current=$(docker image inspect -f '{{ index .Config.Labels "autoscaler.context-hash" }}' autoscaler:latest 2>/dev/null || true)
    if [ "$current" = "$hash" ]; then
        log "autoscaler:latest is up to date ($hash)"
        return
    fi
    python=python3
    [ -x "$repo/.venv/bin/python" ] && python="$repo/.venv/bin/python"
    log "downloading wheels for the image's Python (its marker environment and tags) into $wheelhouse"
    venv_stage=$(docker build -q --force-rm --target venv -f "$here/autoscaler/Dockerfile" "$repo")
    rm -f "$wheelhouse"/*.whl
    # pip warns about every optional local index that is absent; keep real errors visible.
    { docker run -i --rm --network none "$venv_stage" \
            /opt/autoscaler/bin/python - describe < "$here/autoscaler/fetch-wheels.py" \
        | "$python" "$here/autoscaler/fetch-wheels.py" download "$repo" "$wheelhouse"; } 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
    log "building autoscaler:latest (no index: the wheelhouse only)"
    docker build -q --force-rm --build-arg PIP_NO_INDEX=1 --label "autoscaler.context-hash=$hash" -t autoscaler:latest \
        -f "$here/autoscaler/Dockerfile" "$repo" >/dev/null
    log "built autoscaler:latest ($hash)"
}

images=(autoscaler-haproxy autoscaler-demo-app autoscaler-redis autoscaler)
for name in "$@"; do
    case " ${images[*]} " in
        *" $name "*) ;;
        *) log "unknown image $name (known: ${images[*]})"; exit 2 ;;
    esac
done
# wanted NAME [SELECTED...]: true when nothing is selected (every image) or NAME is.
wanted() {
    local name=$1
    shift
    [ $# -eq 0 ] && return 0
    case " $* " in *" $name "*) return 0 ;; esac
    return 1
}

docker info >/dev/null 2>&1 || { log "the Docker engine is not reachable (is dockerd running?)"; exit 1; }
ensure_base
if wanted autoscaler-haproxy "$@"; then build autoscaler-haproxy:latest "$here/haproxy"; fi
if wanted autoscaler-demo-app "$@"; then build autoscaler-demo-app:latest "$here/demo-app"; fi
if wanted autoscaler-redis "$@"; then build autoscaler-redis:latest "$here/redis"; fi
if wanted autoscaler "$@"; then build_daemon; fi
