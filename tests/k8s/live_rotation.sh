# Sourced by tests/k8s/run.sh (uses its helpers: fail, wait_for, free_port, remember, $target,
# $k8s_bin, $scratch).
#
# A live cluster of three control-plane nodes l1-l3 (127.0.2.1-3), each with its own directories,
# an etcd member (a 3-member cluster) and a kube-apiserver 1.37 over its local member, and
# kube-controller-manager on l1, all run from kubeadm-shaped manifests by
# tests/k8s/static_pods.py as the kubelet would. `etcd-ca`, `ca` and `sa` are rotated through the
# API (`--kubeconfig` each node's own admin.conf), each phase on each node followed by the
# restarts `pki rotate` prints, one component at a time; after every command and every restart
# the whole cluster is checked (each check may take up to 30 s to pass, as a client reconnects):
# every etcd member healthy through every node's healthcheck client, every
# kube-apiserver ready to every node's admin.conf, a Secret written through one apiserver and read
# through another, kube-controller-manager healthy. For `sa` a token of the old key and one of
# the new key are checked against every apiserver as the rotation goes.
test_live_rotations_keep_every_component_healthy() {
    local lv=$scratch/live i n p f cluster="" events
    local -a client peer api
    events=$lv/events
    for i in 1 2 3; do
        client[$i]=$(free_port); peer[$i]=$(free_port); api[$i]=$(free_port)
        cluster+="${cluster:+,}l$i=https://127.0.2.$i:${peer[$i]}"
    done
    local kcm_port
    kcm_port=$(free_port)
    for i in 1 2 3; do
        n=l$i
        mkdir -p "$lv/$n/pki/etcd" "$lv/$n/manifests"
        if [ "$i" != 1 ]; then # the cluster's CAs and SA key, as kubeadm join copies them
            for f in ca.crt ca.key front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key sa.key sa.pub; do
                cp "$lv/l1/pki/$f" "$lv/$n/pki/$f"
            done
        fi
        "$target/pki" init --kubernetes-version v1.37 --cert-dir "$lv/$n/pki" --kubeconfig-dir "$lv/$n" \
            --node-name "$n" --apiserver-advertise-address "127.0.2.$i" --apiserver-bind-port "${api[$i]}" \
            >"$lv/$n/init.log" 2>&1 || fail "pki init $n: $(tail -n 3 "$lv/$n/init.log")"
        p=$lv/$n/pki
        cat >"$lv/$n/manifests/etcd.yaml" <<YAML
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
    - --advertise-client-urls=https://127.0.2.$i:${client[$i]}
    - --cert-file=$p/etcd/server.crt
    - --client-cert-auth=true
    - --data-dir=$lv/$n/etcd-data
    - --initial-advertise-peer-urls=https://127.0.2.$i:${peer[$i]}
    - --initial-cluster=$cluster
    - --initial-cluster-state=new
    - --key-file=$p/etcd/server.key
    - --listen-client-urls=https://127.0.2.$i:${client[$i]}
    - --listen-peer-urls=https://127.0.2.$i:${peer[$i]}
    - --name=$n
    - --peer-cert-file=$p/etcd/peer.crt
    - --peer-client-cert-auth=true
    - --peer-key-file=$p/etcd/peer.key
    - --peer-trusted-ca-file=$p/etcd/ca.crt
    - --trusted-ca-file=$p/etcd/ca.crt
    image: registry.k8s.io/etcd:3.5.21-0
    name: etcd
  hostNetwork: true
YAML
        cat >"$lv/$n/manifests/kube-apiserver.yaml" <<YAML
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
    - --advertise-address=127.0.2.$i
    - --bind-address=127.0.2.$i
    - --secure-port=${api[$i]}
    - --endpoint-reconciler-type=none
    - --authorization-mode=Node,RBAC
    - --client-ca-file=$p/ca.crt
    - --etcd-cafile=$p/etcd/ca.crt
    - --etcd-certfile=$p/apiserver-etcd-client.crt
    - --etcd-keyfile=$p/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.2.$i:${client[$i]}
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
    done
    p=$lv/l1/pki
    local conf=$lv/l1/controller-manager.conf
    cat >"$lv/l1/manifests/kube-controller-manager.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-controller-manager
  name: kube-controller-manager
  namespace: kube-system
spec:
  containers:
  - command:
    - $k8s_bin/kube-controller-manager
    - --authentication-kubeconfig=$conf
    - --authorization-kubeconfig=$conf
    - --bind-address=127.0.0.1
    - --client-ca-file=$p/ca.crt
    - --cluster-signing-cert-file=$p/ca.crt
    - --cluster-signing-key-file=$p/ca.key
    - --controllers=root-ca-certificate-publisher-controller,kube-apiserver-serving-clustertrustbundle-publisher-controller,serviceaccount-controller,certificatesigningrequest-signing-controller
    - --kubeconfig=$conf
    - --leader-elect=false
    - --requestheader-client-ca-file=$p/front-proxy-ca.crt
    - --root-ca-file=$p/ca.crt
    - --secure-port=$kcm_port
    - --service-account-private-key-file=$p/sa.key
    - --use-service-account-credentials=true
    image: registry.k8s.io/kube-controller-manager:v1.37.2
    name: kube-controller-manager
  hostNetwork: true
YAML
    mkdir -p "$lv/logs"
    python3 tests/k8s/static_pods.py "$events" "$lv/logs" "$lv"/l{1,2,3}/manifests/etcd.yaml &
    remember live-etcd $!
    member_healthy() { # member_healthy N [M]: member N is healthy, asked with node M's client (default N)
        local m=${2:-$1}
        curl -sf --max-time 5 --cacert "$lv/l$m/pki/etcd/ca.crt" --cert "$lv/l$m/pki/etcd/healthcheck-client.crt" \
            --key "$lv/l$m/pki/etcd/healthcheck-client.key" "https://127.0.2.$1:${client[$1]}/health" \
            | grep -q '"health":"true"'
    }
    for i in 1 2 3; do wait_for 60 "etcd member l$i" member_healthy "$i" || fail "etcd member l$i did not start"; done
    python3 tests/k8s/static_pods.py "$events" "$lv/logs" "$lv"/l{1,2,3}/manifests/kube-apiserver.yaml \
        "$lv/l1/manifests/kube-controller-manager.yaml" &
    remember live-control-plane $!
    kc() { # kc N M ARGS...: kubectl with node N's admin.conf against node M's kube-apiserver
        local from=$1 to=$2
        shift 2
        "$k8s_bin/kubectl" --kubeconfig "$lv/l$from/admin.conf" --server "https://127.0.2.$to:${api[$to]}" \
            --request-timeout=10s "$@"
    }
    for i in 1 2 3; do wait_for 120 "kube-apiserver l$i" kc "$i" "$i" get --raw /readyz || fail "kube-apiserver l$i did not start"; done
    "$k8s_bin/kubectl" --kubeconfig "$lv/l1/super-admin.conf" create clusterrolebinding kubeadm:cluster-admins \
        --clusterrole=cluster-admin --group=kubeadm:cluster-admins >/dev/null || fail "the cluster-admins binding"
    for i in 1 2 3; do
        kc 1 1 apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: l$i, labels: {node-role.kubernetes.io/control-plane: ""}}
