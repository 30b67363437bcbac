#!/usr/bin/env bash
# Builds the container image with deploy/build-image.sh and runs it the way
# deploy/static-pod/kms-plugin.yaml runs it: its uid/gid, read-only root filesystem, all
# capabilities dropped, no privilege escalation, host network, its grace period and its hostPath
# mounts (bind mounts of directories under a temp root, prepared as the tmpfiles.d entry and
# install steps of deploy/README.md prepare the node). Then checks from the host: Status and an
# Encrypt/Decrypt round trip through the socket in the mounted directory, the socket's mode and
# owner, the state directory, the metrics endpoint, stop (exit 0, socket removed) and restart
# (the old ciphertext still decrypts).
#
#   tests/container.sh [KMS_PLUGIN_BINARY]
#
# The image gets the given binary, default the debug build `cargo build` left in the target
# directory (debug info stripped), through the builder substitute of build-image.sh: the
# production path of the Dockerfile compiles in the image instead, which CI cannot afford twice.
# Prints PASS/FAIL lines and "container: N passed, M failed"; exits 1 on any failure. Skips,
# saying so, only when there is no container engine (.ci/provision-podman.sh installs podman).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/container-engine.sh

if ! engine_pick; then
    echo "SKIP  container image test: no podman or docker here, and .ci/provision-podman.sh could not install one"
    echo "container: 0 passed, 0 failed (skipped)"
    exit 0
fi
engine() { "${ENGINE[@]}" "$@"; }

passed=0
failed=0
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
quietly() { "$@" >/dev/null 2>&1; }
# same VALUE EXPECTED: succeeds when equal, else prints both.
same() { [ "$1" = "$2" ] || { echo "      got '$1', expected '$2'"; return 1; }; }

