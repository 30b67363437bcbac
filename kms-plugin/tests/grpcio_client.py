"""Calls the plugin with Python grpcio (gRPC C-core) and its default :authority for a unix: target.

The messages and calls are those of the container test's client, tests/container/kms_call.py
(encoded by hand, so no generated stubs are needed).
Usage: grpcio_client.py SOCKET_PATH
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "container"))
from kms_call import call, decrypt_request, fields, length_delimited  # noqa: E402


def main():
    socket = sys.argv[1]
    # StatusResponse: version = 1, healthz = 2, key_id = 3.
    healthz = fields(call(socket, "Status", b""))[2][0].decode()
    seed = b"grpcio-seed-0123456789abcdef0123"
    # EncryptRequest: plaintext = 1, uid = 2.
    sealed = fields(call(socket, "Encrypt", length_delimited(1, seed) + length_delimited(2, b"uid-1")))
    # DecryptResponse: plaintext = 1.
    opened = fields(call(socket, "Decrypt", decrypt_request(sealed, b"uid-2")))
    round_trip = "ok" if opened[1][0] == seed else "mismatch"
    print(f"healthz={healthz} round_trip={round_trip}")


if __name__ == "__main__":
    main()
