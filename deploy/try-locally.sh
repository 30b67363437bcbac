#!/usr/bin/env bash
# Tries the deployment files on one Linux machine without a cluster (deploy/README.md, "What was
# tried here"): runs the real plugin from deploy/config/kms-plugin.yaml (paths moved into a temp
# dir) as the pod's uid with no capabilities and a read-only root, checks who may connect to its
# socket, rotates its root key, kills and restarts it, applies the kube-apiserver patch, runs
# `pki init`, `pki check-expiration -o prometheus` and `pki rotate` (on files), runs the
# runbooks' etcd checks against a real etcd, and checks the systemd units and the Prometheus
# rules; each of the last three only when etcd, systemd-analyze and promtool are installed.
#
# Needs root (to switch uid and drop capabilities with setpriv, and for a mount namespace).
#   sudo deploy/try-locally.sh
#   KMS_PLUGIN=/path/to/kms-plugin PKI=/path/to/pki sudo -E deploy/try-locally.sh
# Build the two binaries first if needed: cargo build -p kms-plugin -p pki
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
deploy="$repo/deploy"
uid=64010                        # runAsUser of deploy/static-pod/kms-plugin.yaml
find_bin() {
    local name=$1 override=$2
    if [ -n "$override" ]; then echo "$override"; return; fi
    for dir in "${CARGO_TARGET_DIR:-$repo/target}/debug" "${CARGO_TARGET_DIR:-$repo/target}/release"; do
        if [ -x "$dir/$name" ]; then echo "$dir/$name"; return; fi
    done
    echo "no $name binary: build it (cargo build -p $name) or set ${name^^}=" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
command -v setpriv >/dev/null || { echo "setpriv (util-linux) is needed" >&2; exit 1; }

work=$(mktemp -d /tmp/kms-deploy-try.XXXXXX)
chmod 0755 "$work"
plugin_pid=
etcd_pid=
cleanup() {
    if [ -n "$plugin_pid" ]; then kill -TERM "$plugin_pid" 2>/dev/null || true; wait "$plugin_pid" 2>/dev/null || true; fi
    if [ -n "$etcd_pid" ]; then kill -TERM "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# The binaries are copied so that a rebuild during the run does not swap them.
install -m 0755 "$(find_bin kms-plugin "${KMS_PLUGIN:-}")" "$work/kms-plugin"
install -m 0755 "$(find_bin pki "${PKI:-}")" "$work/pki"
kp="$work/kms-plugin"

failures=0
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
expect() { # expect OK|FAIL DESCRIPTION COMMAND...
    local want=$1 what=$2; shift 2
    if "$@" >"$work/last.out" 2>&1; then got=OK; else got=FAIL; fi
    if [ "$got" = "$want" ]; then pass "$what"; else fail "$what (expected $want, got $got)"; sed 's/^/      /' "$work/last.out"; fi
}
as_plugin() { setpriv --reuid=$uid --regid=$uid --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "$@"; }

# --- the plugin, as the static pod runs it ------------------------------------------------------
run="$work/run"; state="$work/state"; logs="$work/logs"
install -d -m 0750 -o $uid -g $uid "$run"           # what tmpfiles.d does on a node
install -d -m 0700 -o $uid -g $uid "$state"
install -d -m 0755 -o $uid -g $uid "$logs"
metrics_port=${TRY_METRICS_PORT:-19464}
sed -e "s#/var/run/kms-plugin#$run#" -e "s#/var/lib/kms-plugin#$state#" \
    -e "s#^metrics_address: .*#metrics_address: 127.0.0.1:$metrics_port#" \
    "$deploy/config/kms-plugin.yaml" > "$work/config.yaml"
chmod 0644 "$work/config.yaml"
socket="$run/kms.sock"

start_plugin() { # in a mount namespace with / read-only, like readOnlyRootFilesystem
    unshare --mount --propagation private sh -c '
        for d in "$1" "$2" "$3"; do mount --bind "$d" "$d"; done
        mount --bind / / && mount -o remount,bind,ro /
        exec setpriv --reuid="$4" --regid="$4" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
            "$5" serve --config "$6"' sh "$run" "$state" "$logs" $uid "$kp" "$work/config.yaml" \
        >>"$logs/plugin.log" 2>&1 &
    plugin_pid=$!
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    sleep 0.5
}
# Exits at once naming `kms-plugin init` (a serve that kept running is killed after 10 s: no match).
refuses_without_keyring() {
    local out
    out=$(timeout 10 setpriv --reuid=$uid --regid=$uid --clear-groups "$kp" serve --config "$work/config.yaml" 2>&1)
    echo "$out"
    grep -q 'kms-plugin init' <<<"$out"
}
expect OK "serve refuses an empty state directory, naming kms-plugin init (no implicit root key)" refuses_without_keyring
expect OK "kms-plugin init as uid $uid creates the first root key" \
    setpriv --reuid=$uid --regid=$uid --clear-groups "$kp" init --state-dir "$state"
start_plugin
expect OK "plugin serves from deploy/config/kms-plugin.yaml as uid $uid, no capabilities, read-only /" "$kp" status --socket "$socket"
mode=$(stat -c '%a %u %g' "$socket")
[ "$mode" = "660 $uid $uid" ] && pass "socket is 0660 $uid:$uid" || fail "socket is $mode"
key=$(stat -c '%a %u' "$state/root-key-v1.key" 2>/dev/null || echo missing)
[ "$key" = "600 $uid" ] && pass "first root key created 0600, owned by the plugin" || fail "root key: $key"
if command -v curl >/dev/null; then
    expect OK "metrics listener answers /livez on loopback" curl -fsS "http://127.0.0.1:$metrics_port/livez"
    expect OK "/metrics is served" curl -fsS -o /dev/null "http://127.0.0.1:$metrics_port/metrics"
fi

# --- who may connect ---------------------------------------------------------------------------
expect OK   "the plugin's uid connects" as_plugin "$kp" status --socket "$socket"
expect OK   "root with default capabilities (kubeadm's kube-apiserver) connects" "$kp" status --socket "$socket"
expect FAIL "root without CAP_DAC_OVERRIDE is refused" setpriv --inh-caps=-all --bounding-set=-all "$kp" status --socket "$socket"
expect OK   "another uid in group $uid connects" setpriv --reuid=1234 --regid=1234 --groups=$uid --inh-caps=-all --bounding-set=-all "$kp" status --socket "$socket"
expect FAIL "another uid without the group is refused" setpriv --reuid=1234 --regid=1234 --clear-groups --inh-caps=-all --bounding-set=-all "$kp" status --socket "$socket"
mkdir "$work/ro-view"
expect OK "connects through a read-only bind mount of the socket directory" \
    unshare --mount --propagation private sh -c 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && "$3" status --socket "$2/kms.sock"' \
    sh "$run" "$work/ro-view" "$kp"

# --- rotation, single node and multi-node --------------------------------------------------------
key_id() { "$kp" status --socket "$socket" | sed -n 's/^key_id: //p'; }
before=$(key_id)
expect OK "rotate as the plugin's uid" as_plugin "$kp" rotate --state-dir "$state"
sleep 3
after=$(key_id)
[ "$before" != "$after" ] && pass "running plugin switched key id ($before -> $after)" || fail "key id unchanged: $after"
expect OK "rotate --add-only" as_plugin "$kp" rotate --add-only --state-dir "$state"
expect OK "versions" as_plugin "$kp" versions --state-dir "$state"
expect OK "promote 3" as_plugin "$kp" promote --version 3 --state-dir "$state"
sleep 3
case $(key_id) in local:v3:*) pass "key id is v3 after promote";; *) fail "key id after promote: $(key_id)";; esac
expect OK   "remove-version 1" as_plugin "$kp" remove-version --version 1 --state-dir "$state"
expect FAIL "remove-version of the primary is refused" as_plugin "$kp" remove-version --version 3 --state-dir "$state"
expect OK "rotate as root succeeds" "$kp" rotate --state-dir "$state"
owners=$(stat -c '%u:%g %a' "$state"/root-key-v4.key "$state"/primary | sort -u)
[ "$owners" = "$uid:$uid 600" ] && pass "...and writes its files as the directory's owner ($owners), not root" \
    || fail "files of a rotation as root: $owners"
