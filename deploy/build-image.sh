#!/usr/bin/env bash
# Builds the kms-plugin container image from deploy/Dockerfile and prints its tag on stdout
# (progress goes to stderr).
#
#   deploy/build-image.sh [--binary FILE] [TAG]          TAG defaults to localhost/kms-plugin:latest
#
# Engine: docker when its engine answers, else podman (KMS_CONTAINER_ENGINE=docker|podman forces
# one; .ci/provision-podman.sh installs podman on Debian). Bases: the Dockerfile's defaults,
# rust:1.95-bookworm and gcr.io/distroless/cc-debian12:nonroot (BUILDER_IMAGE and RUNTIME_IMAGE in
# the environment override them). A base that is neither present nor pullable is replaced by a
# substitute assembled here from Debian packages of this host's release, and the script says so:
#   - runtime: the packages distroless/cc-debian12 is made of (base-files, netbase, tzdata,
#     ca-certificates, libc6, libssl3, libgcc-s1, libgomp1, libstdc++6) and its users, among
#     them nonroot (65532), the default user;
#   - builder: busybox-static and a kms-plugin binary built by the host's toolchain
#     (`cargo build --release -p kms-plugin --locked`), handed to the Dockerfile through
#     PREBUILT_BINARY. The host's glibc must not be newer than the runtime's.
# --binary FILE uses FILE as that binary (e.g. one `cargo build` already produced) and skips the
# builder base altogether. Substitute bases are kept and reused (`<engine> rmi` them to rebuild).
set -euo pipefail

binary=
tag=localhost/kms-plugin:latest
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$(realpath -e "${2:?--binary needs a file}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-image: unknown option $1" >&2; exit 2 ;;
        *) tag=$1; shift ;;
    esac
done
cd "$(dirname "$0")/.."
source deploy/container-engine.sh

say() { echo "build-image: $*" >&2; }
engine_pick || { say "no container engine: install podman (.ci/provision-podman.sh) or docker"; exit 1; }
engine() { "${ENGINE[@]}" "$@"; }
say "engine: ${ENGINE[*]}"

dockerfile_default() { sed -n "s/^ARG $1=//p" deploy/Dockerfile; }
builder=${BUILDER_IMAGE:-$(dockerfile_default BUILDER_IMAGE)}
runtime=${RUNTIME_IMAGE:-$(dockerfile_default RUNTIME_IMAGE)}

