import CSodium

/// HMAC-SHA256 (libsodium `crypto_auth_hmacsha256`), for `appsecret_proof` and audit token hashes.
public enum HMACSHA256 {
    public static let byteCount = Int(crypto_auth_hmacsha256_BYTES)

    public static func mac(key: UnsafeRawBufferPointer, message: UnsafeRawBufferPointer) -> [UInt8] {
        _ = Sodium.ready
        var state = crypto_auth_hmacsha256_state()
        var out = [UInt8](repeating: 0, count: byteCount)
        let empty: UInt8 = 0
        withUnsafePointer(to: empty) { emptyPointer in
            _ = crypto_auth_hmacsha256_init(&state, key.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPointer, key.count)
        }
        if let m = message.baseAddress, message.count > 0 {
            _ = crypto_auth_hmacsha256_update(&state, m.assumingMemoryBound(to: UInt8.self), UInt64(message.count))
        }
        _ = crypto_auth_hmacsha256_final(&state, &out)
        withUnsafeMutableBytes(of: &state) { wipe($0) }
        return out
    }
}

extension HMACSHA256 {
    /// HMAC-SHA256 with the key schedule done once: each `mac` copies the keyed state (two SHA-256
    /// compressions cheaper than keying per message). For the audit chain's many small messages.
    public final class Keyed: @unchecked Sendable {
        private var state = crypto_auth_hmacsha256_state()

        public init(key: UnsafeRawBufferPointer) {
            _ = Sodium.ready
            let empty: UInt8 = 0
            withUnsafePointer(to: empty) { e in
                _ = crypto_auth_hmacsha256_init(&state, key.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? e, key.count)
            }
        }

        deinit { withUnsafeMutableBytes(of: &state) { wipe($0) } }

        public func mac(_ message: UnsafeRawBufferPointer) -> [UInt8] {
            var s = state
            defer { withUnsafeMutableBytes(of: &s) { wipe($0) } }
            if let m = message.baseAddress, message.count > 0 {
                _ = crypto_auth_hmacsha256_update(&s, m.assumingMemoryBound(to: UInt8.self), UInt64(message.count))
            }
            var out = [UInt8](repeating: 0, count: byteCount)
            _ = crypto_auth_hmacsha256_final(&s, &out)
            return out
        }
    }
}