sleep 3
case $(key_id) in local:v4:*) pass "the running plugin picks up v4";; *) fail "key id after the rotation as root: $(key_id)";; esac
grep -q 'Permission denied' "$logs/plugin.log" && fail "Permission denied logged after a rotation as root" \
    || pass "no Permission denied after a rotation as root"

# --- crash and restart ---------------------------------------------------------------------------
kill -KILL "$plugin_pid"; wait "$plugin_pid" 2>/dev/null || true; plugin_pid=
[ -S "$socket" ] && pass "kill -9 leaves a stale socket" || fail "no stale socket after kill -9"
expect FAIL "status fails while the plugin is down" "$kp" status --socket "$socket"
start_plugin
expect OK "restarted plugin serves" "$kp" status --socket "$socket"
grep -q 'removed a stale socket' "$logs/plugin.log" && pass "stale socket removed at start" || fail "stale socket message missing"
kill -TERM "$plugin_pid"; wait "$plugin_pid" 2>/dev/null || true; plugin_pid=
[ ! -e "$socket" ] && pass "SIGTERM removes the socket" || fail "socket left after SIGTERM"

# --- kube-apiserver patch ------------------------------------------------------------------------
if command -v kubectl >/dev/null && command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
    cat > "$work/kube-apiserver.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.33.0
    command: [kube-apiserver, --advertise-address=10.0.0.10]
    volumeMounts: [{name: k8s-certs, mountPath: /etc/kubernetes/pki, readOnly: true}]
  volumes: [{name: k8s-certs, hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}}]