binary=${1:-}
if [ -z "$binary" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    binary=$target_dir/debug/kms-plugin
fi
[ -x "$binary" ] || { fail "no kms-plugin binary at $binary (run cargo build first)"; echo "container: 0 passed, 1 failed"; exit 1; }

work=$(mktemp -d)
name=kms-plugin-test-$$
tag=localhost/kms-plugin:test-$$
summary_printed=
cleanup() {
    # An unexpected error ends the script early: count it, so the run's total shows it.
    [ -n "$summary_printed" ] || echo "container: $passed passed, $((failed + 1)) failed (aborted)"
    engine rm -f "$name" >/dev/null 2>&1 || true
    engine rmi "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
finish() {
    echo "container: $passed passed, $failed failed"
    summary_printed=yes
    if [ "$failed" = 0 ]; then exit 0; fi
    exit 1
}

# --- the image ---------------------------------------------------------------------------------
cp "$binary" "$work/kms-plugin"
objcopy --strip-debug "$work/kms-plugin" 2>/dev/null || true
started=$SECONDS
if built=$(deploy/build-image.sh --binary "$work/kms-plugin" "$tag" 2>"$work/build.log"); then
    pass "deploy/build-image.sh built $built in $((SECONDS - started))s ($(engine image inspect --format '{{.Size}}' "$tag") bytes)"
else
    fail "deploy/build-image.sh"; sed 's/^/      /' "$work/build.log"; finish
fi
grep '^build-image:' "$work/build.log" | sed 's/^/      /'
check "build-image.sh printed the tag" same "$built" "$tag"
check "the image's default user is distroless's nonroot" \
    same "$(engine image inspect --format '{{.Config.User}}' "$tag")" 65532:65532

# --- the node, prepared as deploy/README.md says ---------------------------------------------
root=$work/node
eval "$(python3 tests/container/pod_settings.py deploy/static-pod/kms-plugin.yaml \
    deploy/config/kms-plugin.yaml "$root" "${ENGINE[0]}")"
# /var/run is a symlink to /run, as on the node; then tmpfiles.d: `d PATH MODE USER GROUP AGE`.
mkdir -p "$root/var" && ln -s ../run "$root/var/run"
while read -r type path mode user group _; do
    [ "$type" = d ] && install -d -m "$mode" -o "$user" -g "$group" "$root$path"
done < <(grep -v '^#' deploy/static-pod/kms-plugin.tmpfiles.conf)
# The config as shipped, but with a free metrics port: the pod's network is the host's.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
install -d -m 0755 "$(dirname "$config_file")"
sed "s/^metrics_address: 127.0.0.1:9464$/metrics_address: 127.0.0.1:$port/" deploy/config/kms-plugin.yaml > "$config_file"
chmod 0644 "$config_file"
check "the config's metrics address was moved to a free port" grep -q "^metrics_address: 127.0.0.1:$port$" "$config_file"

kp() { "$work/kms-plugin" "$@"; }
wait_healthy() {
    for _ in $(seq 100); do
        kp status --socket "$socket" --timeout 1s >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}
logs() { engine logs "$name" 2>&1 | tail -20 | sed 's/^/      /'; }

# The first root key, created once by the operator (the pod never creates one). Run as root here
# (this scratch tree is root's 0700): its files must still belong to the directory's owner, the
# plugin's uid (checked below).
check "kms-plugin init creates the first root key" quietly "$work/kms-plugin" init --state-dir "$state_dir"

# --- run it as the pod ---------------------------------------------------------------------------
engine run -d --name "$name" "${ENGINE_LIMITS[@]}" "${run_flags[@]}" \
    --entrypoint "${pod_command[0]}" "$tag" "${pod_command[@]:1}" >/dev/null 2>"$work/run.log" \
    || { fail "run: $(cat "$work/run.log")"; finish; }
if wait_healthy; then
    pass "kms-plugin status through the mounted socket: $(kp status --socket "$socket" | tr '\n' ' ')"
else
    fail "no healthy Status within 20s"; logs; finish
fi

check "the pod's liveness probe command passes inside the container" \
    quietly engine exec "$name" "${probe_command[@]}"
pid=$(engine inspect --format '{{.State.Pid}}' "$name")
status_field() { awk -v f="$1:" '$1 == f { $1 = ""; sub(/^ /, ""); print }' "/proc/$pid/status"; }
check "runs as $uid:$gid (real, effective, saved, fs)" same "$(status_field Uid)" "$uid $uid $uid $uid"
check "group $gid, no supplementary groups" same "$(status_field Gid) / $(status_field Groups | xargs)" \
    "$gid $gid $gid $gid / $gid"
check "no capabilities (effective, permitted, bounding)" \
    same "$(status_field CapEff) $(status_field CapPrm) $(status_field CapBnd)" "0000000000000000 0000000000000000 0000000000000000"
check "no_new_privs set" same "$(status_field NoNewPrivs)" 1
check "seccomp filter active (RuntimeDefault)" same "$(status_field Seccomp)" 2
check "root filesystem read-only" same "$(awk '$5 == "/" { split($6, o, ","); print o[1] }' "/proc/$pid/mountinfo")" ro
check "config directory mounted read-only" \
    same "$(awk '$5 == "/etc/kms-plugin" { split($6, o, ","); print o[1] }' "/proc/$pid/mountinfo")" ro

check "socket mode 0660, owner $uid:$gid" same "$(stat -c '%a %u:%g' "$socket")" "660 $uid:$gid"
check "state directory 0700, owner $uid:$gid" same "$(stat -c '%a %u:%g' "$state_dir")" "700 $uid:$gid"
check "first root key 0600, owner $uid:$gid" \
    same "$(stat -c '%a %u:%g %s' "$state_dir/root-key-v1.key" 2>&1)" "600 $uid:$gid 32"
check "primary written 0600, owner $uid:$gid" same "$(stat -c '%a %u:%g' "$state_dir/primary" 2>&1)" "600 $uid:$gid"

secret="container round trip $$"
if key_id=$(python3 tests/container/kms_call.py encrypt "$socket" "$secret" "$work/sealed" 2>"$work/call.log"); then
    pass "Encrypt through the socket (key id $key_id)"
else
    fail "Encrypt: $(cat "$work/call.log")"
fi
check "Decrypt gives the plaintext back" \
    same "$(python3 tests/container/kms_call.py decrypt "$socket" "$work/sealed" 2>&1)" "$secret"

metrics=$(curl -fsS "http://127.0.0.1:$port/metrics" 2>&1 || true)
check "metrics on the host's loopback count the Encrypt" \
    grep -q 'kms_plugin_operations_latency_seconds_count{method_name="Encrypt",grpc_status_code="OK"} 1' <<<"$metrics"
check "/healthz on the metrics port" same "$(curl -fsS "http://127.0.0.1:$port/healthz" 2>&1)" ok

# --- stop and restart ----------------------------------------------------------------------------
started=$SECONDS
engine stop "$name" >/dev/null || true
check "stop: exit code 0 after SIGTERM (in $((SECONDS - started))s)" \
    same "$(engine inspect --format '{{.State.ExitCode}}' "$name")" 0
check "stop: the socket is removed" test ! -e "$socket"
engine start "$name" >/dev/null || true
if wait_healthy; then pass "restart: Status healthy again"; else fail "restart: not healthy"; logs; fi
check "restart: same key id" same "$(kp status --socket "$socket" | sed -n 's/^key_id: //p')" "$key_id"
check "restart: the ciphertext sealed before the restart decrypts" \
    same "$(python3 tests/container/kms_call.py decrypt "$socket" "$work/sealed" 2>&1)" "$secret"
engine stop "$name" >/dev/null || true
check "second stop: exit code 0" same "$(engine inspect --format '{{.State.ExitCode}}' "$name")" 0

finish
