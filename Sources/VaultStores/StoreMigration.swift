import Foundation
import MetaLifecycle
import VaultAudit
import VaultCore
import VaultCrypto

/// `tokenvault migrate --to URL`: copies a vault from its store to another — SQLite to PostgreSQL or
/// back — and then proves the copy: the counts match, every sealed value opens from the target, and the
/// audit chain verifies against the target's checkpoint.
///
/// The copy is one transaction on the target, so a crash leaves it as it was (run it again). A target
/// that already holds a vault is refused unless `force` says to replace what it holds. Nothing is ever
/// decrypted to be copied: rows move as they are, data keys keep their ids, so every metadata MAC and
/// every seal still holds.
public enum StoreMigration {
    public struct Summary: Sendable, Equatable {
        public var tokens = 0
        public var apps = 0
        public var dataKeys = 0
        public var notifications = 0
        public var metaStates = 0
        public var checks = 0
        public var checkpoints = 0
        /// Audit records in the target's copy, by host.
        public var auditRecords: [String: Int] = [:]
        public var seconds = 0.0
    }

    public struct Refused: Error, CustomStringConvertible {
        public let description: String
    }

    /// Copies `vault` into `target`. `localAuditDirectory` is this host's log, copied into the target's
    /// audit copy under the vault's host id (so a SQLite vault's chain is in the shared store at once).
    public static func copy(_ vault: Vault, to target: StoreLocation, force: Bool,
                            progress: (String) -> Void = { _ in }) throws -> Summary {
        let started = Date()
        guard target.description != vault.storeLocation else {
            throw Refused(description: "the target is the vault's own store (\(target)); name another with --to")
        }
        let destination = try target.open(create: true)
        defer { destination.close() }
        // The same store by another name (localhost vs 127.0.0.1, a relative path) would be wiped by --force:
        // a marker written to the source must not be visible in the target.
        let marker = "migrate-probe-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        try vault.change { change in try change.state((any StorageTransaction).self).setMeta(marker, "1") }
        defer { _ = try? vault.change { change in try change.state((any StorageTransaction).self).removeMeta(marker) } }
        if try destination.read({ try $0.meta(marker) }) != nil {
            throw Refused(description: "\(target) is the vault's own store under another name; name another with --to")
        }
        let occupied = try destination.read { tx in try tx.meta("format") != nil || !(try tx.tokens().isEmpty) || !(try tx.dataKeys().isEmpty) }
        if occupied && !force {
            throw Refused(description: "\(target) already holds a vault; nothing was copied. Run again with --force to replace what it holds")
        }

        progress("reading \(vault.storeLocation)")
        let source = try vault.inspect { change -> Snapshot in
            let tx = try change.state((any StorageTransaction).self)
            let lifecycle = try change.state((any LifecycleStateTransaction).self)
            let copies = try change.state((any AuditCopyTransaction).self)
            var meta: [String: String] = [:]
            for key in ["format", "created_at"] { meta[key] = try tx.meta(key) }
            var audit: [String: [AuditCopyRecord]] = [:]
            for host in try copies.auditHosts() {
                var records: [AuditCopyRecord] = [], after: Int64 = 0
                while true {
                    let page = try copies.auditChunks(host: host, after: after, limit: 50_000)
                    for chunk in page { records += chunk.records.filter { $0.seq > after } }
                    guard let last = page.last?.lastSeq, last > after else { break }
                    after = last
                }
                audit[host] = records
            }
            return Snapshot(meta: meta, dataKeys: try tx.dataKeys(), apps: try tx.apps(), tokens: try tx.tokens(),
                            notifications: try lifecycle.notifications(), metaStates: try lifecycle.metaStates(),
                            checks: try lifecycle.allChecks(), checkpoints: try tx.auditCheckpoints(), audit: audit)
        }
        // This host's local chain joins the copy (a SQLite vault ships nothing until it moves).
        var local: [AuditCopyRecord] = []
        try AuditLocalLog.records(in: vault.home.auditDirectory) { local.append($0) }
        var audit = source.audit
        if !local.isEmpty {
            var merged = Dictionary(uniqueKeysWithValues: (audit[vault.hostID] ?? []).map { ($0.seq, $0) })
            for r in local { merged[r.seq] = r }
            audit[vault.hostID] = merged.values.sorted { $0.seq < $1.seq }
        }

        progress("writing \(source.tokens.count) tokens, \(source.apps.count) apps, \(source.dataKeys.count) data keys, "
                 + "\(audit.values.reduce(0) { $0 + $1.count }) audit records to \(target)")
        try destination.write { tx in
            if occupied { try tx.removeEverything() }
            for (key, value) in source.meta.sorted(by: { $0.key < $1.key }) { try tx.setMeta(key, value) }
            // Keys first (ids kept: seals and MACs name them), the current one last so it stays current.
            for key in source.dataKeys.sorted(by: { !$0.isCurrent && $1.isCurrent }) { _ = try tx.insertDataKey(key) }
            for app in source.apps { try tx.saveApp(app, replace: false) }
            try tx.insertTokens(source.tokens)
            let lifecycle = try state(tx, (any LifecycleStateTransaction).self)
            for n in source.notifications { try lifecycle.saveNotification(n) }
            for m in source.metaStates { try lifecycle.saveMetaState(m) }
            for c in source.checks { try lifecycle.appendCheck(c) }
            for var cp in source.checkpoints {
                // A single-host store's checkpoint is this host's; a single-host target keeps only this host's.
                if cp.host == AuditCheckpointRecord.localHost { cp.host = vault.hostID }
                if !destination.isShared && cp.host != vault.hostID { continue }
                try tx.saveAuditCheckpoint(cp)
            }
            let copies = try state(tx, (any AuditCopyTransaction).self)
            for (host, records) in audit.sorted(by: { $0.key < $1.key }) {
                for chunk in AuditCopyChunk.chunks(records) { try copies.insertAuditChunk(host: host, chunk) }
            }
        }

        progress("verifying the copy")
        var summary = Summary()
        try destination.read { tx in
            summary.tokens = try tx.tokens().count
            summary.apps = try tx.apps().count
            summary.dataKeys = try tx.dataKeys().count
            let lifecycle = try state(tx, (any LifecycleStateTransaction).self)
            summary.notifications = try lifecycle.notifications().count
            summary.metaStates = try lifecycle.metaStates().count
            summary.checks = try lifecycle.allChecks().count
            summary.checkpoints = try tx.auditCheckpoints().count
            let copies = try state(tx, (any AuditCopyTransaction).self)
            for host in try copies.auditHosts() { summary.auditRecords[host] = Int(try copies.lastCopiedSeq(host: host)) }
        }
        let expected = (source.tokens.count, source.apps.count, source.dataKeys.count, source.notifications.count)
        guard (summary.tokens, summary.apps, summary.dataKeys, summary.notifications) == expected,
              summary.metaStates == source.metaStates.count, summary.checks == source.checks.count else {
            throw Refused(description: "the copy does not match: \(summary.tokens)/\(expected.0) tokens, \(summary.apps)/\(expected.1) apps, "
                          + "\(summary.dataKeys)/\(expected.2) data keys, \(summary.notifications)/\(expected.3) notifications, "
                          + "\(summary.metaStates)/\(source.metaStates.count) Meta token states, \(summary.checks)/\(source.checks.count) checks")
        }
        for (host, records) in audit where summary.auditRecords[host] != records.last.map({ Int($0.seq) }) {
            throw Refused(description: "the copy of host \(host)'s audit chain ends at seq \(summary.auditRecords[host] ?? 0), not \(records.last?.seq ?? 0)")
        }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    /// Opens every token and app secret from the target (a vault opened on it), so a copy that would not
    /// unlock is found now, not at the first read. Returns how many values opened.
    public static func openEverything(_ copy: Vault) throws -> Int {
        var opened = try copy.openAll()
        for app in try copy.apps() {
            _ = try copy.appSecret(app: app.name)
            opened += 1
        }
        return opened
    }

    struct Snapshot {
        var meta: [String: String]
        var dataKeys: [DataKeyRecord]
        var apps: [AppRecord]
        var tokens: [TokenRecord]
        var notifications: [NotificationRecord]
        var metaStates: [MetaTokenState]
        var checks: [MetaCheckRecord]
        var checkpoints: [AuditCheckpointRecord]
        var audit: [String: [AuditCopyRecord]]
    }

    static func state<State>(_ tx: any StorageTransaction, _ type: State.Type) throws -> State {
        guard let s = tx as? State else { throw Refused(description: "the target store keeps no \(State.self)") }
        return s
    }
}
