#!/usr/bin/env bash
# Installs etcd (server and etcdctl) and curl for the pki CA-rotation test against a real etcd
# (pki/tests/it/rotate_etcd.rs, which talks to etcd's gRPC gateway with curl and client
# certificates). Idempotent: does nothing when etcd, etcdctl and curl are present.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 \
    && command -v curl >/dev/null 2>&1; then
    echo "provision-etcd: $(etcd --version 2>/dev/null | head -n1) already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq etcd-server etcd-client curl >/dev/null
# The Debian package may start a system etcd on 2379/2380; the tests use their own free ports
# and data dirs, so a running service is harmless, but stop it to keep the machine quiet.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    echo "provision-etcd: etcd-server/etcd-client installed but etcd or etcdctl is missing" >&2
    exit 1
fi
echo "provision-etcd: installed $(etcd --version 2>/dev/null | head -n1)"
