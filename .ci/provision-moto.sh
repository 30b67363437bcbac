#!/usr/bin/env bash
# Installs moto's server for the AWS KMS backend tests (kms-plugin/tests/it/backend_aws.rs).
# Idempotent: does nothing when `moto_server` already runs.
set -euo pipefail

if command -v moto_server >/dev/null 2>&1 && moto_server --help >/dev/null 2>&1; then
    echo "provision-moto: moto_server already installed"
    exit 0
fi

if command -v pip3 >/dev/null 2>&1; then
    PIP=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-pip >/dev/null
    PIP=(python3 -m pip)
fi

# Debian's system Python refuses global installs (PEP 668) unless told otherwise.
"${PIP[@]}" install --quiet 'moto[server]' || "${PIP[@]}" install --quiet --break-system-packages 'moto[server]'
# pyenv only exposes new console scripts after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
hash -r
if ! moto_server --help >/dev/null 2>&1; then
    echo "provision-moto: moto installed but moto_server is not on PATH ($PATH)" >&2
    exit 1
fi
echo "provision-moto: installed moto_server"
