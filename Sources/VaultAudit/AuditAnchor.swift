import VaultCore
import VaultCrypto

/// The audit log's freshness anchor: the highest (seq, hash) the log is known to have reached, MAC'd
/// under the audit key and kept in the keyring (`<keys>/audit.anchor`), beside the master keys.
///
/// vault.db's checkpoint catches a cut-off tail, but whoever can write the vault home can delete that
/// row, or put back an old vault.db with an old copy of the log. The anchor lives where such a person
/// cannot write (the keyring is the one thing they do not hold) and only moves forward, so `audit verify`
/// cannot be talked out of it: a log that ends before the anchor, or differs at its seq, fails.
///
/// Format, one line: `tokenvault-audit-anchor v1 SEQ HASH MAC\n` (hash and MAC in lowercase hex; the MAC
/// is HMAC-SHA256 under the audit MAC key over `"tokenvault-audit-anchor\0" SEQ "\0" HASH`).
public struct AuditAnchor: Sendable, Equatable {
    public let seq: Int64
    public let hash: [UInt8]

    public init(seq: Int64, hash: [UInt8]) {
        self.seq = seq
        self.hash = hash
    }

    static func mac(seq: Int64, hash: [UInt8], keys: AuditKeys) -> [UInt8] {
        let message = Array("tokenvault-audit-anchor\0\(seq)\0".utf8) + hash
        return keys.mac.withUnsafeBytes { k in message.withUnsafeBytes { HMACSHA256.mac(key: k, message: $0) } }
    }

    public func encoded(keys: AuditKeys) -> [UInt8] {
        Array("tokenvault-audit-anchor v1 \(seq) \(hexString(hash)) \(hexString(Self.mac(seq: seq, hash: hash, keys: keys)))\n".utf8)
    }

    /// Why an anchor file cannot be trusted.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Parses and authenticates an anchor file's bytes.
    public static func decode(_ bytes: [UInt8], keys: AuditKeys) throws -> AuditAnchor {
        let parts = String(decoding: bytes, as: UTF8.self).trimmingTrailingNewline.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "tokenvault-audit-anchor", parts[1] == "v1", let seq = Int64(parts[2]), seq > 0,
              let hash = decodeHex(String(parts[3])), hash.count == 32, let mac = decodeHex(String(parts[4])) else {
            throw Invalid(description: "the keyring's audit anchor is not in the anchor format")
        }
        guard constantTimeEqual(mac, Self.mac(seq: seq, hash: hash, keys: keys)) else {
            throw Invalid(description: "the keyring's audit anchor was altered (its MAC does not hold)")
        }
        return AuditAnchor(seq: seq, hash: hash)
    }

    /// Moves the keyring's anchor forward to (seq, hash); never back. Called with the checkpoint.
    static func advance(_ keyring: Keyring, seq: Int64, hash: [UInt8], keys: AuditKeys) throws {
        if let bytes = try keyring.readAnchor(), let current = try? decode(bytes, keys: keys), current.seq >= seq { return }
        try keyring.writeAnchor(AuditAnchor(seq: seq, hash: hash).encoded(keys: keys))
    }
}

extension String {
    fileprivate var trimmingTrailingNewline: Substring {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return s
    }
}
