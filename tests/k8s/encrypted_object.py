#!/usr/bin/env python3
"""Reads one etcd value (etcdctl get -w json on stdin) that kube-apiserver wrote through a KMS v2
provider, checks its prefix and decodes kube-apiserver's EncryptedObject protobuf
(k8s.io/apiserver .../kmsv2/v2 EncryptedObject: 1 encryptedData, 2 keyID, 3 encryptedDEKSource,
4 annotations map<string,bytes>, 5 encryptedDEKSourceType). Prints one JSON object: provider,
key_id, annotation names, sizes. Exits non-zero when the value is not a KMS v2 object."""
import base64
import json
import sys


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            length, i = varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise ValueError(f"unexpected wire type {wire} for field {number}")
        yield number, value


def main():
    kvs = json.load(sys.stdin).get("kvs") or []
    if len(kvs) != 1:
        sys.exit(f"expected one etcd key, got {len(kvs)}")
    raw = base64.b64decode(kvs[0]["value"])
    prefix = b"k8s:enc:kms:v2:"
    if not raw.startswith(prefix):
        sys.exit(f"not a KMS v2 value: starts with {raw[:24]!r}")
    provider, sep, body = raw[len(prefix):].partition(b":")
    if not sep:
        sys.exit("no provider name after the prefix")
    out = {"provider": provider.decode(), "annotations": {}}
    for number, value in fields(body):
        if number == 1:
            out["encrypted_data_len"] = len(value)
        elif number == 2:
            out["key_id"] = value.decode()
        elif number == 3:
            out["dek_source_len"] = len(value)
        elif number == 4:
            entry = dict(fields(value))
            out["annotations"][entry[1].decode()] = len(entry.get(2, b""))
        elif number == 5:
            out["dek_source_type"] = value
    print(json.dumps(out, sort_keys=True))


main()
