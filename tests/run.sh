#!/usr/bin/env bash
# The whole test suite, on a fresh machine: provisions what the tests need, then runs them.
# Nothing is skipped silently: if a tool cannot be provisioned, this fails and says which.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh clone gains nothing from incremental caches; they only take disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build, the fuzz targets and the Go caches of the Kubernetes build take about 9 GiB; warn with some margin rather than fail in the linker.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kib=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
echo "disk: $((free_kib / 1024)) MiB free for $target_dir"
if [ "$free_kib" -lt $((12 * 1024 * 1024)) ]; then
    echo "warning: under 12 GiB free; the build may run out of space" >&2
fi

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The crash tests kill pki at each rename with strace's fault injection.
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# promtool checks the plugin's /metrics and the shipped alert rules.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "provision: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for script in .ci/provision-*.sh; do
    bash "$script"
done
# Python grpcio is the gRPC C-core client used to prove :authority tolerance.
if ! python3 -c 'import grpc' >/dev/null 2>&1; then
    echo "provision: pip install grpcio"
    python3 -m pip install --quiet grpcio || python3 -m pip install --quiet --break-system-packages grpcio
fi
python3 -c 'import grpc' || { echo "grpcio could not be installed; the C-core client test needs it" >&2; exit 1; }
# Python cryptography is the independent verifier of signed service-account tokens.
if ! python3 -c 'import cryptography.hazmat.primitives.asymmetric.ec' >/dev/null 2>&1; then
    echo "provision: pip install cryptography"
    python3 -m pip install --quiet cryptography || python3 -m pip install --quiet --break-system-packages cryptography
fi
# PyYAML reads the static pod for the container test (tests/container/pod_settings.py).
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "provision: pip install pyyaml"
    python3 -m pip install --quiet pyyaml || python3 -m pip install --quiet --break-system-packages pyyaml
fi
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

# The lints declared in Cargo.toml are enforced here, not only declared.
if ! cargo fmt --version >/dev/null 2>&1; then
    echo "provision: rustup component add rustfmt"
    rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    echo "provision: rustup component add clippy"
    rustup component add clippy
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The plugin without its optional backends (pkcs11, aws) still builds.
cargo build -p kms-plugin --no-default-features --locked

cargo build --workspace --all-targets --locked
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The image, built from the binary above and run with the static pod's settings.
tests/container.sh 2>&1 | tee -a "$log"
container_status=${PIPESTATUS[0]}
# The real control plane: kube-apiserver and kubectl built from the Go module proxy (cached
# under target/k8s/), etcd, our binaries (tests/k8s/run.sh).
# A failed build is reported once, with its own error, and not retried by run.sh.
if k8s_bin=$(tests/k8s/build.sh | tail -n1) && [ -d "$k8s_bin" ]; then
    tests/k8s/run.sh "$k8s_bin" 2>&1 | grep -v '^[IWE][0-9]\{4\} ' | tee -a "$log"
    k8s_status=${PIPESTATUS[0]}
else
    echo "k8s-e2e: 0 passed, 1 failed (tests/k8s/build.sh failed, see its error above)" | tee -a "$log"
    k8s_status=1
fi
# Every fuzz target: its seed corpus replayed, then a short bounded run (fuzz/README.md).
fuzz/smoke.sh 2>&1 | tee -a "$log"
fuzz_status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary), the image and
# the fuzz targets.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     /^(container|fuzz|k8s-e2e): [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
[ "$status" = 0 ] || exit "$status"
[ "$container_status" = 0 ] || exit "$container_status"
[ "$k8s_status" = 0 ] || exit "$k8s_status"
exit "$fuzz_status"
