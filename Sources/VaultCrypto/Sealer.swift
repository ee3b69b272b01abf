import CSodium

/// What a sealed value is, and for which name. Both go into the key that seals it, so a value sealed
/// for one name (or one purpose) does not open as another.
public struct SealContext: Sendable, Equatable {
    public enum Purpose: String, Sendable {
        case token, appSecret = "app-secret", dataKey = "data-key", export
        /// A data key wrapped by this release: the tokens it seals carry a metadata MAC (``Sealer/mac(_:key:context:)``).
        case dataKeyV2 = "data-key-v2"
        /// The MAC over a token's metadata, keyed by the token's data key.
        case tokenMetadata = "token-metadata"
    }
    public let purpose: Purpose
    public let name: String

    public init(_ purpose: Purpose, name: String) {
        self.purpose = purpose
        self.name = name
    }

    public static func token(_ name: String) -> SealContext { .init(.token, name: name) }
    public static func appSecret(_ app: String) -> SealContext { .init(.appSecret, name: app) }
    public static func dataKey(_ id: Int64) -> SealContext { .init(.dataKey, name: String(id)) }
    public static func dataKeyV2(_ id: Int64) -> SealContext { .init(.dataKeyV2, name: String(id)) }
    public static func tokenMetadata(_ name: String) -> SealContext { .init(.tokenMetadata, name: name) }

    /// `"tokenvault/<purpose>/v1" 0x00`: the per-record subkey is derived from this followed by the name.
    var derivationPrefix: StaticString {
        switch purpose {
        case .token: "tokenvault/token/v1\0"
        case .appSecret: "tokenvault/app-secret/v1\0"
        case .dataKey: "tokenvault/data-key/v1\0"
        case .export: "tokenvault/export/v1\0"
        case .dataKeyV2: "tokenvault/data-key/v2\0"
        case .tokenMetadata: "tokenvault/token-metadata/v1\0"
        }
    }
}

/// The sealed-record format, version 1:
///
///     sealed = 0x01 || nonce (24 bytes) || crypto_secretbox_easy(plaintext, nonce, subkey)
///     subkey = BLAKE2b-256(key: K, message: "tokenvault/<purpose>/v1" || 0x00 || name)
///
/// `crypto_secretbox` is XSalsa20-Poly1305; the nonce is random for every seal, so sealing the same
/// value twice gives different bytes. Binding the name through the subkey means a ciphertext copied
/// onto another name fails authentication exactly like a flipped bit does.
public enum Sealer {
    public static let version: UInt8 = 1
    public static let nonceBytes = Int(crypto_secretbox_NONCEBYTES)
    public static let macBytes = Int(crypto_secretbox_MACBYTES)
    public static let overhead = 1 + nonceBytes + macBytes

    /// Seals `plaintext` under `key` for `context` with a fresh random nonce.
    public static func seal(_ plaintext: UnsafeRawBufferPointer, key: SecureKey, context: SealContext) -> [UInt8] {
        seal(plaintext, key: key, context: context, nonce: randomBytes(nonceBytes))
    }

    public static func seal(_ plaintext: SecretBytes, key: SecureKey, context: SealContext) -> [UInt8] {
        plaintext.withUnsafeBytes { seal($0, key: key, context: context) }
    }

    /// Wraps one key under another (a data key under a master key).
    public static func seal(key inner: SecureKey, under key: SecureKey, context: SealContext) -> [UInt8] {
        inner.withUnsafeBytes { seal($0, key: key, context: context) }
    }

    /// Sealing with a chosen nonce: for the fixed test vectors only. Never reuse a nonce.
    static func seal(_ plaintext: UnsafeRawBufferPointer, key: SecureKey, context: SealContext, nonce: [UInt8]) -> [UInt8] {
        precondition(nonce.count == nonceBytes)
        var out = [UInt8](repeating: 0, count: 1 + nonceBytes + macBytes + plaintext.count)
        out[0] = version
        out.replaceSubrange(1...nonceBytes, with: nonce)
        // libsodium wants a valid pointer even for an empty message.
        let empty: UInt8 = 0
        withUnsafePointer(to: empty) { emptyPointer in
            withSubkey(key, context) { subkey in
                out.withUnsafeMutableBufferPointer { o in
                    let rc = crypto_secretbox_easy(
                        o.baseAddress! + 1 + nonceBytes,
                        plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer,
                        UInt64(plaintext.count), o.baseAddress! + 1, subkey)
                    precondition(rc == 0, "crypto_secretbox_easy failed")
                }
            }
        }
        return out
    }

    public static let macBytesOut = 32

