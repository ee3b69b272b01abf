import VaultCrypto

/// The keys of the audit log, all derived from the vault's audit key (kept wrapped in `vault.db`):
/// a MAC key for the record chain, a key for `token_hmac`, and an Ed25519 key pair for signed checkpoints.
public final class AuditKeys: Sendable {
    public let mac: SecureKey
    public let tokenHash: SecureKey
    public let signer: SigningKey
    private let keyedMAC: HMACSHA256.Keyed
    private let keyedTokenHash: HMACSHA256.Keyed

    public init(auditKey: SecureKey) {
        mac = auditKey.derive("tvaudmac")
        tokenHash = auditKey.derive("tvaudtok")
        signer = SigningKey(seed: auditKey.derive("tvaudsig"))
        keyedMAC = mac.withUnsafeBytes { HMACSHA256.Keyed(key: $0) }
        keyedTokenHash = tokenHash.withUnsafeBytes { HMACSHA256.Keyed(key: $0) }
    }

    public var publicKey: [UInt8] { signer.publicKey }

    /// `token_hmac`: HMAC-SHA256 of the token under the token-hash key.
    public func tokenHMAC(_ secret: SecretBytes) -> [UInt8] {
        secret.withUnsafeBytes { keyedTokenHash.mac($0) }
    }

    /// The MAC of a record written before chain v2: HMAC-SHA256(mac key, hash). Verification only; the
    /// v2 MAC is ``AuditRecordFormat/Chain``'s.
    public func legacyRecordMAC(hash: [UInt8]) -> [UInt8] {
        hash.withUnsafeBytes { keyedMAC.mac($0) }
    }

    /// The MAC of the checkpoint kept in vault.db: over "checkpoint" || seq || hash.
    public func checkpointMAC(seq: Int64, hash: [UInt8]) -> [UInt8] {
        let message = Array("tokenvault-audit-checkpoint\0\(seq)\0".utf8) + hash
        return mac.withUnsafeBytes { k in message.withUnsafeBytes { HMACSHA256.mac(key: k, message: $0) } }
    }

    /// The message an Ed25519 checkpoint signature covers.
    public static func signedMessage(hash: [UInt8]) -> [UInt8] {
        Array("tokenvault-audit-v1\0".utf8) + hash
    }
}
