import CSodium

/// SHA-256 (libsodium `crypto_hash_sha256`): the keyless chain of the audit log.
public enum SHA256 {
    public static let byteCount = Int(crypto_hash_sha256_BYTES)

    public static func hash(_ parts: UnsafeRawBufferPointer...) -> [UInt8] {
        _ = Sodium.ready
        var state = crypto_hash_sha256_state()
        crypto_hash_sha256_init(&state)
        for p in parts where p.count > 0 {
            crypto_hash_sha256_update(&state, p.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(p.count))
        }
        var out = [UInt8](repeating: 0, count: byteCount)
        crypto_hash_sha256_final(&state, &out)
        return out
    }
}

extension SecureKey {
    /// A subkey for one purpose (libsodium `crypto_kdf_derive_from_key`, BLAKE2b). `context` is exactly
    /// 8 ASCII characters naming the purpose.
    public func derive(_ context: StaticString, id: UInt64 = 1) -> SecureKey {
        precondition(context.utf8CodeUnitCount == Int(crypto_kdf_CONTEXTBYTES))
        return SecureKey { out in
            _ = context.withUTF8Buffer { ctx in
                ctx.withMemoryRebound(to: CChar.self) { c in
                    crypto_kdf_derive_from_key(out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, id, c.baseAddress!, bytes)
                }
            }
        }
    }
}

/// Ed25519 signatures (libsodium `crypto_sign`), for signed audit checkpoints that an auditor verifies
/// with the public key alone.
public final class SigningKey: @unchecked Sendable {
    public static let signatureBytes = Int(crypto_sign_BYTES)
    public static let publicKeyBytes = Int(crypto_sign_PUBLICKEYBYTES)

    public let publicKey: [UInt8]
    private let secret: UnsafeMutableRawPointer

    /// The key pair whose seed is `seed` (32 bytes): deterministic, so it need not be stored.
    public init(seed: SecureKey) {
        _ = Sodium.ready
        var pk = [UInt8](repeating: 0, count: Self.publicKeyBytes)
        let sk = sodium_malloc(Int(crypto_sign_SECRETKEYBYTES))!
        seed.withUnsafeBytes { s in
            _ = crypto_sign_seed_keypair(&pk, sk.assumingMemoryBound(to: UInt8.self), s.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        _ = sodium_mprotect_readonly(sk)
        publicKey = pk
        secret = sk
    }

    deinit { sodium_free(secret) }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: Self.signatureBytes)
        _ = crypto_sign_detached(&sig, nil, message, UInt64(message.count), secret.assumingMemoryBound(to: UInt8.self))
        return sig
    }

    public static func verify(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        _ = Sodium.ready
        guard signature.count == signatureBytes, publicKey.count == publicKeyBytes else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }
}

/// Constant-time comparison of two byte arrays.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && sodium_memcmp(a, b, a.count) == 0
}
