#!/usr/bin/env bash
# Installs SoftHSM2 for the PKCS#11 backend tests (kms-plugin/tests/it/backend_pkcs11.rs).
# Idempotent: does nothing when softhsm2-util and the module are already present.
set -euo pipefail

MODULE=/usr/lib/softhsm/libsofthsm2.so

if command -v softhsm2-util >/dev/null 2>&1 && [ -e "$MODULE" ]; then
    echo "provision-softhsm: $(softhsm2-util --version) already installed ($MODULE)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq softhsm2 >/dev/null
if [ ! -e "$MODULE" ]; then
    echo "provision-softhsm: softhsm2 installed but $MODULE is missing" >&2
    exit 1
fi
echo "provision-softhsm: installed $(softhsm2-util --version) ($MODULE)"
