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

    /// Moves the keyring's anchor forward to (seq, hash); never back. Called with the checkpoint. An anchor
    /// that does not verify under this vault's audit key is never overwritten: that is the trace of a
    /// replaced audit key, and `audit verify` must see it.
    static func advance(_ keyring: Keyring, seq: Int64, hash: [UInt8], keys: AuditKeys) throws {
        try keyring.updateAnchor { current in
            if let current, try decode(current, keys: keys).seq >= seq { return nil }
            return AuditAnchor(seq: seq, hash: hash).encoded(keys: keys)
        }
    }

    /// Refuses to open the log for writing when the keyring's anchor says the vault's audit trail was cut
    /// or replaced: the audit key is gone (the anchor exists, the key does not), the anchor does not
    /// verify under the key, or the log ends before the seq the anchor vouches for. Nothing is disclosed
    /// until an admin has run `tokenvault audit verify` and dealt with it.
    static func checkBeforeWriting(_ vault: Vault, keys: AuditKeys?, logEndsAt lastSeq: Int64?) throws {
        guard let bytes = try vault.keyring.readAnchor() else { return }
        let fix = "run `tokenvault audit verify`; to start a new trail deliberately, an admin removes \(vault.keyring.anchorPath)"
        guard let keys else {
            throw AuditWriteError(description: "vault.db holds no audit key, but the keyring's audit anchor shows this vault was audited: "
                + "the audit key was deleted. \(fix)")
        }
        let anchor: AuditAnchor
        do { anchor = try decode(bytes, keys: keys) } catch {
            throw AuditWriteError(description: "\(error): the audit key or the anchor was replaced. \(fix)")
        }
        if let lastSeq, lastSeq < anchor.seq {
            throw AuditWriteError(description: "the audit log ends at seq \(lastSeq) but the keyring's anchor vouches for seq \(anchor.seq): "
                + "records were cut off. \(fix)")
        }
    }
}

extension String {
    fileprivate var trimmingTrailingNewline: Substring {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return s
    }
}