EOF
    python3 -c 'import yaml, json, sys; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' \
        "$deploy/apiserver/patches/kube-apiserver+json.yaml" > "$work/patch.json"
    if kubectl patch --local -f "$work/kube-apiserver.yaml" --type json --patch-file "$work/patch.json" -o yaml > "$work/patched.yaml" 2>&1 \
        && grep -q -- '--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml' "$work/patched.yaml" \
        && grep -q 'mountPath: /var/run/kms-plugin' "$work/patched.yaml"; then
        pass "kubectl patch --local applies the kube-apiserver JSON patch"
    else
        fail "kube-apiserver JSON patch"; sed 's/^/      /' "$work/patched.yaml"
    fi
else
    echo "SKIP  kube-apiserver patch (needs kubectl and python3 with PyYAML)"
fi

# --- pki -----------------------------------------------------------------------------------------
pki="$work/pki"; certs="$work/pki-dir"; textfile="$work/textfile"
mkdir -p "$textfile"
expect OK "pki init" "$pki" init --cert-dir "$certs/pki" --kubeconfig-dir "$certs" --node-name cp-1 --apiserver-advertise-address 10.0.0.10
expect OK "pki check-expiration -o prometheus --output-file" \
    "$pki" check-expiration --cert-dir "$certs/pki" --kubeconfig-dir "$certs" -o prometheus --output-file "$textfile/pki.prom"
grep -q '^pki_certificate_expiry_timestamp_seconds{' "$textfile/pki.prom" && grep -q '^pki_certificate_missing{' "$textfile/pki.prom" \
    && pass "pki.prom has the metrics the alert rules use" || fail "metric names in pki.prom"
expect FAIL "check-expiration --fail-within 400d exits non-zero" \
    "$pki" check-expiration --cert-dir "$certs/pki" --kubeconfig-dir "$certs" --fail-within 400d
expect OK "pki renew all --if-expiring-within 30d" "$pki" renew all --cert-dir "$certs/pki" --kubeconfig-dir "$certs" --if-expiring-within 30d

# --- pki rotate (Runbook F), on copies of those files ------------------------------------------
if "$pki" rotate --help >/dev/null 2>&1; then
    rot="$work/rot"; mkdir -p "$rot/manifests"
    cp -a "$certs/." "$rot/"
    cat > "$rot/manifests/kube-controller-manager.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: kube-controller-manager, namespace: kube-system}
spec:
  containers:
  - name: kube-controller-manager
    command:
    - kube-controller-manager
    - --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt
    - --cluster-signing-key-file=/etc/kubernetes/pki/ca.key
    - --root-ca-file=/etc/kubernetes/pki/ca.crt
EOF
    r() { "$pki" rotate --cert-dir "$rot/pki" --kubeconfig-dir "$rot" --manifests-dir "$rot/manifests" "$@"; }
    # True when ca.crt holds $1 certificates and kube-controller-manager's manifest contains $2.
    ca_state() { [ "$(grep -c BEGIN "$rot/pki/ca.crt")" = "$1" ] && grep -q -- "$2" "$rot/manifests/kube-controller-manager.yaml"; }
    expect OK "pki rotate ca start" r ca start
    expect OK "ca.crt holds old + new, kube-controller-manager signs from ca-signer.*" ca_state 2 'ca-signer.crt'
    expect FAIL "switch is refused until the other nodes are confirmed" r ca switch
    expect OK "pki rotate ca switch --confirm-nodes" r ca switch --confirm-nodes
    expect OK "leaves verify against the new CA alone" \
        sh -c 'openssl x509 -in "$1/ca.crt" > "$1/new-ca.pem" && openssl verify -CAfile "$1/new-ca.pem" "$1/apiserver.crt"' sh "$rot/pki"
    expect OK "pki rotate ca finish" r ca finish
    expect OK "after finish: one CA, signer flags back" ca_state 1 'cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt'
    expect OK   "pki rotate sa start" r sa start
    expect OK   "pki rotate sa switch --confirm-nodes" r sa switch --confirm-nodes
    expect FAIL "sa finish right after switch is refused" r sa finish
    expect FAIL "a second rotation is refused while one is in progress" r etcd-ca start
    expect OK   "sa finish --force" r sa finish --force
    cp -a "$rot/pki/etcd" "$work/etcd-before"
    expect OK "pki rotate etcd-ca start" r etcd-ca start
    expect OK "pki rotate etcd-ca abort --confirm-nodes" r etcd-ca abort --confirm-nodes
    expect OK "abort restored etcd/ byte for byte" diff -r "$work/etcd-before" "$rot/pki/etcd"