    /// A MAC (keyed BLAKE2b-256) over `message` under the subkey of `key` for `context`: what binds a
    /// token's metadata to its sealed record, so an edited column fails like a flipped ciphertext bit.
    public static func mac(_ message: UnsafeRawBufferPointer, key: SecureKey, context: SealContext) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: macBytesOut) { out, n in
            mac(message, key: key, context: context, into: UnsafeMutableRawBufferPointer(out))
            n = macBytesOut
        }
    }

    /// ``mac(_:key:context:)`` written into `out` (``macBytesOut`` bytes): no allocation, for the read path,
    /// which checks the MAC of nearly every row it reads when a large vault is read in no order.
    public static func mac(_ message: UnsafeRawBufferPointer, key: SecureKey, context: SealContext, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count == macBytesOut)
        let empty: UInt8 = 0
        withUnsafePointer(to: empty) { emptyPointer in
            withSubkey(key, context) { subkey in
                _ = crypto_generichash(out.baseAddress!.assumingMemoryBound(to: UInt8.self), macBytesOut,
                                       message.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer,
                                       UInt64(message.count), subkey, Int(crypto_secretbox_KEYBYTES))
            }
        }
    }

    /// Opens a sealed value into a wipeable buffer.
    public static func open(_ sealed: [UInt8], key: SecureKey, context: SealContext) throws -> SecretBytes {
        try sealed.withUnsafeBytes { try open($0, key: key, context: context) }
    }

    /// Opens sealed bytes in place (no copy of the ciphertext).
    public static func open(_ sealed: UnsafeRawBufferPointer, key: SecureKey, context: SealContext) throws -> SecretBytes {
        let length = try plaintextLength(sealed)
        return try SecretBytes(count: length) { out in try open(sealed, key: key, context: context, into: out) }
    }

    /// Unwraps a key sealed with ``seal(key:under:context:)`` straight into secure memory.
    public static func openKey(_ sealed: [UInt8], under key: SecureKey, context: SealContext) throws -> SecureKey {
        try sealed.withUnsafeBytes { raw in
            let length = try plaintextLength(raw)
            guard length == SecureKey.byteCount else {
                throw CryptoError.malformedSealedData("a wrapped key must hold \(SecureKey.byteCount) bytes, this one holds \(length)")
            }
            return try SecureKey { out in try open(raw, key: key, context: context, into: out) }
        }
    }

    private static func plaintextLength(_ sealed: UnsafeRawBufferPointer) throws -> Int {
        guard sealed.count >= overhead else {
            throw CryptoError.malformedSealedData("\(sealed.count) bytes is shorter than the \(overhead)-byte minimum")
        }
        guard sealed[0] == version else {
            throw CryptoError.malformedSealedData("unknown format version \(sealed[0])")
        }
        return sealed.count - overhead
    }

    private static func open(_ sealed: UnsafeRawBufferPointer, key: SecureKey, context: SealContext, into out: UnsafeMutableRawBufferPointer) throws {
        // A zero-length plaintext still needs a valid destination pointer for libsodium.
        var scratch: UInt8 = 0
        let ok: Bool = withUnsafeMutablePointer(to: &scratch) { scratchPointer in
            withSubkey(key, context) { subkey in
                let s = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
                let dest = out.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? scratchPointer
                return crypto_secretbox_open_easy(dest, s + 1 + nonceBytes, UInt64(sealed.count - 1 - nonceBytes), s + 1, subkey) == 0
            }
        }
        guard ok else { throw CryptoError.authenticationFailed }
    }

    /// Derives the per-record subkey into a stack buffer that is wiped before returning.
    private static func withSubkey<R>(_ key: SecureKey, _ context: SealContext, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        let prefix = context.derivationPrefix
        let inputCount = prefix.utf8CodeUnitCount + context.name.utf8.count
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Int(crypto_secretbox_KEYBYTES) + inputCount) { scratch in
            let subkey = UnsafeMutableBufferPointer(rebasing: scratch[0..<Int(crypto_secretbox_KEYBYTES)])
            let input = UnsafeMutableBufferPointer(rebasing: scratch[Int(crypto_secretbox_KEYBYTES)...])
            defer { wipe(UnsafeMutableRawBufferPointer(scratch)) }
            var n = 0
            for b in UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount) { input[n] = b; n += 1 }
            for b in context.name.utf8 { input[n] = b; n += 1 }
            _ = crypto_generichash(subkey.baseAddress!, subkey.count, input.baseAddress!, UInt64(n), key.bytes, SecureKey.byteCount)
            return body(subkey.baseAddress!)
        }
    }
}
