#!/usr/bin/env python3
"""Reads one etcd value (etcdctl get -w json on stdin) that kube-apiserver wrote through a KMS v2
provider, checks its prefix and decodes kube-apiserver's EncryptedObject protobuf
(k8s.io/apiserver .../kmsv2/v2 EncryptedObject: 1 encryptedData, 2 keyID, 3 encryptedDEKSource,
4 annotations map<string,bytes>, 5 encryptedDEKSourceType). Prints one JSON object: provider,
key_id, annotation names, sizes. Exits non-zero when the value is not a KMS v2 object.
With --distinct, reads every value of `etcdctl get --prefix -w json` and prints how many objects
there are and how many distinct encrypted DEK sources and wrapped KEKs (annotation
kek.kms-plugin.dev) they carry: the most Decrypt calls and root-key unwraps a cold start can need."""
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


def decode(raw):
    """The EncryptedObject of one etcd value, with the DEK source and annotation values."""
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
            out["dek_source"] = value
        elif number == 4:
            entry = dict(fields(value))
            out["annotations"][entry[1].decode()] = entry.get(2, b"")
        elif number == 5:
            out["dek_source_type"] = value
    return out


def main():
    kvs = json.load(sys.stdin).get("kvs") or []
    objects = [decode(base64.b64decode(kv["value"])) for kv in kvs]
    if sys.argv[1:] == ["--distinct"]:
        print(json.dumps({
            "objects": len(objects),
            "dek_sources": len({o.get("dek_source", b"") for o in objects}),
            "keks": len({o["annotations"].get("kek.kms-plugin.dev", b"") for o in objects}),
        }, sort_keys=True))
        return
    if len(objects) != 1:
        sys.exit(f"expected one etcd key, got {len(objects)}")
    out = objects[0]
    out["dek_source_len"] = len(out.pop("dek_source", b""))
    out["annotations"] = {k: len(v) for k, v in out["annotations"].items()}
    print(json.dumps(out, sort_keys=True))


main()