else
    echo "SKIP  pki rotate (not in this pki build)"
fi

# --- the runbooks' etcd checks, against a real etcd with the certificates pki made -------------
if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
    e="$certs/pki/etcd"
    etcd --name cp-1 --data-dir "$work/etcd" --listen-client-urls https://127.0.0.1:23790 \
        --advertise-client-urls https://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
        --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster cp-1=http://127.0.0.1:23800 \
        --cert-file "$e/server.crt" --key-file "$e/server.key" --client-cert-auth --trusted-ca-file "$e/ca.crt" \
        >"$work/etcd.log" 2>&1 &
    etcd_pid=$!
    ec() { etcdctl --endpoints https://127.0.0.1:23790 --cacert "$e/ca.crt" --cert "$e/healthcheck-client.crt" --key "$e/healthcheck-client.key" "$@"; }
    for _ in $(seq 50); do ec endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
    # Values shaped like kube-apiserver's: KMS v2 prefix + protobuf with the key id, and plaintext.
    printf 'k8s:enc:kms:v2:kms-plugin-local:\x0a\x03\xff\xfe\x01\x12\x20local:v3:f4ec0f3fb8902ff8c602f04b\x1a\x01\x00' | ec put /registry/secrets/default/sealed >/dev/null
    printf 'k8s:enc:kms:v2:kms-plugin-local:\x0a\x01\xff\x12\x20local:v2:ce5ea77b3ace00295fc4ef7f\x1a\x01\x00' | ec put /registry/secrets/default/sealed-old >/dev/null
    printf 'k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x05plain' | ec put /registry/secrets/kube-system/plain >/dev/null
    flagged=$(for key in $(ec get /registry/secrets --prefix --keys-only); do
        ec get "$key" --print-value-only | head -c 32 | grep -aq '^k8s:enc:kms:v2:kms-plugin-local:' || echo "$key"
    done)
    [ "$flagged" = /registry/secrets/kube-system/plain ] && pass "Runbook A's loop flags exactly the plaintext Secret" || fail "loop flagged: $flagged"
    ids=$(ec get /registry/secrets --prefix --print-value-only | grep -aoE 'local:v[0-9]+:[0-9a-f]{24}' | sort -u | tr '\n' ' ')
    [ "$ids" = "local:v2:ce5ea77b3ace00295fc4ef7f local:v3:f4ec0f3fb8902ff8c602f04b " ] && pass "Runbook D's grep lists the key ids in use" || fail "key ids: $ids"
    kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; etcd_pid=
else
    echo "SKIP  etcd checks (apt-get install etcd-server etcd-client)"
fi

# --- Prometheus rules and systemd units, when the tools are here --------------------------------
if command -v promtool >/dev/null; then
    expect OK "promtool check metrics on pki.prom" sh -c 'promtool check metrics < "$1"' sh "$textfile/pki.prom"
    expect OK "promtool check rules" promtool check rules "$deploy/prometheus/pki-alerts.yaml"
    expect OK "promtool test rules" sh -c 'cd "$1" && promtool test rules pki-alerts.test.yaml' sh "$deploy/prometheus"
else
    echo "SKIP  promtool (apt-get install prometheus)"
fi
if command -v systemd-analyze >/dev/null; then
    mkdir "$work/units"
    for unit in kms-plugin.service pki-expiry.service pki-expiry.timer; do
        sed -e "s#/usr/local/bin/kms-plugin#$kp#g" -e "s#/usr/local/bin/pki#$pki#g" "$deploy/systemd/$unit" > "$work/units/$unit"
    done
    expect OK "systemd-analyze verify" sh -c 'cd "$1" && systemd-analyze verify ./kms-plugin.service ./pki-expiry.service ./pki-expiry.timer' sh "$work/units"
    systemd-analyze security --offline=yes "$work/units/kms-plugin.service" 2>/dev/null | grep 'Overall exposure' || true
else
    echo "SKIP  systemd-analyze"
fi

echo
if [ "$failures" = 0 ]; then echo "all checks passed"; else echo "$failures check(s) failed"; exit 1; fi
