#!/usr/bin/env bash
# The real control plane against the real plugin: etcd (TLS, kubeadm's layout) and the real
# kube-apiserver built by tests/k8s/build.sh, with certificates and kubeconfigs from `pki init`
# and deploy/apiserver/encryption-config.yaml applied as deploy/README.md tells an operator
# (only the socket path changed to the scratch directory), driven by the real kubectl.
#   tests/k8s/run.sh [K8S_BIN_DIR]     (default: what tests/k8s/build.sh prints)
# Everything lives in a scratch directory on loopback ports; nothing else on the machine changes.
# Prints `k8s-e2e: N passed, M failed`.
set -uo pipefail
caller=$PWD
cd "$(dirname "$0")/../.."
repo=$PWD
if [ $# -ge 1 ]; then
    k8s_bin=$1
    [ -d "$k8s_bin" ] || { echo "k8s-e2e: $k8s_bin is not a directory"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }
else
    k8s_bin=$(tests/k8s/build.sh | tail -n1) || { echo "k8s-e2e: 0 passed, 1 failed (build)"; exit 1; }
fi
# A relative CARGO_TARGET_DIR is relative to where the caller stood, as for cargo.
case "${CARGO_TARGET_DIR:-}" in
    "") target=$repo/target/debug ;;
    /*) target=$CARGO_TARGET_DIR/debug ;;
    *) target=$caller/$CARGO_TARGET_DIR/debug ;;
esac
for tool in "$target/kms-plugin" "$target/pki" "$k8s_bin/kube-apiserver" "$k8s_bin/kubectl" "$k8s_bin/kubeadm"; do
    [ -x "$tool" ] || { echo "k8s-e2e: missing $tool (cargo build first)"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }
done
command -v etcd >/dev/null && command -v etcdctl >/dev/null || { echo "k8s-e2e: etcd/etcdctl missing (.ci/provision-etcd.sh)"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }
command -v moto_server >/dev/null || { echo "k8s-e2e: moto_server missing (.ci/provision-moto.sh)"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }

scratch=$(mktemp -d /tmp/k8s-e2e.XXXXXX)
# Every process started here, also from a test's subshell, leaves its pid in $scratch/pids/NAME;
# processes are stopped by that id, never by a name pattern.
mkdir -p "$scratch/pids"
remember() { echo "$2" >"$scratch/pids/$1"; } # remember NAME PID
pid_of() { cat "$scratch/pids/$1"; }
# gone PID: the process has exited. A zombie counts as gone: a process started by the main shell
# is not its test subshell's child, so nobody reaps it while the test runs.
gone() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
    [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}
port_free() { ! python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null; }
socket_free() { ! python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1" 2>/dev/null; }
cleanup() {
    local f pid
    for f in "$scratch"/pids/*; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        # Only a process of this run (its command line names the scratch directory).
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$scratch/" && kill -TERM "$pid" 2>/dev/null
    done
    for f in "$scratch"/pids/*; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        for _ in $(seq 50); do gone "$pid" && break; sleep 0.2; done
        gone "$pid" || kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "${KEEP_SCRATCH:-}" = 1 ]; then echo "k8s-e2e: scratch kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port); metrics_port=$(free_port); kcm_port=$(free_port)
pki_dir=$scratch/etc/kubernetes/pki
kubeconfig=$scratch/etc/kubernetes/admin.conf
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" --request-timeout=20s "$@"; }
etcdctl_() {
    ETCDCTL_API=3 etcdctl --endpoints "https://127.0.0.1:$etcd_port" --cacert "$pki_dir/etcd/ca.crt" \
        --cert "$pki_dir/apiserver-etcd-client.crt" --key "$pki_dir/apiserver-etcd-client.key" "$@"
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$(( $(date +%s) + $1 )) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "  timed out waiting for $what"; return 1; fi
        sleep 0.5
    done
}
stop() { # stop NAME SIGNAL: signals the process NAME and waits until it has exited
    local pid
    pid=$(pid_of "$1")
    kill "-$2" "$pid" 2>/dev/null || true
    wait_for 60 "$1 (pid $pid) to exit" gone "$pid"
}

# --- the node's PKI, as `pki init` writes it for kubeadm -------------------------------------
"$target/pki" init --kubernetes-version v1.37 --cert-dir "$pki_dir" --kubeconfig-dir "$scratch/etc/kubernetes" \
    --node-name cp1 --apiserver-advertise-address 127.0.0.1 --apiserver-bind-port "$api_port" \
    >"$scratch/pki-init.log" 2>&1 || { cat "$scratch/pki-init.log"; echo "k8s-e2e: 0 passed, 1 failed (pki init)"; exit 1; }
# Renewed once, so etcd and kube-apiserver read every key/certificate pair through the generation
# links a renewal leaves (`name -> ..data/name`), as they do on a node after its first renewal.
"$target/pki" renew all --cert-dir "$pki_dir" --kubeconfig-dir "$scratch/etc/kubernetes" \
    >>"$scratch/pki-init.log" 2>&1 || { cat "$scratch/pki-init.log"; echo "k8s-e2e: 0 passed, 1 failed (pki renew)"; exit 1; }

# --- etcd with client and peer TLS, flags as kubeadm's etcd manifest sets them ----------------
start_etcd() {
    etcd --name cp1 --data-dir "$scratch/etcd" \
        --listen-client-urls "https://127.0.0.1:$etcd_port" --advertise-client-urls "https://127.0.0.1:$etcd_port" \
        --listen-peer-urls "https://127.0.0.1:$peer_port" --initial-advertise-peer-urls "https://127.0.0.1:$peer_port" \
        --initial-cluster "cp1=https://127.0.0.1:$peer_port" \
        --cert-file "$pki_dir/etcd/server.crt" --key-file "$pki_dir/etcd/server.key" \
        --client-cert-auth --trusted-ca-file "$pki_dir/etcd/ca.crt" \
        --peer-cert-file "$pki_dir/etcd/peer.crt" --peer-key-file "$pki_dir/etcd/peer.key" \
        --peer-client-cert-auth --peer-trusted-ca-file "$pki_dir/etcd/ca.crt" \
        --snapshot-count 10000 >"$scratch/etcd.log" 2>&1 &
    remember etcd $!
}

# --- the plugin beside kube-apiserver ---------------------------------------------------------
mkdir -p "$scratch/run/kms-plugin" "$scratch/etc/kubernetes/enc"
chmod 0750 "$scratch/run/kms-plugin"
socket=$scratch/run/kms-plugin/kms.sock
cat >"$scratch/etc/kubernetes/enc/plugin.yaml" <<YAML
socket: $socket
health_probe_interval: 2s
metrics_address: 127.0.0.1:$metrics_port
backend:
  kind: local
  local: { state_dir: $scratch/var/lib/kms-plugin, poll_interval: 1s }
YAML
start_plugin() {
    "$target/kms-plugin" serve --config "$scratch/etc/kubernetes/enc/plugin.yaml" >>"$scratch/plugin.log" 2>&1 &
    remember plugin $!
    wait_for 30 "the plugin's Status" "$target/kms-plugin" status --socket "$socket"
}
plugin_metric() { # plugin_metric NAME-PREFIX: the sum of every series of that metric
    curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { printf "%d\n", s }'
}

# The operator's EncryptionConfiguration, pointed at this scratch socket.
sed "s#unix:///var/run/kms-plugin/kms.sock#unix://$socket#" deploy/apiserver/encryption-config.yaml \
    >"$scratch/etc/kubernetes/enc/encryption-config.yaml"
chmod 0600 "$scratch/etc/kubernetes/enc/encryption-config.yaml"
provider=$(awk '$1 == "name:" { print $2; exit }' "$scratch/etc/kubernetes/enc/encryption-config.yaml")

# --- kube-apiserver, with the flags kubeadm's manifest gives it plus deploy/apiserver/ ---------
start_apiserver() {
    "$k8s_bin/kube-apiserver" \
        --advertise-address=127.0.0.1 --bind-address=127.0.0.1 --secure-port="$api_port" \
        --endpoint-reconciler-type=none \
        --allow-privileged=true --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
        --enable-bootstrap-token-auth=true --client-ca-file="$pki_dir/ca.crt" \
        --etcd-cafile="$pki_dir/etcd/ca.crt" --etcd-certfile="$pki_dir/apiserver-etcd-client.crt" \
        --etcd-keyfile="$pki_dir/apiserver-etcd-client.key" --etcd-servers="https://127.0.0.1:$etcd_port" \
        --kubelet-client-certificate="$pki_dir/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$pki_dir/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname \
        --proxy-client-cert-file="$pki_dir/front-proxy-client.crt" --proxy-client-key-file="$pki_dir/front-proxy-client.key" \
        --requestheader-allowed-names=front-proxy-client --requestheader-client-ca-file="$pki_dir/front-proxy-ca.crt" \
        --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
        --requestheader-username-headers=X-Remote-User \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$pki_dir/sa.pub" --service-account-signing-key-file="$pki_dir/sa.key" \
        --service-cluster-ip-range=10.96.0.0/12 \
        --tls-cert-file="$pki_dir/apiserver.crt" --tls-private-key-file="$pki_dir/apiserver.key" \
        --encryption-provider-config="$scratch/etc/kubernetes/enc/encryption-config.yaml" \
        >>"$scratch/apiserver.log" 2>&1 &
    remember apiserver $!
    wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz
}

# --- kube-controller-manager, with kubeadm's flags, running the controllers that hand out the CA:
# kube-root-ca.crt in every namespace and the kube-apiserver-serving ClusterTrustBundle (from
# --root-ca-file), and the bootstrap signer of kube-public/cluster-info.
start_controller_manager() { # start_controller_manager ROOT-CA-FILE
    local conf=$scratch/etc/kubernetes/controller-manager.conf
    "$k8s_bin/kube-controller-manager" --kubeconfig="$conf" --authentication-kubeconfig="$conf" \
        --authorization-kubeconfig="$conf" --bind-address=127.0.0.1 --secure-port="$kcm_port" \
        --client-ca-file="$pki_dir/ca.crt" --requestheader-client-ca-file="$pki_dir/front-proxy-ca.crt" \
        --root-ca-file="$1" --service-account-private-key-file="$pki_dir/sa.key" \
        --cluster-signing-cert-file="$pki_dir/ca.crt" --cluster-signing-key-file="$pki_dir/ca.key" \
        --use-service-account-credentials=true --leader-elect=false \
        --controllers=root-ca-certificate-publisher-controller,bootstrap-signer-controller,kube-apiserver-serving-clustertrustbundle-publisher-controller,serviceaccount-controller \
        >>"$scratch/controller-manager.log" 2>&1 &
    remember controller-manager $!
}

passed=0
failed=0
run_test() { # run_test NAME: runs the shell function test_NAME (only it, when K8S_E2E_ONLY=NAME)
    [ -z "${K8S_E2E_ONLY:-}" ] || [ "$K8S_E2E_ONLY" = "$1" ] || return 0
    local t0=$(date +%s)
    # Not in a condition: there bash would ignore set -e inside the test.
    ( set -e; "test_$1" ) >"$scratch/test-$1.log" 2>&1
    if [ $? = 0 ]; then
        passed=$((passed + 1)); echo "k8s-e2e $1 ... ok ($(( $(date +%s) - t0 ))s)"; sed 's/^/  /' "$scratch/test-$1.log"
    else
        failed=$((failed + 1)); echo "k8s-e2e $1 ... FAILED"; sed 's/^/  /' "$scratch/test-$1.log" | tail -n 30
    fi
}
fail() { echo "$*" >&2; return 1; }
# serve_tls NAME CERT KEY: a TLS server on a free loopback port presenting CERT (CERT may hold a
# chain), as a kubelet's serving endpoint does; prints the port.
serve_tls() {
    local port
    port=$(free_port)
    python3 -c '
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[3])))
s.listen()
while True:
    c, _ = s.accept()
    try:
        ctx.wrap_socket(c, server_side=True).close()
    except (OSError, ssl.SSLError):
        c.close()
' "$2" "$3" "$port" >"$scratch/$1.log" 2>&1 &
    remember "$1" $!
    wait_for 10 "$1 on port $port" port_open "$port" >&2 || return 1
    echo "$port"
}
# kubelet_serves NODE PORT [KUBECTL...]: the Node's status says its kubelet serves on
# 127.0.0.1:PORT (as the kubelet reports it), written with KUBECTL (default: the suite's kubectl).
kubelet_serves() {
    local node=$1 port=$2
    shift 2
    "${@:-kubectl}" patch node "$node" --subresource=status --type=merge \
        -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"}],\"daemonEndpoints\":{\"kubeletEndpoint\":{\"Port\":$port}}}}" >/dev/null
}
# apiserver_pod NODE HOST:PORT [KUBECTL...]: the mirror pod of NODE's kube-apiserver static pod
# as the kubelet posts it, with kubeadm's annotation saying where it serves.
apiserver_pod() {
    local node=$1 at=$2
    shift 2
    "${@:-kubectl}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver-$node
  namespace: kube-system
  labels: {component: kube-apiserver, tier: control-plane}
  annotations: {kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: "$at", kubernetes.io/config.mirror: stand-in}
spec:
  nodeName: $node
  automountServiceAccountToken: false
  containers: [{name: kube-apiserver, image: registry.k8s.io/kube-apiserver:v1.37.2}]
YAML
}
# self_signed DIR NAME: a kubelet's own serving certificate (no cluster CA), DIR/NAME.crt and .key.
self_signed() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2@$(date +%s)" -days 1 \
        -keyout "$1/$2.key" -out "$1/$2.crt" 2>/dev/null
}

# After `pki renew all` every pair links through `..data` into one generation directory; etcd and
# kube-apiserver serve from them (this suite talks to both over mutual TLS), and the real kubeadm
# reads them: `certs check-expiration` finds every certificate, and its own `certs renew` writes
# through the links, leaving a matching pair that the next `pki renew` takes over.
test_renewed_pairs_are_read_through_one_generation() {
    local name
    for name in apiserver.crt apiserver.key etcd/server.crt etcd/server.key front-proxy-client.key; do
        [ "$(readlink "$pki_dir/$name")" = "..data/$(basename "$name")" ] || fail "$name is not a generation link"
    done
    [ "$(find "$pki_dir" -maxdepth 1 -name '..gen-*' | wc -l)" = 1 ] || fail "not exactly one generation in $pki_dir"
    printf 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.37.2\ncertificatesDir: %s\n' \
        "$pki_dir" >"$scratch/kubeadm.yaml"
    local table
    table=$("$k8s_bin/kubeadm" certs check-expiration --config "$scratch/kubeadm.yaml" --cert-dir "$pki_dir" 2>&1)
    echo "$table" | grep -E '^(apiserver|etcd-server|front-proxy-client) ' >&2 || true
    for name in apiserver apiserver-etcd-client apiserver-kubelet-client etcd-server etcd-peer front-proxy-client; do
        echo "$table" | grep -Eq "^$name +[A-Z][a-z]{2} [0-9]{2}, [0-9]{4} .* (364|365)d " \
            || fail "kubeadm does not read $name through the links: $table"
    done
    "$k8s_bin/kubeadm" certs renew front-proxy-client --config "$scratch/kubeadm.yaml" --cert-dir "$pki_dir" >/dev/null 2>&1 \
        || fail "kubeadm certs renew front-proxy-client failed"
    pair_matches() {
        [ "$(openssl x509 -noout -pubkey -in "$pki_dir/$1.crt")" = "$(openssl pkey -pubout -in "$pki_dir/$1.key")" ]
    }
    pair_matches front-proxy-client || fail "kubeadm's renewal left a mismatched pair"
    "$target/pki" renew front-proxy-client --cert-dir "$pki_dir" --kubeconfig-dir "$scratch/etc/kubernetes" >/dev/null \
        || fail "pki renew after kubeadm's renewal failed"
    pair_matches front-proxy-client || fail "pki's renewal after kubeadm's left a mismatched pair"
    [ "$(find "$pki_dir" -maxdepth 1 -name '..gen-*' | wc -l)" = 1 ] || fail "a stale generation is left"
    echo "etcd, kube-apiserver and kubeadm read the pairs through ..data -> $(readlink "$pki_dir/..data")"
}

# Secrets written through the API are KMS v2 objects in etcd carrying our key_id and wrapped KEK,
# and read back; /readyz/kms-providers is ok.
test_secrets_are_kms_v2_in_etcd() {
    kubectl create secret generic e2e-one --from-literal=password=correct-horse-battery
    local raw
    raw=$(etcdctl_ get /registry/secrets/default/e2e-one -w json)
    echo "$raw" | python3 -c 'import sys,json,base64; v=base64.b64decode(json.load(sys.stdin)["kvs"][0]["value"]); sys.exit(b"correct-horse" in v)' \
        || fail "the plaintext is visible in etcd"
    local object
    object=$(echo "$raw" | python3 tests/k8s/encrypted_object.py)
    echo "stored: $object"
    local key_id
    key_id=$("$target/kms-plugin" status --socket "$socket" | awk '$1 == "key_id:" { print $2 }')
    [ -n "$key_id" ] || fail "kms-plugin status printed no key_id"
    echo "$object" | python3 -c '
import json, sys
o = json.load(sys.stdin)
provider, key_id = sys.argv[1], sys.argv[2]
assert o["provider"] == provider, (o["provider"], provider)
assert o["key_id"] == key_id, (o["key_id"], key_id)
assert "kek.kms-plugin.dev" in o["annotations"], o["annotations"]
assert o["encrypted_data_len"] > 0 and o["dek_source_len"] > 0, o
' "$provider" "$key_id"
    [ "$(kubectl get secret e2e-one -o jsonpath='{.data.password}' | base64 -d)" = correct-horse-battery ] \
        || fail "the Secret did not read back"
    kubectl get --raw /readyz/kms-providers | grep -qx ok || fail "/readyz/kms-providers is not ok"
}

# The plugin killed with SIGKILL and restarted, then kube-apiserver restarted with many Secrets:
# every Secret reads with its value, and the cold start costs no more root-key unwraps than there
# are distinct local KEKs in etcd (the README's bound); Decrypt calls are reported beside the
# number of distinct DEK sources.
test_plugin_and_apiserver_restart_keep_every_secret() {
    local count=${K8S_E2E_SECRETS:-500}
    python3 - "$count" >"$scratch/secrets.yaml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bulk-{i}\nstringData:\n  value: \"value-{i}\"")
PY
    kubectl apply -f "$scratch/secrets.yaml" >/dev/null
    stop plugin KILL
    wait_for 30 "the plugin's socket to be free" socket_free "$socket"
    start_plugin
    kubectl create secret generic e2e-after-plugin-restart --from-literal=k=after-restart
    stop apiserver TERM
    wait_for 60 "kube-apiserver's port to be free" port_free "$api_port"
    stop plugin KILL
    wait_for 30 "the plugin's socket to be free" socket_free "$socket"
    start_plugin
    start_apiserver
    kubectl get secrets -o json >"$scratch/secrets.json"
    python3 - "$count" "$scratch/secrets.json" <<'PY'
import base64, json, sys
count, items = int(sys.argv[1]), json.load(open(sys.argv[2]))["items"]
data = {i["metadata"]["name"]: i.get("data", {}) for i in items}
def value(name, key):
    return base64.b64decode(data.get(name, {}).get(key, "")).decode()
wrong = [i for i in range(count) if value(f"bulk-{i}", "value") != f"value-{i}"]
if wrong:
    sys.exit(f"{len(wrong)} of {count} Secrets do not read with their value, e.g. bulk-{wrong[0]}")
if value("e2e-after-plugin-restart", "k") != "after-restart":
    sys.exit("the Secret written after the plugin restart does not read back")
print(f"compared {count} of {count} values, and the Secret written after the plugin restart")
PY
    local decrypts unwraps bounds dek_sources keks
    decrypts=$(plugin_metric 'kms_plugin_operations_latency_seconds_count{method_name="Decrypt"')
    # Unwraps Decrypt needed (the background probe's own round trips are not counted here).
    unwraps=$(plugin_metric 'kms_plugin_kek_cache_misses')
    bounds=$(etcdctl_ get /registry/secrets/ --prefix -w json | python3 tests/k8s/encrypted_object.py --distinct)
    dek_sources=$(echo "$bounds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dek_sources"])')
    keks=$(echo "$bounds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keks"])')
    echo "cold start: $decrypts Decrypt calls for $dek_sources distinct DEK sources, $unwraps root-key unwraps (KEK cache misses) for $keks distinct local KEKs ($bounds)"
    [ "$decrypts" -ge 1 ] || fail "no Decrypt call reached the plugin after the restarts"
    [ "$unwraps" -le "$keks" ] || fail "$unwraps root-key unwraps for $keks local KEKs"
}

# --- a KMS outage: the AWS root key on moto, behind a relay that can refuse every connection ----
kms_down=$scratch/kms-down
aws_socket=$scratch/run/kms-plugin/aws.sock
aws_metrics_port=$(free_port)
aws_env=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null)
port_open() { ! port_free "$1"; }
kms_call() { # kms_call OPERATION KEY: a call to moto's KMS directly (not through the relay)
    env "${aws_env[@]}" python3 -c '
import boto3, sys
kms = boto3.client("kms", region_name="us-east-1", endpoint_url=sys.argv[1])
op, key = sys.argv[2], sys.argv[3]
if op == "create":
    print(kms.create_key(Description="k8s-e2e")["KeyMetadata"]["Arn"])
elif op == "disable":
    kms.disable_key(KeyId=key.rsplit("key/", 1)[1])
elif op == "enable":
    kms.enable_key(KeyId=key.rsplit("key/", 1)[1])
' "http://127.0.0.1:$moto_port" "$1" "${2:-}"
}
start_aws_plugin() { # start_aws_plugin HEALTH-YAML: the AWS-backed plugin with that health policy
    cat >"$scratch/etc/kubernetes/enc/plugin-aws.yaml" <<YAML
socket: $aws_socket
health_probe_interval: 5s
health: $1
metrics_address: 127.0.0.1:$aws_metrics_port
backend:
  kind: aws
  aws: { key_id: "$key_arn", region: us-east-1, endpoint: "http://127.0.0.1:$relay_port",
         max_attempts: 2, attempt_timeout: 500ms, operation_timeout: 1500ms }
YAML
    env "${aws_env[@]}" "$target/kms-plugin" serve --config "$scratch/etc/kubernetes/enc/plugin-aws.yaml" \
        >>"$scratch/plugin-aws.log" 2>&1 &
    remember plugin-aws $!
    wait_for 30 "the AWS plugin's Status" "$target/kms-plugin" status --socket "$aws_socket"
}
restart_aws_plugin() { # then kube-apiserver, whose start seals a new seed: the plugin's first KEK
    stop plugin-aws TERM
    wait_for 30 "the AWS plugin's socket to be free" socket_free "$aws_socket"
    start_aws_plugin "$1"
    restart_apiserver
}
aws_status() { "$target/kms-plugin" status --verbose --socket "$aws_socket" 2>&1 || true; }
aws_healthz() { aws_status | awk '$1 == "healthz:" { sub(/^healthz: /, ""); print; exit }'; }
healthz_is() { [ "$(aws_healthz)" = "$1" ]; }
ready() { kubectl get --raw /readyz >/dev/null 2>&1; }
not_ready() { ! ready; }
now() { date +%s.%N; }
since() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }
restart_apiserver() {
    stop apiserver TERM
    wait_for 60 "kube-apiserver's port to be free" port_free "$api_port"
    start_apiserver
}
# Secret outage-I must read back with its value.
reads_back() { [ "$(kubectl get secret "outage-$1" -o jsonpath='{.data.v}' | base64 -d)" = "value-$1" ]; }

# kube-apiserver 1.37 encrypting through the AWS-backed plugin: through a KMS outage with nothing
# restarted (K8S_E2E_OUTAGE seconds, default 240), /readyz stays 200 and Secrets are read and
# written throughout, also after a kube-apiserver restart in the middle of it, while `kms-plugin
# status` and the metrics report the outage; Status is "ok" within 5 s of KMS's return. With
# outage_grace 60s /readyz fails after the grace with the fixed reason; with backend_outage:
# report it fails during the outage; a key disabled during an outage is a revocation.
test_a_kms_outage_keeps_the_control_plane_ready() {
    moto_port=$(free_port); relay_port=$(free_port)
    # moto_server's own main, with the scratch directory on its command line so cleanup ends it.
    python3 -c 'import sys; from moto.server import main; main(sys.argv[1:5])' \
        -H 127.0.0.1 -p "$moto_port" "$scratch/moto" >"$scratch/moto.log" 2>&1 &
    remember moto $!
    wait_for 30 "moto" port_open "$moto_port"
    python3 tests/k8s/refusing_relay.py "$relay_port" "$moto_port" "$kms_down" >"$scratch/relay.log" 2>&1 &
    remember relay $!
    wait_for 10 "the relay" port_open "$relay_port"
    key_arn=$(kms_call create)
    start_aws_plugin "{ backend_outage: serve }"
    cat >"$scratch/etc/kubernetes/enc/encryption-config.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms: { apiVersion: v2, name: kms-plugin-aws, endpoint: "unix://$aws_socket", timeout: 3s }
      - kms: { apiVersion: v2, name: $provider, endpoint: "unix://$socket", timeout: 3s }
      - identity: {}
YAML
    restart_apiserver
    local i
    python3 -c 'import sys
for i in range(200):
    print(f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: outage-{i}\nstringData:\n  v: value-{i}")' \
        | kubectl apply -f - >/dev/null
    # (Whole outputs into files or variables first: under pipefail, `producer | grep -q` fails
    # whenever grep exits before the producer has written everything.)
    etcdctl_ get /registry/secrets/default/outage-7 --print-value-only >"$scratch/outage-7.value"
    grep -qa '^k8s:enc:kms:v2:kms-plugin-aws:' "$scratch/outage-7.value" || fail "outage-7 is not stored through the AWS plugin"

    local outage=${K8S_E2E_OUTAGE:-240} started n=0 text
    touch "$kms_down"; started=$(now)
    wait_for 15 "the plugin to notice the outage" eval 'aws_status | grep -q "^outage: serving from cache"' \
        || fail "kms-plugin status does not report the outage: $(aws_status)"
    while python3 -c 'import sys, time; sys.exit(time.time() - float(sys.argv[1]) > float(sys.argv[2]))' "$started" "$outage"; do
        ready || fail "/readyz is not 200 $(since "$started")s into the outage"
        kubectl create secret generic "during-$n" --from-literal=v="during-$n" >/dev/null \
            || fail "no write $(since "$started")s into the outage"
        reads_back $(( n * 7 % 200 )) || fail "outage-$(( n * 7 % 200 )) does not read back $(since "$started")s into the outage"
        if [ "$n" = 6 ]; then
            # kube-apiserver restarted mid-outage: it needs a new seed sealed (Encrypt) and the
            # stored ones opened (Decrypt) from the plugin's cached KEK.
            restart_apiserver
            for i in $(seq 0 199); do reads_back "$i" || fail "outage-$i unreadable after a restart in the outage"; done
            echo "kube-apiserver restarted $(since "$started")s into the outage: ready, all 200 Secrets read"
        fi
        n=$((n + 1))
        sleep 5
    done
    text=$(aws_status)
    grep -q '^healthz: ok$' <<<"$text" || fail "healthz not ok after the outage: $text"
    grep '^outage:' <<<"$text"
    local metrics down_seconds
    metrics=$(curl -s "http://127.0.0.1:$aws_metrics_port/metrics")
    down_seconds=$(awk '$1 == "kms_plugin_root_key_outage_seconds" { print int($2) }' <<<"$metrics")
    [ "${down_seconds:-0}" -ge $(( outage - 20 )) ] || fail "kms_plugin_root_key_outage_seconds is ${down_seconds:-absent}"
    grep -q '^kms_plugin_status_healthy 1' <<<"$metrics" || fail "status_healthy is not 1"
    echo "outage of ${outage}s: /readyz 200 and a write and a read every 5 s ($n rounds), kms_plugin_root_key_outage_seconds $down_seconds"
    rm "$kms_down"; started=$(now)
    wait_for 5 "Status ok after KMS returned" eval 'aws_status | grep -q "^backend: reachable"' \
        || fail "Status still reports the outage 5 s after KMS returned: $(aws_status)"
    echo "KMS back: the plugin reports it reachable after $(since "$started")s"

    # outage_grace 60s: /readyz fails after the grace, with the fixed reason.
    restart_aws_plugin "{ backend_outage: serve, outage_grace: 60s }"
    touch "$kms_down"; started=$(now)
    sleep 50
    ready || fail "/readyz failed within the 60 s grace"
    wait_for 60 "/readyz to fail after the grace" not_ready || fail "/readyz still 200 $(since "$started")s into the outage"
    echo "outage_grace 60s: /readyz failed $(since "$started")s into the outage"
    healthz_is "root key unreachable beyond health.outage_grace" || fail "healthz: $(aws_healthz)"
    # What a load balancer sees (anonymous, as kubeadm's HA guides set up its health check).
    local body
    body=$(curl -s --cacert "$pki_dir/ca.crt" "https://127.0.0.1:$api_port/readyz?verbose")
    grep -q '^\[-\]kms-providers failed' <<<"$body" || fail "readyz does not name kms-providers: $body"
    kubectl create secret generic after-grace --from-literal=v=x >/dev/null || fail "writes stopped after the grace"
    rm "$kms_down"
    wait_for 60 "ready again" ready || fail "not ready after KMS returned"

    # backend_outage: report: the outage shows at once.
    restart_aws_plugin "{ backend_outage: report }"
    touch "$kms_down"; started=$(now)
    wait_for 60 "/readyz to fail under report" not_ready || fail "report: /readyz still 200"
    echo "backend_outage report: /readyz failed $(since "$started")s into the outage ($(aws_healthz))"
    rm "$kms_down"
    wait_for 60 "ready again" ready || fail "not ready after KMS returned"

    # A key disabled during an outage: a revocation once KMS says so, whatever grace is left.
    restart_aws_plugin "{ backend_outage: serve, outage_grace: 24h }"
    touch "$kms_down"
    wait_for 15 "the outage to be served" eval 'aws_status | grep -q "^outage: serving from cache"' \
        || fail "not serving through the outage: $(aws_status)"
    kms_call disable "$key_arn"
    rm "$kms_down"; started=$(now)
    wait_for 15 "the revocation" healthz_is "root key revoked: the backend reports it disabled, deleted or access denied" \
        || fail "healthz after a disabled key: $(aws_healthz)"
    echo "key disabled during the outage: revoked $(since "$started")s after KMS answered, despite a 24h grace"
    wait_for 60 "/readyz to fail for the revoked key" not_ready || fail "/readyz still 200 with a revoked key"
    kms_call enable "$key_arn"
    wait_for 15 "healthy after EnableKey" healthz_is ok || fail "healthz after EnableKey: $(aws_healthz)"
}

# A `ca` and an `sa` rotation of three control-plane nodes and two workers (node directories
# copied from this node's PKI; Node objects registered in the API), coordinated through the real
# API with --kubeconfig: every out-of-order command is refused by the gate that reads the other
# nodes' entries in kube-system/pki-rotation-*, naming the nodes in the way, and the rotation
# completes once they have caught up. Kubelet client certificates count as renewed from an
# issued CSR (signed by the new CA) or from the node's own entry; each node's kubelet (a TLS
# stand-in where its Node status says) serves its own self-signed certificate, and `ca finish`
# waits while one serves a certificate of the old CA.
test_rotations_are_gated_by_every_nodes_state() {
    local nodes=$scratch/nodes admin=$scratch/pki-admin.conf n key out pin
    cp "$kubeconfig" "$admin"
    for n in cp1 cp2 cp3; do
        mkdir -p "$nodes/$n"
        cp -a "$pki_dir" "$nodes/$n/pki"
        cp "$scratch/etc/kubernetes/"{admin,super-admin,controller-manager,scheduler,kubelet}.conf "$nodes/$n/"
        kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $n, labels: {node-role.kubernetes.io/control-plane: ""}}
YAML
    done
    for n in w1 w2; do
        mkdir -p "$nodes/$n/pki"
        cp "$pki_dir/ca.crt" "$nodes/$n/pki/"
        cp "$scratch/etc/kubernetes/kubelet.conf" "$nodes/$n/"
        kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $n}
YAML
    done
    # Each node's kubelet serves its own self-signed certificate (the kubelet's default); each
    # control-plane node's kube-apiserver (a TLS stand-in, restarted where the real one would be)
    # serves that node's apiserver.crt, where its mirror pod's kubeadm annotation says.
    for n in cp1 cp2 cp3 w1 w2; do
        self_signed "$nodes" "kubelet-$n"
        kubelet_serves "$n" "$(serve_tls "kubelet-$n" "$nodes/kubelet-$n.crt" "$nodes/kubelet-$n.key")"
    done
    restart_apiserver_of() { # restart_apiserver_of NODE: its stand-in serves its apiserver.crt as it is now
        [ ! -f "$scratch/pids/apiserver-$1" ] || stop "apiserver-$1" TERM
        apiserver_pod "$1" "127.0.0.1:$(serve_tls "apiserver-$1" "$nodes/$1/pki/apiserver.crt" "$nodes/$1/pki/apiserver.key")"
    }
    for n in cp1 cp2 cp3; do restart_apiserver_of "$n"; done
    # kube-controller-manager as before the rotation, and kubeadm's discovery: a bootstrap token
    # and kube-public/cluster-info, made by the real kubeadm and signed by the bootstrap signer.
    start_controller_manager "$pki_dir/ca.crt"
    wait_for 90 "kube-root-ca.crt in default" kubectl -n default get configmap kube-root-ca.crt \
        || fail "kube-controller-manager did not publish kube-root-ca.crt: $(tail -n 5 "$scratch/controller-manager.log")"
    local token_id=abcdef jws_before
    printf 'apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nbootstrapTokens: [{token: "%s.0123456789abcdef"}]\n' \
        "$token_id" >"$scratch/kubeadm-token.yaml"
    "$k8s_bin/kubeadm" init phase bootstrap-token --kubeconfig "$kubeconfig" --config "$scratch/kubeadm-token.yaml" \
        --skip-token-print >"$scratch/kubeadm-token.log" 2>&1 || fail "kubeadm init phase bootstrap-token: $(tail -n 5 "$scratch/kubeadm-token.log")"
    wait_for 60 "cluster-info to be signed" eval '[ -n "$(kubectl -n kube-public get configmap cluster-info -o jsonpath="{.data.jws-kubeconfig-$token_id}")" ]' \
        || fail "the bootstrap signer did not sign cluster-info"
    jws_before=$(kubectl -n kube-public get configmap cluster-info -o jsonpath="{.data.jws-kubeconfig-$token_id}")
    r() { # r NODE TARGET PHASE [ARGS...]: pki rotate on that node's directories, through the API
        # with the node's own narrow identity where it has one (workers), else admin.conf
        local node=$1 t=$2 phase=$3 conf=$admin
        shift 3
        [ ! -f "$nodes/$node/pki-rotate.conf" ] || conf=$nodes/$node/pki-rotate.conf
        "$target/pki" rotate "$t" "$phase" --cert-dir "$nodes/$node/pki" --kubeconfig-dir "$nodes/$node" \
            --kubeconfig "$conf" --node-name "$node" "$@"
    }
    refused() { # refused GATE WORDS... -- COMMAND...: the command fails, naming the gate and each word
        local gate=$1 words=() out
        shift
        while [ "$1" != -- ]; do words+=("$1"); shift; done
        shift
        if out=$("$@" 2>&1); then fail "accepted: $* -> $out"; fi
        [[ $out == *"refused by the gate \`$gate\`"* ]] || fail "not refused by $gate: $* -> $out"
        for w in "${words[@]}"; do [[ $out == *"$w"* ]] || fail "the refusal does not name $w: $out"; done
        echo "refused as expected ($gate): ${out:0:200}"
    }
    key=$(openssl rand -hex 32)
    out=$(r cp1 ca start --export "$nodes/ca.share" --certificate-key "$key") || fail "cp1 start: $out"
    pin=$(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$out" | head -n1)
    [ -n "$pin" ] || fail "no pin printed: $out"
    kubectl -n kube-system get configmap -l pki.kubernetes.io/rotation-target=ca -o name | grep -q pki-rotation-ca- \
        || fail "no rotation record in kube-system"
    cluster_info_cas() {
        kubectl -n kube-public get configmap cluster-info -o jsonpath='{.data.kubeconfig}' \
            | awk '$1 == "certificate-authority-data:" { print $2 }' | base64 -d | grep -c 'BEGIN CERTIFICATE'
    }
    [ "$(cluster_info_cas)" = 2 ] || fail "kube-public/cluster-info does not hand out old and new CA: $(cluster_info_cas)"
    # The workers run every command with the narrow identity deploy/README.md lists for them
    # (group pki:rotation-workers): read the rotation records, update this rotation's object
    # only, list Nodes and the kube-system pods. Nothing more is allowed, and nothing more is
    # needed.
    local record
    record=$(kubectl -n kube-system get configmap -l pki.kubernetes.io/rotation-target=ca -o jsonpath='{.items[0].metadata.name}')
    kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pki-rotation-worker, namespace: kube-system}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list]}
- {apiGroups: [""], resources: [configmaps], resourceNames: [$record], verbs: [update]}
- {apiGroups: [""], resources: [pods], verbs: [list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pki-rotation-worker, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pki-rotation-worker}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "pki:rotation-workers"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pki-rotation-worker}
rules: [{apiGroups: [""], resources: [nodes], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: pki-rotation-worker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pki-rotation-worker}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "pki:rotation-workers"}]
YAML
    for n in w1 w2; do
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$nodes/$n/pki-rotate.key" \
            -subj "/O=pki:rotation-workers/CN=pki-rotate-$n" -out "$nodes/$n/pki-rotate.csr" 2>/dev/null
        printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$nodes/$n/pki-rotate.ext"
        openssl x509 -req -in "$nodes/$n/pki-rotate.csr" -CA "$pki_dir/ca.crt" -CAkey "$pki_dir/ca.key" -days 1 \
            -set_serial "0x$(openssl rand -hex 8)" -extfile "$nodes/$n/pki-rotate.ext" -out "$nodes/$n/pki-rotate.crt" 2>/dev/null
        local wk=("$k8s_bin/kubectl" --kubeconfig "$nodes/$n/pki-rotate.conf")
        "${wk[@]}" config set-cluster c --server "https://127.0.0.1:$api_port" --certificate-authority "$pki_dir/ca.crt" --embed-certs >/dev/null
        "${wk[@]}" config set-credentials u --client-certificate "$nodes/$n/pki-rotate.crt" --client-key "$nodes/$n/pki-rotate.key" --embed-certs >/dev/null
        "${wk[@]}" config set-context c --cluster c --user u >/dev/null
        "${wk[@]}" config use-context c >/dev/null
    done
    local wk=("$k8s_bin/kubectl" --kubeconfig "$nodes/w1/pki-rotate.conf" --request-timeout=20s)
    [ "$("${wk[@]}" auth can-i update "configmaps/$record" -n kube-system)" = yes ] || fail "the worker identity cannot update its rotation's record"
    for denied in "update configmaps/cluster-info -n kube-public" "update configmaps/kube-root-ca.crt -n kube-system" \
        "create configmaps -n kube-system" "list certificatesigningrequests" "get secrets -n kube-system"; do
        # shellcheck disable=SC2086
        [ "$("${wk[@]}" auth can-i $denied 2>/dev/null)" = no ] || fail "the worker identity may $denied"
    done
    refused every-node-trusts-the-new-ca "cp2 (control-plane)" "cp3 (control-plane)" "w1 (worker)" "w2 (worker)" \
        -- r cp1 ca switch
    # A second rotation of the same target cannot begin while this one is under way.
    mkdir -p "$nodes/cp4" && cp -a "$pki_dir" "$nodes/cp4/pki" && cp "$scratch/etc/kubernetes/"*.conf "$nodes/cp4/"
    refused one-rotation-at-a-time "cp1 at start (complete)" -- r cp4 ca start
    r cp2 ca start --join "$nodes/ca.share" --certificate-key "$key" >/dev/null || fail "cp2 start"
    r cp3 ca start --join "$nodes/ca.share" --certificate-key "$key" >/dev/null || fail "cp3 start"
    out=$(r w1 ca start --worker --join "$nodes/ca.share.public" --ca-cert-hash "sha256:$(printf '0%.0s' {1..64})" 2>&1) \
        && fail "a wrong pin was accepted: $out"
    r w1 ca start --worker --join "$nodes/ca.share.public" --ca-cert-hash "$pin" >/dev/null || fail "w1 start"
    refused every-node-trusts-the-new-ca "w2 (worker)" -- r cp1 ca switch
    out=$(r cp1 ca status) || fail "status: $out"
    grep -E '^  w2 +worker +not started' <<<"$out" >/dev/null || fail "status does not show w2 not started: $out"
    sed -n "/^cluster:/,\$p" <<<"$out"
    r w2 ca start --worker --join "$nodes/ca.share.public" --ca-cert-hash "$pin" >/dev/null || fail "w2 start"
    # What the cluster hands out: kube-root-ca.crt, the serving ClusterTrustBundle (published by
    # kube-controller-manager from --root-ca-file) and the pods that read kube-root-ca.crt.
    refused kube-root-ca-crt-holds-the-new-ca "default/kube-root-ca.crt does not hold the new CA" -- r cp1 ca switch
    stop controller-manager TERM
    start_controller_manager "$nodes/cp1/pki/ca.crt"
    root_ca_count() { kubectl -n "$1" get configmap kube-root-ca.crt -o jsonpath='{.data.ca\.crt}' | grep -c 'BEGIN CERTIFICATE'; }
    wait_for 60 "kube-root-ca.crt to hold both CAs" eval '[ "$(root_ca_count default)" = 2 ]' \
        || fail "kube-controller-manager did not republish kube-root-ca.crt: $(tail -n 5 "$scratch/controller-manager.log")"
    ctb_count() { kubectl get clustertrustbundles -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kube-apiserver-serving")]}{.spec.trustBundle}{end}' | grep -c 'BEGIN CERTIFICATE'; }
    wait_for 60 "the serving ClusterTrustBundle to hold both CAs" eval '[ "$(ctb_count)" = 2 ]' \
        || fail "the kube-apiserver-serving ClusterTrustBundle does not hold both CAs: $(kubectl get clustertrustbundles 2>&1)"
    kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: default}
spec:
  nodeName: w1
  automountServiceAccountToken: false
  containers: [{name: c, image: registry.k8s.io/pause:3.10, volumeMounts: [{name: ca, mountPath: /ca}]}]
  volumes: [{name: ca, projected: {sources: [{configMap: {name: kube-root-ca.crt}}]}}]
YAML
    running_since() { # running_since TIME: the pod's status says it has run since then
        kubectl patch pod reader --subresource=status --type=merge -p "{\"status\":{\"phase\":\"Running\",\"startTime\":\"$1\",\"containerStatuses\":[{\"name\":\"c\",\"image\":\"registry.k8s.io/pause:3.10\",\"imageID\":\"\",\"ready\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$1\"}}}]}}" >/dev/null
    }
    running_since "$(date -u -d '-1 hour' +%FT%TZ)"
    refused pods-reading-kube-root-ca-crt-restarted "pod default/reader started before" -- r cp1 ca switch
    sleep 1
    running_since "$(date -u +%FT%TZ)"
    r cp1 ca switch >/dev/null || fail "cp1 switch once every node trusts the new CA"
    refused no-node-has-switched "cp1 is at switch (complete)" -- r cp2 ca abort
    refused every-control-plane-node-switched "cp2 (control-plane)" "cp3 (control-plane)" -- r cp1 ca finish
    refused every-control-plane-node-switched "cp2 (control-plane)" -- r w1 ca finish --worker
    r cp2 ca switch >/dev/null || fail "cp2 switch"
    r cp3 ca switch >/dev/null || fail "cp3 switch"
    restart_apiserver_of cp1
    restart_apiserver_of cp2
    refused kubelet-client-certificates-from-the-new-ca "w1:" "w2:" -- r cp1 ca finish
    # w1's kubelet renews through a CSR the new CA signs; w2's kubelet.conf gets a new-CA client
    # certificate (from cp1's, re-issued at switch) and w2 publishes it by rerunning its start.
    local staged=$nodes/cp1/pki/.rotation/staged/ca
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$nodes/w1/client.key" \
        -subj "/O=system:nodes/CN=system:node:w1" -out "$nodes/w1/client.csr" 2>/dev/null
    openssl x509 -req -in "$nodes/w1/client.csr" -CA "$staged/new.crt" -CAkey "$staged/new.key" -days 1 \
        -set_serial 7 -out "$nodes/w1/client.crt" 2>/dev/null || fail "signing w1's client certificate"
    kubectl --as system:node:w1 --as-group system:masters create -f - >/dev/null <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: node-csr-w1}
spec:
  signerName: kubernetes.io/kube-apiserver-client-kubelet
  usages: [digital signature, client auth]
  request: $(base64 -w0 <"$nodes/w1/client.csr")
YAML
    kubectl certificate approve node-csr-w1 >/dev/null
    kubectl patch csr node-csr-w1 --subresource=status --type=merge \
        -p "{\"status\":{\"certificate\":\"$(base64 -w0 <"$nodes/w1/client.crt")\"}}" >/dev/null
    refused kubelet-client-certificates-from-the-new-ca "w2:" -- r cp1 ca finish
    cp "$nodes/cp1/kubelet.conf" "$nodes/w2/kubelet.conf"
    r w2 ca start --worker --join "$nodes/ca.share.public" --ca-cert-hash "$pin" >/dev/null || fail "w2 republish"
    # w2's kubelet serves a certificate of the old CA (serverTLSBootstrap): finish waits until it
    # serves one of the new CA.
    serving_from() { # serving_from NAME CA-CRT CA-KEY: w2's kubelet serving certificate from that CA
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$nodes/$1.key" \
            -subj "/O=system:nodes/CN=system:node:w2" -out "$nodes/$1.csr" 2>/dev/null
        printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >"$nodes/$1.ext"
        openssl x509 -req -in "$nodes/$1.csr" -CA "$2" -CAkey "$3" -days 1 -set_serial 9 -extfile "$nodes/$1.ext" \
            -out "$nodes/$1.crt" 2>/dev/null
    }
    serving_from w2-old "$pki_dir/ca.crt" "$pki_dir/ca.key"
    stop kubelet-w2 TERM
    kubelet_serves w2 "$(serve_tls kubelet-w2 "$nodes/w2-old.crt" "$nodes/w2-old.key")"
    refused kubelet-serving-certificates-from-the-new-ca "w2: its kubelet at 127.0.0.1:" "serves a certificate of the old CA" \
        -- r cp1 ca finish
    serving_from w2-new "$staged/new.crt" "$staged/new.key"
    stop kubelet-w2 TERM
    kubelet_serves w2 "$(serve_tls kubelet-w2 "$nodes/w2-new.crt" "$nodes/w2-new.key")"
    # cp3's kube-apiserver was not restarted after its switch: it still serves the old CA's
    # certificate, which the nodes will no longer trust after finish.
    refused kube-apiservers-serve-the-new-ca "cp3: its kube-apiserver at 127.0.0.1:" "not from the new CA" -- r cp1 ca finish
    refused kube-apiservers-serve-the-new-ca "cp3: its kube-apiserver at 127.0.0.1:" -- r w1 ca finish --worker
    restart_apiserver_of cp3
    r cp1 ca finish >/dev/null || fail "cp1 finish once every gate is open"
    for n in cp2 cp3; do r "$n" ca finish >/dev/null || fail "$n finish"; done
    for n in w1 w2; do r "$n" ca finish --worker >/dev/null || fail "$n finish --worker"; done
    for n in w1 w2; do
        [ "$(grep -c 'BEGIN CERTIFICATE' "$nodes/$n/pki/ca.crt")" = 1 ] || fail "$n still trusts two CAs"
        cmp -s "$nodes/$n/pki/ca.crt" "$nodes/cp1/pki/ca.crt" || fail "$n trusts another CA than cp1"
    done
    out=$(r cp1 ca status) || fail "status: $out"
    grep -q "ended on every node" <<<"$out" || fail "the record does not show the rotation ended: $out"
    [ "$(cluster_info_cas)" = 1 ] || fail "kube-public/cluster-info still hands out the old CA"
    kubectl -n kube-public get configmap cluster-info -o jsonpath='{.data.kubeconfig}' \
        | awk '$1 == "certificate-authority-data:" { print $2 }' | base64 -d | cmp -s - "$nodes/cp1/pki/ca.crt" \
        || fail "kube-public/cluster-info does not hand out the new CA alone"
    # The bootstrap signer signed the new content for the bootstrap token (kubeadm's discovery).
    wait_for 30 "cluster-info to be signed again" eval '[ "$(kubectl -n kube-public get configmap cluster-info -o jsonpath="{.data.jws-kubeconfig-$token_id}")" != "$jws_before" ]' \
        || fail "the bootstrap signer did not sign cluster-info again"
    echo "ca: 5 nodes rotated through kube-system/$(kubectl -n kube-system get cm -l pki.kubernetes.io/rotation-target=ca -o jsonpath='{.items[0].metadata.name}')"

    # sa: finish waits for the old key's tokens on every control-plane node's switch time.
    out=$(r cp1 sa start --export "$nodes/sa.share" --certificate-key "$key") || fail "cp1 sa start: $out"
    refused every-node-trusts-the-new-ca "cp2 (control-plane)" -- r cp1 sa switch
    for n in cp2 cp3; do r "$n" sa start --join "$nodes/sa.share" --certificate-key "$key" >/dev/null || fail "$n sa start"; done
    r cp1 sa switch --max-token-lifetime 1s >/dev/null || fail "cp1 sa switch"
    r cp2 sa switch --max-token-lifetime 1s >/dev/null || fail "cp2 sa switch"
    r cp3 sa switch --max-token-lifetime 1h >/dev/null || fail "cp3 sa switch"
    sleep 2
    refused old-service-account-tokens-expired "cp3 switched later" -- r cp1 sa finish
    out=$(r cp1 sa finish --force 2>&1) || fail "sa finish --force: $out"
    grep -q -- "--force: the gate \`old-service-account-tokens-expired\` was closed and is overridden" <<<"$out" \
        || fail "--force does not say which gate it overrode: $out"
    echo "sa: finish waits for cp3's token window; --force says: $(grep -o -- '--force: the gate[^:]*' <<<"$out")"
}

# Three etcd members (one per node directory, 127.0.1.1-3, run from kubeadm-shaped manifests by
# tests/k8s/static_pods.py as the kubelet would) with certificates due for renewal, their image
# tagged with a version autopilot has not checked (3.3; 3.4-3.7 reload their certificates and are
# not restarted at all), so each pass restarts its member. Two
# `pki autopilot --kubeconfig` passes started together on two nodes both renew and restart their
# member, one after the other: the Lease kube-system/pki-autopilot lets one node restart at a
# time, so the second member goes down only after the first came back. A third pass, while
# another member is down, restarts nothing: it names the unhealthy member and changes no file.
test_autopilot_passes_restart_etcd_members_one_at_a_time() {
    local ap=$scratch/autopilot admin=$scratch/autopilot-admin.conf n i f cluster="" ports=()
    cp "$kubeconfig" "$admin"
    for i in 1 2 3; do
        n=a$i
        mkdir -p "$ap/$n/pki/etcd" "$ap/$n/manifests"
        for f in ca.crt ca.key front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key sa.key sa.pub; do
            cp "$pki_dir/$f" "$ap/$n/pki/$f"
        done
        "$target/pki" init --kubernetes-version v1.37 --cert-dir "$ap/$n/pki" --kubeconfig-dir "$ap/$n" \
            --node-name "$n" --apiserver-advertise-address "127.0.1.$i" --certificate-validity-period 2h \
            >"$ap/$n/init.log" 2>&1 || fail "pki init $n: $(tail -n 3 "$ap/$n/init.log")"
        ports[$i]="$(free_port) $(free_port)"
        cluster+="${cluster:+,}$n=https://127.0.1.$i:${ports[$i]#* }"
    done
    for i in 1 2 3; do
        n=a$i
        local client=${ports[$i]% *} peer=${ports[$i]#* } p=$ap/$n/pki
        cat >"$ap/$n/manifests/etcd.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  labels:
    component: etcd
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://127.0.1.$i:$client
    - --cert-file=$p/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=$ap/$n/etcd-data
    - --initial-advertise-peer-urls=https://127.0.1.$i:$peer
    - --initial-cluster=$cluster
    - --initial-cluster-state=new
    - --key-file=$p/etcd/server.key
    - --listen-client-urls=https://127.0.1.$i:$client
    - --listen-peer-urls=https://127.0.1.$i:$peer
    - --name=$n
    - --peer-cert-file=$p/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=$p/etcd/peer.key
    - --peer-trusted-ca-file=$p/etcd/ca.crt
    - --trusted-ca-file=$p/etcd/ca.crt
    image: registry.k8s.io/etcd:3.3.27-0
    name: etcd
  hostNetwork: true
YAML
    done
    python3 tests/k8s/static_pods.py "$ap/events" "$ap" "$ap"/a{1,2,3}/manifests/etcd.yaml &
    remember static-pods $!
    member_healthy() { # member_healthy N
        curl -sf --cacert "$ap/a$1/pki/etcd/ca.crt" --cert "$ap/a$1/pki/etcd/healthcheck-client.crt" \
            --key "$ap/a$1/pki/etcd/healthcheck-client.key" "https://127.0.1.$1:${ports[$1]% *}/health" | grep -q '"health":"true"'
    }
    for i in 1 2 3; do wait_for 60 "etcd member a$i" member_healthy "$i" || fail "member a$i: $(tail -n 5 "$ap/a$i.log")"; done
    autopilot() { # autopilot N: one pass on node aN
        "$target/pki" autopilot --cert-dir "$ap/a$1/pki" --kubeconfig-dir "$ap/a$1" --manifests-dir "$ap/a$1/manifests" \
            --health-timeout 60s --kubeconfig "$admin" --node-name "a$1" >"$ap/autopilot-a$1.log" 2>&1
    }
    local server_before
    server_before=$(sha256sum <"$ap/a3/pki/etcd/server.crt")
    : >"$ap/events"
    autopilot 1 & local first=$!
    autopilot 2 & local second=$!
    wait "$first" || fail "the pass on a1 failed: $(cat "$ap/autopilot-a1.log")"
    wait "$second" || fail "the pass on a2 failed: $(cat "$ap/autopilot-a2.log")"
    cat "$ap/events" >&2
    apart() { python3 - "$ap/events" <<'PY'
import sys
events = [l.split() for l in open(sys.argv[1])]
restarts = {}
for t, name, what in events:
    restarts.setdefault(name, []).append((what, float(t)))
assert sorted(restarts) == ["a1", "a2"], restarts
spans = []
for name, seq in restarts.items():
    assert [w for w, _ in seq] == ["down", "up"], (name, seq)
    spans.append((seq[0][1], seq[1][1], name))
spans.sort()
(d1, u1, n1), (d2, u2, n2) = spans
assert d2 > u1, f"{n2} went down at {d2} before {n1} came back at {u1}"
print(f"{n1} restarted {d1:.1f}-{u1:.1f}, then {n2} {d2:.1f}-{u2:.1f} ({d2 - u1:.1f}s later)")
PY
    }
    apart || fail "two members were restarted at the same time: $(cat "$ap/events")"
    grep -h "restart permission" "$ap"/autopilot-a[12].log >&2 || true
    for i in 1 2 3; do member_healthy "$i" || fail "member a$i is not healthy after the passes"; done
    [ -z "$(kubectl -n kube-system get lease pki-autopilot -o jsonpath='{.spec.holderIdentity}')" ] \
        || fail "the Lease is still held after both passes"
    # The control: the same two passes without --kubeconfig (everything due again) do take two
    # members down together, which is what the Lease prevents.
    for i in 1 2; do wait_for 60 "etcd member a$i" member_healthy "$i" || fail "member a$i did not come back"; done
    : >"$ap/events"
    local control=()
    for i in 1 2; do
        "$target/pki" autopilot --cert-dir "$ap/a$i/pki" --kubeconfig-dir "$ap/a$i" --manifests-dir "$ap/a$i/manifests" \
            --health-timeout 60s --renew-before 8761h >"$ap/control-a$i.log" 2>&1 &
        control+=($!)
    done
    wait "${control[@]}" || true
    ! apart >/dev/null 2>&1 || fail "the control passes did not overlap, so the check above proves nothing: $(cat "$ap/events")"
    echo "control without --kubeconfig: both members down at once ($(tr '\n' ' ' <"$ap/events"))"
    for i in 1 2 3; do wait_for 60 "etcd member a$i" member_healthy "$i" || fail "member a$i did not come back"; done
    # A member down: the pass on a3 restarts nothing and changes no file.
    kill -STOP "$(pgrep -f -- "--name=a1" | head -n1)"
    local out rc=0
    out=$("$target/pki" autopilot --cert-dir "$ap/a3/pki" --kubeconfig-dir "$ap/a3" --manifests-dir "$ap/a3/manifests" \
        --health-timeout 5s --kubeconfig "$admin" --node-name a3 2>&1) || rc=$?
    kill -CONT "$(pgrep -f -- "--name=a1" | head -n1)"
    [ "$rc" != 0 ] || fail "a pass restarted etcd while a peer was down: $out"
    grep -q "member a1 .* is not healthy" <<<"$out" || fail "the refusal does not name the unhealthy member: $out"
    [ "$(sha256sum <"$ap/a3/pki/etcd/server.crt")" = "$server_before" ] || fail "a3's etcd certificate changed"
    echo "with a1 stopped, the pass on a3: $(grep -o 'not restarting etcd member a3[^;]*' <<<"$out" | head -n1)"
}

# A second kube-apiserver 1.37 (its own node directory, certificates due, run from a kubeadm-shaped
# manifest by tests/k8s/static_pods.py over the suite's etcd): `pki autopilot` renews its
# certificates and does not restart it (1.34-1.37 reload them by themselves): the same process serves the
# renewed certificate, and the manifest is untouched.
test_autopilot_leaves_a_reloading_kube_apiserver_running() {
    local b=$scratch/reloading n=b1 port f p pid_before out
    port=$(free_port)
    mkdir -p "$b/$n/pki/etcd" "$b/$n/manifests"
    for f in ca.crt ca.key front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key sa.key sa.pub; do
        cp "$pki_dir/$f" "$b/$n/pki/$f"
    done
    "$target/pki" init --kubernetes-version v1.37 --cert-dir "$b/$n/pki" --kubeconfig-dir "$b/$n" --node-name "$n" \
        --apiserver-advertise-address 127.0.0.1 --apiserver-bind-port "$port" --certificate-validity-period 2h \
        >"$b/init.log" 2>&1 || fail "pki init: $(tail -n 3 "$b/init.log")"
    p=$b/$n/pki
    cat >"$b/$n/manifests/kube-apiserver.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - $k8s_bin/kube-apiserver
    - --advertise-address=127.0.0.1
    - --bind-address=127.0.0.1
    - --secure-port=$port
    - --endpoint-reconciler-type=none
    - --authorization-mode=Node,RBAC
    - --client-ca-file=$p/ca.crt
    - --etcd-cafile=$p/etcd/ca.crt
    - --etcd-certfile=$p/apiserver-etcd-client.crt
    - --etcd-keyfile=$p/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:$etcd_port
    - --kubelet-client-certificate=$p/apiserver-kubelet-client.crt
    - --kubelet-client-key=$p/apiserver-kubelet-client.key
    - --proxy-client-cert-file=$p/front-proxy-client.crt
    - --proxy-client-key-file=$p/front-proxy-client.key
    - --requestheader-allowed-names=front-proxy-client
    - --requestheader-client-ca-file=$p/front-proxy-ca.crt
    - --requestheader-extra-headers-prefix=X-Remote-Extra-
    - --requestheader-group-headers=X-Remote-Group
    - --requestheader-username-headers=X-Remote-User
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=$p/sa.pub
    - --service-account-signing-key-file=$p/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    - --tls-cert-file=$p/apiserver.crt
    - --tls-private-key-file=$p/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.37.2
    name: kube-apiserver
  hostNetwork: true
YAML
    python3 tests/k8s/static_pods.py "$b/events" "$b" "$b/$n/manifests/kube-apiserver.yaml" &
    remember reloading-static-pods $!
    livez() { curl -sf --cacert "$p/ca.crt" --cert "$p/apiserver-kubelet-client.crt" --key "$p/apiserver-kubelet-client.key" \
        "https://127.0.0.1:$port/livez" >/dev/null; }
    wait_for 120 "the second kube-apiserver" livez || fail "the second kube-apiserver: $(tail -n 5 "$b/$n.log")"
    pid_before=$(pgrep -f -- "--secure-port=$port" | head -n1)
    local manifest_before served
    manifest_before=$(sha256sum <"$b/$n/manifests/kube-apiserver.yaml")
    out=$("$target/pki" autopilot --cert-dir "$p" --kubeconfig-dir "$b/$n" --manifests-dir "$b/$n/manifests" \
        --health-timeout 150s 2>&1) || fail "the pass failed: $out"
    grep -q "kube-apiserver not restarted: kube-apiserver 1.34 to 1.37 reloads" <<<"$out" || fail "not reported as reloaded: $out"
    grep -q "^renewed apiserver " <<<"$out" || fail "apiserver.crt was not renewed: $out"
    [ "$(pgrep -f -- "--secure-port=$port" | head -n1)" = "$pid_before" ] || fail "kube-apiserver was restarted"
    [ "$(sha256sum <"$b/$n/manifests/kube-apiserver.yaml")" = "$manifest_before" ] || fail "the manifest changed"
    [ "$(grep -c down "$b/events" || true)" = 0 ] || fail "the stand-in kubelet stopped it: $(cat "$b/events")"
    served=$(openssl s_client -connect "127.0.0.1:$port" -CAfile "$p/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256)
    [ "$served" = "$(openssl x509 -noout -fingerprint -sha256 -in "$p/apiserver.crt")" ] \
        || fail "the running kube-apiserver does not serve the renewed certificate"
    echo "kube-apiserver pid $pid_before kept running and serves the renewed certificate ($(openssl x509 -noout -enddate -in "$p/apiserver.crt"))"
    # A renewed certificate it cannot load: it goes on serving the previous one, which is
    # restored; still no restart.
    local good rc=0
    good=$(sha256sum <"$p/apiserver.crt")
    out=$(PKI_AUTOPILOT_BREAK_RENEWED=apiserver "$target/pki" autopilot --cert-dir "$p" --kubeconfig-dir "$b/$n" \
        --manifests-dir "$b/$n/manifests" --health-timeout 20s --renew-before 8761h 2>&1) || rc=$?
    [ "$rc" = 1 ] || fail "a broken renewal did not fail the pass ($rc): $out"
    grep -q "rolled back kube-apiserver" <<<"$out" && grep -q "it is healthy again" <<<"$out" || fail "not rolled back: $out"
    [ "$(sha256sum <"$p/apiserver.crt")" = "$good" ] || fail "apiserver.crt was not restored"
    [ "$(pgrep -f -- "--secure-port=$port" | head -n1)" = "$pid_before" ] || fail "kube-apiserver was restarted by the rollback"
    livez || fail "kube-apiserver is not live after the rollback"
    served=$(openssl s_client -connect "127.0.0.1:$port" -CAfile "$p/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256)
    [ "$served" = "$(openssl x509 -noout -fingerprint -sha256 -in "$p/apiserver.crt")" ] \
        || fail "after the rollback the running kube-apiserver does not serve the restored certificate"
    echo "a broken renewal is rolled back, and the same process serves the restored certificate"
}

# The first root key, made once by the operator (the plugin never creates one).
"$target/kms-plugin" init --config "$scratch/etc/kubernetes/enc/plugin.yaml" >"$scratch/kms-init.log" 2>&1 \
    || { cat "$scratch/kms-init.log"; echo "k8s-e2e: 0 passed, 1 failed (kms-plugin init)"; exit 1; }
start_etcd
wait_for 30 "etcd" etcdctl_ endpoint health || { tail -n 20 "$scratch/etcd.log"; echo "k8s-e2e: 0 passed, 1 failed (etcd)"; exit 1; }
start_plugin || { tail -n 20 "$scratch/plugin.log"; echo "k8s-e2e: 0 passed, 1 failed (plugin)"; exit 1; }
start_apiserver || { tail -n 40 "$scratch/apiserver.log"; echo "k8s-e2e: 0 passed, 1 failed (kube-apiserver)"; exit 1; }
# As `kubeadm init` does: super-admin.conf (system:masters) binds kubeadm:cluster-admins, the
# group of admin.conf, to cluster-admin.
"$k8s_bin/kubectl" --kubeconfig "$scratch/etc/kubernetes/super-admin.conf" create clusterrolebinding \
    kubeadm:cluster-admins --clusterrole=cluster-admin --group=kubeadm:cluster-admins >/dev/null \
    || { echo "k8s-e2e: 0 passed, 1 failed (cluster-admins binding)"; exit 1; }
# What the README claims this suite runs: kube-apiserver 1.37 over an etcd 3.4 server.
api_version=$("$k8s_bin/kube-apiserver" --version)
etcd_version=$(curl -s --cacert "$pki_dir/etcd/ca.crt" --cert "$pki_dir/apiserver-etcd-client.crt" \
    --key "$pki_dir/apiserver-etcd-client.key" "https://127.0.0.1:$etcd_port/version" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["etcdserver"])')
echo "k8s-e2e: $api_version over etcd server $etcd_version"
[[ $api_version == "Kubernetes v1.37."* ]] || { echo "k8s-e2e: expected kube-apiserver v1.37"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }
[[ $etcd_version == 3.4.* ]] || { echo "k8s-e2e: expected an etcd 3.4 server"; echo "k8s-e2e: 0 passed, 1 failed"; exit 1; }

# shellcheck source=tests/k8s/live_rotation.sh
source tests/k8s/live_rotation.sh

run_test renewed_pairs_are_read_through_one_generation
run_test secrets_are_kms_v2_in_etcd
run_test plugin_and_apiserver_restart_keep_every_secret
run_test a_kms_outage_keeps_the_control_plane_ready
run_test rotations_are_gated_by_every_nodes_state
run_test autopilot_passes_restart_etcd_members_one_at_a_time
run_test autopilot_leaves_a_reloading_kube_apiserver_running
run_test live_rotations_keep_every_component_healthy

echo "k8s-e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
