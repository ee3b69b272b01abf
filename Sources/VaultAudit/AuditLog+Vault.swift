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
        // A keyring this process cannot write (a read-only systemd credential directory) keeps no anchor,
        // and `audit verify` says so; vault.db's checkpoint then moves every second, busy or not. With an
        // anchor, vault.db's moves every `busyStoreCheckpointInterval` while reads flow (each commit makes
        // every reader start afresh), and the anchor keeps the one-second bound.
        var anchor: CheckpointSink?
        if keyring.isWritable {
            anchor = { seq, hash, _ in try AuditAnchor.advance(keyring, seq: seq, hash: hash, keys: keys) }
        }
        let checkpoint: CheckpointSink = { seq, hash, mac in try vault.advanceAuditCheckpoint(seq: seq, hash: hash, mac: mac) }
        // A shared store's checkpoint also says how far this host's records may be shipped (``AuditShipper``
        // ships only what it vouches for), and its commit costs the other hosts' readers nothing: it keeps
        // the second.
        var options = options
        if vault.storeIsShared { options.busyStoreCheckpointInterval = options.checkpointInterval }
        return try AuditLog(directory: vault.home.auditDirectory, keys: keys, options: options, checkpoint: checkpoint, anchor: anchor)
    }
}
