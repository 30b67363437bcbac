#!/usr/bin/env bash
# Installs podman with runc for the container image test (tests/container.sh), and the Debian
# tools deploy/build-image.sh uses to assemble substitute base images when public registries
# cannot be reached (apt-get download, dpkg-deb). Idempotent: does nothing when podman and runc
# are present, or when a Docker engine answers. Without apt-get it installs nothing and says so
# (tests/container.sh then skips with a message).
set -euo pipefail

if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
    echo "provision-podman: $(podman --version) with $(runc --version | head -n1) already installed"
    exit 0
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo "provision-podman: a Docker engine answers; the container test uses it"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    # Not an error: tests/container.sh then says it skips, and why.
    echo "provision-podman: no apt-get here and no container engine: the container test will be skipped"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# runc: crun (podman's default runtime) cannot start containers in some sandboxes where runc can.
apt-get install -y -qq --no-install-recommends podman runc uidmap netavark aardvark-dns \
    fuse-overlayfs ca-certificates >/dev/null
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    echo "provision-podman: podman/runc installed but not on PATH" >&2
    exit 1
fi
echo "provision-podman: installed $(podman --version) with $(runc --version | head -n1)"
