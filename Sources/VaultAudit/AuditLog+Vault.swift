import Synchronization
import VaultCore
import VaultStore

extension AuditLog {
    /// Opens the vault's audit log (`<home>/audit/`), with its keys from the vault's audit key, its
    /// checkpoint kept in `vault.db` and its freshness anchor in the keyring (``AuditAnchor``).
    public static func open(for vault: Vault, options: Options = Options()) throws -> AuditLog {
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let keyring = vault.keyring
        // A keyring that cannot be written (a read-only systemd credential directory) keeps no anchor;
        // `audit verify` says so. One failed write stops the attempts.
        let anchorWritable = Atomic<Bool>(true)
        return try AuditLog(directory: vault.home.auditDirectory, keys: keys, options: options) { seq, hash, mac in
            try vault.advanceAuditCheckpoint(seq: seq, hash: hash, mac: mac)
            if anchorWritable.load(ordering: .relaxed) {
                do { try AuditAnchor.advance(keyring, seq: seq, hash: hash, keys: keys) } catch {
                    anchorWritable.store(false, ordering: .relaxed)
                }
            }
        }
    }
}
