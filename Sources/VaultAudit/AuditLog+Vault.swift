import Synchronization
import VaultCore

extension AuditLog {
    /// Opens the vault's audit log (`<home>/audit/`), with its keys from the vault's audit key, its
    /// checkpoint kept in `vault.db` and its freshness anchor in the keyring (``AuditAnchor``).
    ///
    /// Refused when the anchor shows the trail was cut or replaced (``AuditAnchor/checkBeforeWriting``):
    /// a new audit key is never made for a vault the anchor says was audited.
    public static func open(for vault: Vault, options: Options = Options()) throws -> AuditLog {
        guard let existing = try vault.existingAuditKey() else {
            try AuditAnchor.checkBeforeWriting(vault, keys: nil, logEndsAt: nil)
            return try open(for: vault, keys: AuditKeys(auditKey: try vault.auditKey()), options: options)
        }
        // The anchor is checked once, against the log's end as the opened log found it.
        let keys = AuditKeys(auditKey: existing)
        let log = try open(for: vault, keys: keys, options: options)
        do {
            try AuditAnchor.checkBeforeWriting(vault, keys: keys, logEndsAt: log.lastSeqAtOpen)
        } catch {
            log.close()
            throw error
        }
        return log
    }

    private static func open(for vault: Vault, keys: AuditKeys, options: Options) throws -> AuditLog {
        let keyring = vault.keyring
        // The anchor first, so that a vault.db whose checkpoint cannot be written (a trigger, a full disk)
        // never holds the anchor back. A keyring this process cannot write (a read-only systemd credential
        // directory) keeps no anchor, and `audit verify` says so; any other failure is retried next time.
        let anchorWritable = Atomic<Bool>(keyring.isWritable)
        return try AuditLog(directory: vault.home.auditDirectory, keys: keys, options: options) { seq, hash, mac in
            var anchorError: (any Error)?
            if anchorWritable.load(ordering: .relaxed) {
                do { try AuditAnchor.advance(keyring, seq: seq, hash: hash, keys: keys) } catch { anchorError = error }
            }
            try vault.advanceAuditCheckpoint(seq: seq, hash: hash, mac: mac)
            if let anchorError { throw anchorError }
        }
    }
}
