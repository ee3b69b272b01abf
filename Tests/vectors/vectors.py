#!/usr/bin/env python3
"""Recomputes TokenVault's fixed test vectors with independent implementations.

Not run by CI (it needs `pip install pynacl argon2-cffi`); run it after changing a format on purpose and
paste the output into Tests/VaultCryptoTests/SealerTests.swift.

Sealed-record format v1:
    sealed = 0x01 || nonce(24) || crypto_secretbox(plaintext, nonce, subkey)
    subkey = BLAKE2b-256(key=K, msg="tokenvault/<purpose>/v1" || 0x00 || name)
"""
import hashlib

import nacl.bindings
from argon2.low_level import Type, hash_secret_raw

KEY = bytes(range(32))
NONCE = bytes(0xA0 + i for i in range(24))


def seal(purpose: str, name: str, plaintext: bytes) -> str:
    subkey = hashlib.blake2b(f"tokenvault/{purpose}/v1".encode() + b"\0" + name.encode(), key=KEY, digest_size=32).digest()
    return (b"\x01" + NONCE + nacl.bindings.crypto_secretbox(plaintext, NONCE, subkey)).hex()


print("token   ", seal("token", "acme/ads", b"EAAB-test-token"))
print("app     ", seal("app-secret", "acme", b"app-secret-0001"))
# crypto_pwhash ALG_ARGON2ID13, opslimit 2, memlimit 8192 bytes (8 KiB), one lane.
print("argon2id", hash_secret_raw(b"password", bytes(range(16)), time_cost=2, memory_cost=8, parallelism=1,
                                  hash_len=32, type=Type.ID).hex())

# Audit chain v2 (Docs/AUDIT.md): hash = BLAKE2b-256(previous hash || line before ',"hash":"'),
# mac = BLAKE2b-256(key=MAC key, msg=hash). First record of a log: previous hash = 32 zero bytes.
LINE = b'{"seq":1,"time":"2026-11-29T10:35:22.123456Z","channel":"socket","action":"get","token":"acme/ads"'
h = hashlib.blake2b(bytes(32) + LINE, digest_size=32).digest()
print("audit-v2-hash", h.hex())
print("audit-v2-mac ", hashlib.blake2b(h, key=KEY, digest_size=32).digest().hex())


def metadata_message(fields, sealed: bytes) -> str:
    """MetadataMAC's canonical message v1: each field absent (0) or 1 || u32be length || bytes."""
    out = b"tokenvault-token-metadata-v1\0"
    for f in list(fields) + [sealed]:
        if f is None:
            out += b"\0"
        else:
            b = f if isinstance(f, bytes) else str(f).encode()
            out += b"\x01" + len(b).to_bytes(4, "big") + b
    return out.hex()


# name, kind, app, token_type, scopes, granular_scopes, expires_at, data_access_expires_at, valid, checked_at, last_error
print("metadata", metadata_message(["acme/ads", "user", "acme", None, '["ads_read"]', None, 1767225600, None, 1, 0, "é"],
                                   bytes([1, 2, 3])))