YAML
        self_signed "$lv" "kubelet-l$i"
        kubelet_serves "l$i" "$(serve_tls "kubelet-l$i" "$lv/kubelet-l$i.crt" "$lv/kubelet-l$i.key")" kc 1 1
        apiserver_pod "l$i" "127.0.2.$i:${api[$i]}" kc 1 1
    done
    kc 1 1 create serviceaccount rotator >/dev/null || fail "creating the service account"
    kcm_healthy() { [ "$(curl -sk --max-time 5 "https://127.0.0.1:$kcm_port/healthz")" = ok ]; }
    wait_for 60 "kube-controller-manager" kcm_healthy || fail "kube-controller-manager did not start"

    local checks=0
    healthy() { # healthy WHAT: every component of the cluster works, seen from every node
        local i j
        for i in 1 2 3; do for j in 1 2 3; do
            wait_for 30 "etcd member l$i to l$j's client" member_healthy "$i" "$j" \
                || fail "after $1: etcd member l$i is not healthy to l$j's client"
            wait_for 30 "kube-apiserver l$i to l$j's admin.conf" kc "$j" "$i" get --raw /readyz \
                || fail "after $1: kube-apiserver l$i is not ready to l$j's admin.conf: $(kc "$j" "$i" get --raw /readyz 2>&1 | tail -n 3)"
        done; done
        checks=$((checks + 1))
        local writer=$((checks % 3 + 1)) reader=$(((checks + 1) % 3 + 1))
        kc "$writer" "$writer" create secret generic "live-$checks" --from-literal=v="value-$checks" >/dev/null \
            || fail "after $1: writing a Secret through l$writer"
        [ "$(kc "$reader" "$reader" get secret "live-$checks" -o jsonpath='{.data.v}' | base64 -d)" = "value-$checks" ] \
            || fail "after $1: reading the Secret through l$reader"
        kcm_healthy || fail "after $1: kube-controller-manager is not healthy"
    }
    pod_pid() { # pod_pid NODE COMPONENT: the pid of that static pod's process
        case $2 in
            etcd) pgrep -f -- "--name=$1 " | head -n1 ;;
            kube-apiserver) pgrep -f -- "--secure-port=${api[${1#l}]} " | head -n1 ;;
            kube-controller-manager) pgrep -f -- "--secure-port=$kcm_port " | head -n1 ;;
        esac
    }
    restart() { # restart NODE COMPONENT: as the kubelet does when the manifest changes; waits for the new process
        local node=$1 c=$2 before
        before=$(pod_pid "$node" "$c")
        [ -n "$before" ] || fail "no $c process on $node"
        echo "# restarted $(date +%s.%N)" >>"$lv/$node/manifests/$c.yaml"
        wait_for 30 "$c on $node to stop" gone "$before" || fail "$c on $node did not stop"
        wait_for 30 "$c on $node to start" eval '[ -n "$(pod_pid "$node" "$c")" ]' || fail "$c on $node did not start"
        case $c in
            etcd) wait_for 60 "etcd member $node" member_healthy "${node#l}" || fail "etcd member $node is not healthy after its restart: $(tail -n 5 "$lv/logs/$node.log")" ;;
            kube-apiserver) wait_for 120 "kube-apiserver $node" kc "${node#l}" "${node#l}" get --raw /readyz \
                || fail "kube-apiserver $node is not ready after its restart: $(tail -n 5 "$lv/logs/$node.log")" ;;
            kube-controller-manager) wait_for 60 "kube-controller-manager" kcm_healthy || fail "kube-controller-manager is not healthy after its restart" ;;
        esac
        healthy "restarting $c on $node"
    }
    r() { # r NODE TARGET PHASE [ARGS...]: pki rotate on that node, through the API with its admin.conf
        local node=$1 t=$2 phase=$3
        shift 3
        "$target/pki" rotate "$t" "$phase" --cert-dir "$lv/$node/pki" --kubeconfig-dir "$lv/$node" \
            --kubeconfig "$lv/$node/admin.conf" --node-name "$node" "$@" >>"$lv/rotate.log" 2>&1 \
            || fail "pki rotate $t $phase on $node: $(tail -n 8 "$lv/rotate.log")"
        healthy "pki rotate $t $phase on $node"
    }
    served_by_new_ca() { # served_by_new_ca N CA-FILE: kube-apiserver lN serves a certificate that CA-FILE verifies
        openssl s_client -connect "127.0.2.$1:${api[$1]}" -CAfile "$2" -verify_return_error </dev/null >/dev/null 2>&1
    }
    healthy "start"
    local key
    key=$(openssl rand -hex 32)

    # etcd-ca: members restart one at a time, each healthy before the next.
    r l1 etcd-ca start --export "$lv/etcd-ca.share" --certificate-key "$key"
    for n in l2 l3; do r "$n" etcd-ca start --join "$lv/etcd-ca.share" --certificate-key "$key"; done
    for n in l1 l2 l3; do restart "$n" etcd; done
    for n in l1 l2 l3; do restart "$n" kube-apiserver; done
    for n in l1 l2 l3; do r "$n" etcd-ca switch; restart "$n" etcd; restart "$n" kube-apiserver; done
    for n in l1 l2 l3; do r "$n" etcd-ca finish; restart "$n" etcd; restart "$n" kube-apiserver; done
    for i in 1 2 3; do
        [ "$(grep -c 'BEGIN CERTIFICATE' "$lv/l$i/pki/etcd/ca.crt")" = 1 ] || fail "l$i's etcd/ca.crt holds more than the new CA"
        cmp -s "$lv/l$i/pki/etcd/ca.crt" "$lv/l1/pki/etcd/ca.crt" || fail "l$i trusts another etcd CA than l1"
        openssl verify -CAfile "$lv/l$i/pki/etcd/ca.crt" "$lv/l$i/pki/etcd/server.crt" "$lv/l$i/pki/etcd/peer.crt" \
            "$lv/l$i/pki/apiserver-etcd-client.crt" >/dev/null || fail "l$i's etcd certificates are not from the new etcd CA"
    done
    echo "etcd-ca: rotated on 3 nodes, $checks cluster checks passed"

    # ca: kube-controller-manager's signer flags are edited through --manifests-dir on l1 (the
    # stand-in kubelet restarts it on that edit, as the kubelet would).
    local old_ca checks_before=$checks
    old_ca=$lv/old-ca.crt
    cp "$lv/l1/pki/ca.crt" "$old_ca"
    r l1 ca start --export "$lv/ca.share" --certificate-key "$key" --manifests-dir "$lv/l1/manifests"
    for n in l2 l3; do r "$n" ca start --join "$lv/ca.share" --certificate-key "$key"; done
    for n in l1 l2 l3; do restart "$n" kube-apiserver; done
    restart l1 kube-controller-manager
    wait_for 60 "kube-root-ca.crt to hold both CAs" eval \
        '[ "$(kc 1 1 -n default get configmap kube-root-ca.crt -o jsonpath="{.data.ca\.crt}" | grep -c "BEGIN CERTIFICATE")" = 2 ]' \
        || fail "kube-controller-manager did not republish kube-root-ca.crt"
    wait_for 60 "the serving ClusterTrustBundle to hold both CAs" eval \
        '[ "$(kc 1 1 get clustertrustbundles -o jsonpath="{range .items[?(@.spec.signerName==\"kubernetes.io/kube-apiserver-serving\")]}{.spec.trustBundle}{end}" | grep -c "BEGIN CERTIFICATE")" = 2 ]' \
        || fail "kube-controller-manager did not republish the kube-apiserver-serving ClusterTrustBundle"
    for n in l1 l2 l3; do
        r "$n" ca switch
        restart "$n" kube-apiserver
        [ "$n" != l1 ] || restart l1 kube-controller-manager
        served_by_new_ca "${n#l}" "$lv/l1/pki/.rotation/staged/ca/new.crt" || fail "kube-apiserver $n does not serve a new-CA certificate after switch"
    done
    for n in l1 l2 l3; do
        r "$n" ca finish
        restart "$n" kube-apiserver
        [ "$n" != l1 ] || restart l1 kube-controller-manager
    done
    grep -q -- "--cluster-signing-cert-file=$lv/l1/pki/ca.crt$" "$lv/l1/manifests/kube-controller-manager.yaml" \
        || fail "kube-controller-manager's signer flag was not put back"
    for i in 1 2 3; do
        [ "$(grep -c 'BEGIN CERTIFICATE' "$lv/l$i/pki/ca.crt")" = 1 ] || fail "l$i's ca.crt holds more than the new CA"
        cmp -s "$lv/l$i/pki/ca.crt" "$lv/l1/pki/ca.crt" || fail "l$i trusts another CA than l1"
        ! cmp -s "$lv/l$i/pki/ca.crt" "$old_ca" || fail "l$i still has the old CA"
        served_by_new_ca "$i" "$lv/l1/pki/ca.crt" || fail "kube-apiserver l$i does not serve a certificate of the new CA"
        ! served_by_new_ca "$i" "$old_ca" || fail "kube-apiserver l$i still serves an old-CA certificate"
    done
    echo "ca: rotated on 3 nodes, $((checks - checks_before)) cluster checks passed"

    # sa: a token of the old key works everywhere until finish; one of the new key from the
    # first apiserver that switched works everywhere from then on.
    token_works() { # token_works N TOKEN: kube-apiserver lN authenticates TOKEN
        [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$lv/l1/pki/ca.crt" \
            -H "Authorization: Bearer $2" "https://127.0.2.$1:${api[$1]}/api")" = 200 ]
    }
    local old_token new_token
    checks_before=$checks
    old_token=$(kc 1 1 create token rotator --duration 1h) || fail "requesting a token"
    for i in 1 2 3; do token_works "$i" "$old_token" || fail "l$i does not take a token before the sa rotation"; done
    r l1 sa start --export "$lv/sa.share" --certificate-key "$key"
    for n in l2 l3; do r "$n" sa start --join "$lv/sa.share" --certificate-key "$key"; done
    for n in l1 l2 l3; do restart "$n" kube-apiserver; done
    for n in l1 l2 l3; do
        r "$n" sa switch --max-token-lifetime 1s
        restart "$n" kube-apiserver
        [ "$n" != l1 ] || restart l1 kube-controller-manager
        if [ "$n" = l1 ]; then
            new_token=$(kc 1 1 create token rotator --duration 1h) || fail "requesting a token of the new key"
        fi
        for i in 1 2 3; do
            token_works "$i" "$old_token" || fail "l$i refuses a token of the old key after switch on $n"
            token_works "$i" "$new_token" || fail "l$i refuses a token of the new key after switch on $n"
        done
    done
    sleep 2
    for n in l1 l2 l3; do r "$n" sa finish; restart "$n" kube-apiserver; done
    for i in 1 2 3; do
        token_works "$i" "$new_token" || fail "l$i refuses a token of the new key after finish"
        ! token_works "$i" "$old_token" || fail "l$i still takes a token of the old key after finish"
    done
    echo "sa: rotated on 3 nodes, $((checks - checks_before)) cluster checks passed; the old key's token is refused everywhere after finish"
    [ "$(grep -c ' down$' "$events")" -gt 0 ] || fail "no restart was recorded"
    echo "$(grep -c ' up$' "$events") process starts, $checks whole-cluster checks in all"
}
