"""Encrypt and Decrypt calls to a KMS v2 plugin, keeping the sealed data in a file in between.

Usage:
  kms_call.py encrypt SOCKET PLAINTEXT SEALED_FILE   seals PLAINTEXT; prints the key id
  kms_call.py decrypt SOCKET SEALED_FILE             prints the plaintext

SEALED_FILE holds the EncryptResponse as received (protobuf), so data sealed before a restart
can be opened after it. Messages are encoded here; no generated stubs are needed.
"""
import sys

import grpc

SERVICE = "/v2.KeyManagementService/"


def length_delimited(number, payload):
    return encode_varint((number << 3) | 2) + encode_varint(len(payload)) + payload


def encode_varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def fields(message):
    """{field number: [payloads]} of a message made of length-delimited fields only."""
    found, at = {}, 0
    while at < len(message):
        key, at = decode_varint(message, at)
        if key & 7 != 2:
            raise ValueError(f"field {key >> 3}: unexpected wire type {key & 7}")
        size, at = decode_varint(message, at)
        found.setdefault(key >> 3, []).append(message[at:at + size])
        at += size
    return found


def call(socket, method, request):
    with grpc.insecure_channel("unix:" + socket) as channel:
        stub = channel.unary_unary(SERVICE + method, request_serializer=bytes, response_deserializer=bytes)
        return stub(request, timeout=10)


def encrypt(socket, plaintext, sealed_file):
    # EncryptRequest: plaintext = 1, uid = 2.
    reply = call(socket, "Encrypt", length_delimited(1, plaintext.encode()) + length_delimited(2, b"container-test-1"))
    with open(sealed_file, "wb") as f:
        f.write(reply)
    print(fields(reply)[2][0].decode())


def decrypt_request(sealed, uid):
    """The DecryptRequest opening `sealed`, the fields of an EncryptResponse, for `uid`."""
    # EncryptResponse: ciphertext = 1, key_id = 2, annotations = 3 (map entries);
    # DecryptRequest: ciphertext = 1, uid = 2, key_id = 3, annotations = 4.
    request = length_delimited(1, sealed[1][0]) + length_delimited(2, uid)
    request += length_delimited(3, sealed[2][0])
    for entry in sealed.get(3, []):
        request += length_delimited(4, entry)
    return request


def decrypt(socket, sealed_file):
    with open(sealed_file, "rb") as f:
        sealed = fields(f.read())
    # DecryptResponse: plaintext = 1.
    print(fields(call(socket, "Decrypt", decrypt_request(sealed, b"container-test-2")))[1][0].decode())


def main():
    command, socket, *rest = sys.argv[1:]
    if command == "encrypt":
        encrypt(socket, *rest)
    elif command == "decrypt":
        decrypt(socket, *rest)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
