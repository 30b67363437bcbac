#!/usr/bin/env bash
# Issues the kubeadm control-plane PKI set (3 CAs, 7 leaves, sa.key/sa.pub, 5 kubeconfigs with
# embedded client certificates) with the openssl command line, the way an operator script would.
# It is the baseline of benches/issue.rs.
#
# usage: openssl-issue.sh RSA-2048|ECDSA-P256 OUT_DIR [NODE_NAME] [ADVERTISE_IP]
set -euo pipefail

alg=$1
out=$2
node=${3:-cp1}
ip=${4:-192.168.10.5}
pki=$out/pki
mkdir -p "$pki/etcd"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

genkey() {
    case $alg in
        RSA-2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null ;;
        ECDSA-P256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null ;;
        *) echo "unsupported algorithm $alg" >&2; exit 2 ;;
    esac
    chmod 600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# ca BASE CN [DNS]
ca() {
    local base=$1 cn=$2 san=${3:-}
    genkey "$pki/$base.key"
    local ext=(-addext "basicConstraints=critical,CA:TRUE"
        -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign"
        -addext "subjectKeyIdentifier=hash")
    if [ -n "$san" ]; then ext+=(-addext "subjectAltName=$san"); fi
    openssl req -x509 -new -key "$pki/$base.key" -subj "/CN=$cn" -days 3650 -set_serial "$(serial)" \
        "${ext[@]}" -out "$pki/$base.crt"
    chmod 644 "$pki/$base.crt"
}

# sign KEY CA_BASE SUBJECT EKU SAN OUT_CRT
sign() {
    local key=$1 cab=$2 subj=$3 eku=$4 san=$5 crt=$6
    openssl req -new -key "$key" -subj "$subj" -out "$tmp/req.csr"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$eku"
        echo "subjectKeyIdentifier=hash"
        echo "authorityKeyIdentifier=keyid"
        if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
    } >"$tmp/ext.cnf"
    openssl x509 -req -in "$tmp/req.csr" -CA "$pki/$cab.crt" -CAkey "$pki/$cab.key" -set_serial "$(serial)" \
        -days 365 -extfile "$tmp/ext.cnf" -out "$crt" 2>/dev/null
    chmod 644 "$crt"
}

# leaf BASE CA_BASE SUBJECT EKU [SAN]
leaf() {
    genkey "$pki/$1.key"
    sign "$pki/$1.key" "$2" "$3" "$4" "${5:-}" "$pki/$1.crt"
}

# kubeconfig FILE SUBJECT USER
kubeconfig() {
    local file=$1 subj=$2 user=$3
    genkey "$tmp/client.key"
    sign "$tmp/client.key" ca "$subj" clientAuth "" "$tmp/client.crt"
    umask 077
    cat >"$out/$file" <<YAML
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
    server: https://$ip:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $user
  name: $user@kubernetes
current-context: $user@kubernetes
kind: Config
preferences: {}
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$tmp/client.crt")
    client-key-data: $(base64 -w0 "$tmp/client.key")
YAML
    umask 022
}

ca ca kubernetes DNS:kubernetes
ca etcd/ca etcd-ca
ca front-proxy-ca front-proxy-ca

leaf apiserver ca /CN=kube-apiserver serverAuth \
    "DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1,IP:$ip"
leaf apiserver-kubelet-client ca /CN=kube-apiserver-kubelet-client clientAuth
leaf front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
leaf etcd/server etcd/ca "/CN=$node" serverAuth,clientAuth "DNS:$node,DNS:localhost,IP:$ip,IP:127.0.0.1,IP:::1"
leaf etcd/peer etcd/ca "/CN=$node" serverAuth,clientAuth "DNS:$node,DNS:localhost,IP:$ip,IP:127.0.0.1,IP:::1"
leaf etcd/healthcheck-client etcd/ca /CN=kube-etcd-healthcheck-client clientAuth
leaf apiserver-etcd-client etcd/ca /CN=kube-apiserver-etcd-client clientAuth

genkey "$pki/sa.key"
openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

kubeconfig admin.conf "/O=kubeadm:cluster-admins/CN=kubernetes-admin" kubernetes-admin
kubeconfig super-admin.conf "/O=system:masters/CN=kubernetes-super-admin" kubernetes-super-admin
kubeconfig controller-manager.conf /CN=system:kube-controller-manager system:kube-controller-manager
kubeconfig scheduler.conf /CN=system:kube-scheduler system:kube-scheduler
kubeconfig kubelet.conf "/O=system:nodes/CN=system:node:$node" "system:node:$node"