# podman does not guess a registry for short names when it cannot ask; docker means Docker Hub.
qualified() {
    if [[ $1 != */* ]]; then
        echo "docker.io/library/$1"
    else
        case ${1%%/*} in
            *.*|*:*|localhost) echo "$1" ;;
            *) echo "docker.io/$1" ;;
        esac
    fi
}

present_or_pulled() {
    engine image inspect "$1" >/dev/null 2>&1 && return 0
    say "pulling $1"
    timeout 300 "${ENGINE[@]}" pull "$1" >&2 2>/dev/null
}

# A substitute base is reused while this script, which assembles it, is unchanged.
recipe_label=org.kms-plugin.substitute-recipe
recipe=$(sha256sum deploy/build-image.sh | cut -c1-16)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Extracts Debian packages of this host's release into $1 (no maintainer scripts run).
unpack_debs() {
    local root=$1; shift
    mkdir -p "$work/debs"
    if ! (cd "$work/debs" && apt-get download "$@" >/dev/null 2>&1); then
        apt-get update -qq >&2
        (cd "$work/debs" && apt-get download "$@" >/dev/null 2>&1) \
            || { say "apt-get download $* failed"; return 1; }
    fi
    local package deb
    for package in "$@"; do
        deb=$(ls "$work/debs/${package}"_*.deb)
        dpkg-deb -x "$deb" "$root"
        dpkg-deb --show --showformat '${Package}=${Version}\n' "$deb" >> "$root.packages"
    done
}

# Imports directory $1 as image $2, with the extra image settings given after it.
import_rootfs() {
    local root=$1 image=$2; shift 2
    local changes=() change
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$root" --numeric-owner -cf - . | engine import "${changes[@]}" - "$image" >/dev/null
}

substitute_runtime() {
    local release image root
    release=$(. /etc/os-release && echo "debian${VERSION_ID:-unknown}")
    image=localhost/kms-plugin-substitute/cc-$release:nonroot
    if [ "$(engine image inspect --format "{{index .Config.Labels \"$recipe_label\"}}" "$image" 2>/dev/null)" = "$recipe" ]; then
        say "$runtime cannot be pulled: reusing substitute $image (Debian packages of this host)"
        echo "$image"; return
    fi
    say "$runtime cannot be pulled: assembling substitute $image from Debian packages"
    engine rmi "$image" >/dev/null 2>&1 || true
    root=$work/runtime
    mkdir -p "$root"
    unpack_debs "$root" base-files netbase tzdata ca-certificates libc6 libssl3 libgcc-s1 libgomp1 libstdc++6
    # What ca-certificates' maintainer script would generate: the bundle distroless ships.
    mkdir -p "$root/etc/ssl/certs"
    cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
    # distroless's users and groups.
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' > "$root/etc/group"
    chmod 0644 "$root/etc/passwd" "$root/etc/group"
    install -d -m 0700 "$root/root"
    install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
    install -d -m 1777 "$root/tmp"
    rm -rf "$root/var/run" && ln -s /run "$root/var/run"
    rm -rf "$root/usr/share/doc"/*/changelog* "$root/usr/share/man" "$root/usr/share/lintian"
    import_rootfs "$root" "$image" \
        "LABEL org.opencontainers.image.description=\"substitute for $runtime from Debian packages: $(paste -sd' ' "$root.packages")\"" \
        "LABEL $recipe_label=$recipe" \
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        "USER 65532:65532" "WORKDIR /home/nonroot"
    echo "$image"
}

# A builder holding $1 at /prebuilt/kms-plugin, with busybox for the Dockerfile's RUN.
substitute_builder() {
    local source=$1 image root applet
    image=localhost/kms-plugin-substitute/builder:$(sha256sum "$source" | cut -c1-16)
    if engine image inspect "$image" >/dev/null 2>&1; then
        echo "$image"; return
    fi
    root=$work/builder
    mkdir -p "$root"
    unpack_debs "$root" busybox-static
    for applet in $("$root/bin/busybox" --list); do
        [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    install -D -m 0755 "$source" "$root/prebuilt/kms-plugin"
    import_rootfs "$root" "$image" \
        "LABEL org.opencontainers.image.description=\"substitute builder: busybox-static and a kms-plugin built on the host\"" \
        "ENV PATH=/bin"
    echo "$image"
}

runtime_q=$(qualified "$runtime")
present_or_pulled "$runtime_q" || runtime_q=$(substitute_runtime)

build_args=()
prebuilt=yes
if [ -n "$binary" ]; then
    say "builder: the given binary $binary (no compilation in the image)"
    builder_q=$(substitute_builder "$binary")
    build_args+=(--build-arg PREBUILT_BINARY=/prebuilt/kms-plugin)
else
    builder_q=$(qualified "$builder")
    if present_or_pulled "$builder_q"; then
        prebuilt=
    else
        say "$builder cannot be pulled: building kms-plugin with the host's toolchain instead"
        target_dir=$(cargo metadata --format-version 1 --no-deps \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
        cargo build --release -p kms-plugin --locked >&2
        builder_q=$(substitute_builder "$target_dir/release/kms-plugin")
        say "substitute builder $builder_q (busybox-static from Debian, the host's release binary)"
        build_args+=(--build-arg PREBUILT_BINARY=/prebuilt/kms-plugin)
    fi
fi

if [ "${ENGINE[0]}" = podman ]; then
    # Bases are local by now. A prebuilt binary needs no network, and its builder stage is a
    # copy not worth caching (nor keeping as an unnamed image).
    build_args+=(--pull=never --ignorefile deploy/Dockerfile.dockerignore)
    [ -n "$prebuilt" ] && build_args+=(--network none --layers=false)
fi
say "building $tag from $builder_q and $runtime_q"
engine build "${ENGINE_LIMITS[@]}" "${build_args[@]}" -f deploy/Dockerfile \
    --build-arg "BUILDER_IMAGE=$builder_q" --build-arg "RUNTIME_IMAGE=$runtime_q" -t "$tag" . >&2
# The substitute builder only carried the binary, now in the image.
[ -n "$prebuilt" ] && engine rmi "$builder_q" >/dev/null 2>&1 || true
say "built $tag ($(engine image inspect --format '{{.Size}}' "$tag") bytes)"
echo "$tag"
