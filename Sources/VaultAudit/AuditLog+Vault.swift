import VaultCore
import VaultStore

extension AuditLog {
    /// Opens the vault's audit log (`<home>/audit/`), with its keys from the vault's audit key and its
    /// checkpoint kept in `vault.db`.
    public static func open(for vault: Vault, options: Options = Options()) throws -> AuditLog {
        let keys = AuditKeys(auditKey: try vault.auditKey())
        return try AuditLog(directory: vault.home.auditDirectory, keys: keys, options: options) { seq, hash, mac in
            try vault.advanceAuditCheckpoint(seq: seq, hash: hash, mac: mac)
        }
    }
}
