"""Independent verifier for tokens from the ExternalJWTSigner (Python `cryptography`).

Usage: jwt_verify.py TOKEN PUBLIC_KEY_DER_FILE
Checks the header holds exactly alg, kid and typ=JWT, that kid is kube-apiserver's key id of the
key (unpadded base64url SHA-256 of the DER public key), and the signature. Prints "valid <alg>".
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64decode(segment):
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def main():
    token, key_file = sys.argv[1], sys.argv[2]
    der = open(key_file, "rb").read()
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = json.loads(b64decode(header_b64))
    assert sorted(header) == ["alg", "kid", "typ"], header
    assert header["typ"] == "JWT", header
    kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert header["kid"] == kid, (header["kid"], kid)
    key = serialization.load_der_public_key(der)
    message = f"{header_b64}.{claims_b64}".encode()
    signature = b64decode(signature_b64)
    alg = header["alg"]
    if alg == "RS256":
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    elif alg in ("ES256", "ES384"):
        assert isinstance(key, ec.EllipticCurvePublicKey)
        size = {"ES256": 32, "ES384": 48}[alg]
        assert len(signature) == 2 * size, len(signature)
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))
    else:
        raise AssertionError(f"unexpected alg {alg}")
    json.loads(b64decode(claims_b64))
    print(f"valid {alg}")


if __name__ == "__main__":
    main()
