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
    a.withUnsafeBytes { x in b.withUnsafeBytes { y in constantTimeEqual(x, y) } }
}

/// Constant-time comparison of two byte buffers of the same length (false if the lengths differ).
public func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    guard a.count > 0 else { return true }
    return sodium_memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0
}

/// BLAKE2b-256 (libsodium `crypto_generichash`), keyed or not: the audit chain's hash and MAC. On these
/// machines it is about twice as fast as libsodium's portable SHA-256 over a 450-byte record.
public enum BLAKE2b {
    public static let byteCount = 32

    /// The hash of `first` followed by `second`.
    public static func hash(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount) { out, n in
            digest(key: nil, first, second, into: UnsafeMutableRawBufferPointer(out))
            n = byteCount
        }
    }

    /// The keyed hash (a MAC) of `message`.
    public static func mac(key: SecureKey, _ message: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: byteCount) { out, n in
            digest(key: key, message, UnsafeRawBufferPointer(start: nil, count: 0), into: UnsafeMutableRawBufferPointer(out))
            n = byteCount
        }
    }

    /// Writes the (keyed, when `key` is given) hash of `first` followed by `second` into `out`
    /// (``byteCount`` bytes): no heap allocation for messages up to 1 KiB, for loops over many records.
    public static func digest(key: SecureKey?, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer,
                              into out: UnsafeMutableRawBufferPointer) {
        guard let key else { return digest(keyBytes: nil, first, second, into: out) }
        key.withUnsafeBytes { digest(keyBytes: $0, first, second, into: out) }
    }

    /// ``digest(key:_:_:into:)`` with the key's bytes borrowed by the caller for a whole loop (the audit
    /// verifier's workers: a retain of one shared key object per record made them fight over its cache line).
    public static func digest(keyBytes key: UnsafeRawBufferPointer?, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer,
                              into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= byteCount)
        _ = Sodium.ready
        let total = first.count + second.count
        let keyBytes = key?.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let keyCount = key?.count ?? 0
        let o = out.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if total <= 1024 {
            // One-shot over a stack copy: libsodium's streaming state is 64-byte aligned, which Swift can only
            // give from the heap.
            withUnsafeTemporaryAllocation(byteCount: max(total, 1), alignment: 1) { message in
                if first.count > 0 { message.baseAddress!.copyMemory(from: first.baseAddress!, byteCount: first.count) }
                if second.count > 0 { (message.baseAddress! + first.count).copyMemory(from: second.baseAddress!, byteCount: second.count) }
                crypto_generichash(o, byteCount, message.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(total), keyBytes, keyCount)
            }
            return
        }
        withUnsafeTemporaryAllocation(byteCount: crypto_generichash_statebytes(), alignment: 64) { raw in
            let state = OpaquePointer(raw.baseAddress!)
            defer { if key != nil { wipe(raw) } }
            crypto_generichash_init(state, keyBytes, keyCount, byteCount)
            for part in [first, second] where part.count > 0 {  // an empty part may have no address at all
                crypto_generichash_update(state, part.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(part.count))
            }
            crypto_generichash_final(state, o, byteCount)
        }
    }
}
