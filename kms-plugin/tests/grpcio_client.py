"""Calls the plugin with Python grpcio (gRPC C-core) and its default :authority for a unix: target.

Messages are encoded by hand so no generated stubs are needed.
Usage: grpcio_client.py SOCKET_PATH
"""
import sys

import grpc


def field(number, wire_type, payload):
    return bytes([(number << 3) | wire_type]) + varint(len(payload)) + payload


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def parse(message):
    """Returns {field_number: [raw values]} for length-delimited fields (enough for KMS v2)."""
    fields, i = {}, 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire_type = key >> 3, key & 7
        assert wire_type == 2, "only length-delimited fields expected"
        length, i = read_varint(message, i)
        fields.setdefault(number, []).append(message[i:i + length])
        i += length
    return fields


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def main():
    channel = grpc.insecure_channel("unix:" + sys.argv[1])
    identity = lambda b: b
    status = channel.unary_unary("/v2.KeyManagementService/Status", request_serializer=identity, response_deserializer=identity)
    encrypt = channel.unary_unary("/v2.KeyManagementService/Encrypt", request_serializer=identity, response_deserializer=identity)
    decrypt = channel.unary_unary("/v2.KeyManagementService/Decrypt", request_serializer=identity, response_deserializer=identity)
    reply = parse(status(b"", timeout=10))
    healthz = reply[2][0].decode()
    seed = b"grpcio-seed-0123456789abcdef0123"
    sealed = parse(encrypt(field(1, 2, seed) + field(2, 2, b"uid-1"), timeout=10))
    request = field(1, 2, sealed[1][0]) + field(2, 2, b"uid-2") + field(3, 2, sealed[2][0])
    for entry in sealed.get(3, []):
        request += field(4, 2, entry)
    opened = parse(decrypt(request, timeout=10))
    round_trip = "ok" if opened[1][0] == seed else "mismatch"
    print(f"healthz={healthz} round_trip={round_trip}")


if __name__ == "__main__":
    main()
