import Foundation
import MetaLifecycle
import VaultAudit
import PostgresNIO
import VaultCore

/// The operations of one PostgreSQL transaction. SQL stays behind these methods.
public struct PostgresTransaction: StorageTransaction {
    let connections: Connections
    let connection: PostgresConnection
    /// A write transaction: rows read for a change are locked until the commit, so two hosts changing one
    /// token take turns instead of one overwriting the other's check.
    let forUpdate: Bool

    @discardableResult
    func run(_ query: PostgresQuery) throws -> PostgresQueryResult {
        try connections.query(query, on: connection)
    }

    private var lock: String { forUpdate ? " FOR UPDATE" : "" }

    // MARK: vault metadata

    public func meta(_ key: String) throws -> String? {
        try run("SELECT value FROM vault_meta WHERE key = \(key)").first?.decode(String.self)
    }

    public func removeMeta(_ key: String) throws {
        try run("DELETE FROM vault_meta WHERE key = \(key)")
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try run("INSERT INTO vault_meta(key, value) VALUES (\(key), \(value)) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
    }

    // MARK: data keys

    static let dataKeyColumns = "id, master_key_id, wrapped, created_at, is_current, purpose"

    static func dataKeyRecord(_ row: PostgresRow) throws -> DataKeyRecord {
        let (id, master, wrapped, created, current, purpose) = try row.decode((Int64, String, Data, Int64, Bool, String).self)
        return DataKeyRecord(id: id, masterKeyId: master, wrapped: wrapped, createdAt: created, isCurrent: current, purpose: purpose)
    }

    public func currentDataKey() throws -> DataKeyRecord? {
        try run("SELECT \(unescaped: Self.dataKeyColumns) FROM data_keys WHERE is_current").first.map(Self.dataKeyRecord)
    }

    public func dataKey(id: Int64) throws -> DataKeyRecord? {
        try run("SELECT \(unescaped: Self.dataKeyColumns) FROM data_keys WHERE id = \(id)").first.map(Self.dataKeyRecord)
    }

    public func dataKeys() throws -> [DataKeyRecord] {
        try run("SELECT \(unescaped: Self.dataKeyColumns) FROM data_keys ORDER BY id").map(Self.dataKeyRecord)
    }

    public func insertDataKey(_ record: DataKeyRecord) throws -> DataKeyRecord {
        var record = record
        if record.isCurrent { try run("UPDATE data_keys SET is_current = false WHERE is_current") }
        if let id = record.id {
            try run("""
                INSERT INTO data_keys(id, master_key_id, wrapped, created_at, is_current, purpose)
                VALUES (\(id), \(record.masterKeyId), \(record.wrapped), \(record.createdAt), \(record.isCurrent), \(record.purpose))
                """)
            // Keep the sequence past ids copied in (a migration), so the next new key does not collide.
            try run("SELECT setval(pg_get_serial_sequence('data_keys', 'id'), GREATEST((SELECT max(id) FROM data_keys), 1))")
        } else {
            record.id = try run("""
                INSERT INTO data_keys(master_key_id, wrapped, created_at, is_current, purpose)
                VALUES (\(record.masterKeyId), \(record.wrapped), \(record.createdAt), \(record.isCurrent), \(record.purpose)) RETURNING id
                """).first?.decode(Int64.self)
        }
        return record
    }

    public func updateDataKey(_ record: DataKeyRecord) throws {
        guard let id = record.id else { throw StoreError.notFound(what: "data key", name: "(no id)") }
        try run("""
            UPDATE data_keys SET master_key_id = \(record.masterKeyId), wrapped = \(record.wrapped), created_at = \(record.createdAt),
              is_current = \(record.isCurrent), purpose = \(record.purpose) WHERE id = \(id)
            """)
    }

    @discardableResult
    public func deleteUnusedDataKeys() throws -> Int {
        try run("""
            DELETE FROM data_keys WHERE purpose = 'tokens' AND NOT is_current
              AND NOT EXISTS (SELECT 1 FROM tokens WHERE tokens.data_key_id = data_keys.id)
              AND NOT EXISTS (SELECT 1 FROM apps WHERE apps.data_key_id = data_keys.id)
            """).metadata.rows ?? 0
    }

    public func sealCountsByDataKey() throws -> [Int64: Int] {
        var out: [Int64: Int] = [:]
        for row in try run("""
            SELECT data_key_id, count(*) FROM (SELECT data_key_id FROM tokens UNION ALL SELECT data_key_id FROM apps) s GROUP BY data_key_id
            """) {
            let (id, n) = try row.decode((Int64, Int64).self)
            out[id] = Int(n)
        }
        return out
    }

    public func auditKey() throws -> DataKeyRecord? {
        try run("SELECT \(unescaped: Self.dataKeyColumns) FROM data_keys WHERE purpose = 'audit' ORDER BY id LIMIT 1").first.map(Self.dataKeyRecord)
    }

    // MARK: tokens

    static let tokenColumns = "name, kind, app, sealed, data_key_id, token_type, scopes, granular_scopes, expires_at, "
        + "data_access_expires_at, valid, checked_at, last_error, created_at, updated_at, meta_mac"

    static func tokenRecord(_ row: PostgresRow) throws -> TokenRecord {
        let r = row.makeRandomAccess()
        var t = TokenRecord(name: try r[0].decode(String.self), kind: try r[1].decode(String.self), app: try r[2].decode(String?.self),
                            sealed: try r[3].decode(Data.self), dataKeyId: try r[4].decode(Int64.self), now: try r[13].decode(Int64.self))
        t.tokenType = try r[5].decode(String?.self)
        t.scopes = try r[6].decode(String.self)
        t.granularScopes = try r[7].decode(String?.self)
        t.expiresAt = try r[8].decode(Int64?.self)
        t.dataAccessExpiresAt = try r[9].decode(Int64?.self)
        t.valid = try r[10].decode(Bool?.self)
        t.checkedAt = try r[11].decode(Int64?.self)
        t.lastError = try r[12].decode(String?.self)
        t.updatedAt = try r[14].decode(Int64.self)
        t.metaMAC = try r[15].decode(Data?.self)
        return t
    }

    public func token(named name: String) throws -> TokenRecord? {
        try run("SELECT \(unescaped: Self.tokenColumns) FROM tokens WHERE name = \(name)\(unescaped: lock)").first.map(Self.tokenRecord)
    }

    public func tokens() throws -> [TokenRecord] {
        try run("SELECT \(unescaped: Self.tokenColumns) FROM tokens ORDER BY name").map(Self.tokenRecord)
    }

    public func saveToken(_ r: TokenRecord, replace: Bool) throws {
        let inserted = try run("""
            INSERT INTO tokens (\(unescaped: Self.tokenColumns)) VALUES (\(r.name), \(r.kind), \(r.app), \(r.sealed), \(r.dataKeyId),
              \(r.tokenType), \(r.scopes), \(r.granularScopes), \(r.expiresAt), \(r.dataAccessExpiresAt), \(r.valid), \(r.checkedAt),
              \(r.lastError), \(r.createdAt), \(r.updatedAt), \(r.metaMAC))
            ON CONFLICT (name) DO NOTHING
            """).metadata.rows ?? 0
        if inserted == 1 { return }
        guard replace else { throw StoreError.alreadyExists(what: "token", name: r.name) }
        try updateToken(r)
    }

    /// One statement per batch: the rows as one JSON array, expanded by `json_populate_recordset` into the
    /// table's own row type (bytea columns as `\\x` hex text, which bytea's input reads).
    public func insertTokens(_ records: [TokenRecord]) throws {
        let digits = Array("0123456789abcdef".utf8)
        func hex(_ d: Data?) -> Any {
            guard let d else { return NSNull() }
            var out = [UInt8](repeating: 0, count: 2 + d.count * 2)
            out[0] = UInt8(ascii: "\\"); out[1] = UInt8(ascii: "x")
            for (i, b) in d.enumerated() { out[2 + 2 * i] = digits[Int(b >> 4)]; out[3 + 2 * i] = digits[Int(b & 15)] }
            return String(decoding: out, as: UTF8.self)
        }
        for start in stride(from: 0, to: records.count, by: 2_000) {
            let rows: [[String: Any]] = records[start..<min(start + 2_000, records.count)].map { r in
                ["name": r.name, "kind": r.kind, "app": r.app ?? NSNull(), "sealed": hex(r.sealed), "data_key_id": r.dataKeyId,
                 "token_type": r.tokenType ?? NSNull(), "scopes": r.scopes, "granular_scopes": r.granularScopes ?? NSNull(),
                 "expires_at": r.expiresAt ?? NSNull(), "data_access_expires_at": r.dataAccessExpiresAt ?? NSNull(),
                 "valid": r.valid ?? NSNull(), "checked_at": r.checkedAt ?? NSNull(), "last_error": r.lastError ?? NSNull(),
                 "created_at": r.createdAt, "updated_at": r.updatedAt, "meta_mac": hex(r.metaMAC)]
            }
            let json = String(decoding: try JSONSerialization.data(withJSONObject: rows), as: UTF8.self)
            try run("""
                INSERT INTO tokens (\(unescaped: Self.tokenColumns))
                SELECT \(unescaped: Self.tokenColumns) FROM json_populate_recordset(NULL::tokens, \(json)::json)
                """)
        }
    }

    public func updateToken(_ r: TokenRecord) throws {
        let n = try run("""
            UPDATE tokens SET kind = \(r.kind), app = \(r.app), sealed = \(r.sealed), data_key_id = \(r.dataKeyId), token_type = \(r.tokenType),
              scopes = \(r.scopes), granular_scopes = \(r.granularScopes), expires_at = \(r.expiresAt),
              data_access_expires_at = \(r.dataAccessExpiresAt), valid = \(r.valid), checked_at = \(r.checkedAt),
              last_error = \(r.lastError), updated_at = \(r.updatedAt), meta_mac = \(r.metaMAC)
            WHERE name = \(r.name)
            """).metadata.rows ?? 0
        guard n == 1 else { throw StoreError.notFound(what: "token", name: r.name) }
    }

    public func deleteToken(named name: String) throws -> Bool {
        (try run("DELETE FROM tokens WHERE name = \(name)").metadata.rows ?? 0) == 1
    }

    // MARK: change events

    /// The transaction lock that orders change numbers: held to commit, so a change numbered later
    /// always commits later.
    static let changeLock: Int64 = 0x746F_6B65_6E63_6867  // "tokenchg"

    public func recordTokenChanges(_ changes: [TokenChange]) throws {
        guard !changes.isEmpty else { return }
        try run("SELECT pg_advisory_xact_lock(\(Self.changeLock))")
        let names = changes.map(\.name)
        let kinds = changes.map(\.kind.rawValue)
        try run("""
            INSERT INTO token_changes(name, change) SELECT n, c FROM unnest(\(names)::text[], \(kinds)::text[]) WITH ORDINALITY AS t(n, c, o) ORDER BY o
            """)
        try run("DELETE FROM token_changes WHERE seq <= (SELECT max(seq) FROM token_changes) - \(TokenChange.kept)")
    }

    public func tokenChanges(after seq: Int64, limit: Int) throws -> [TokenChange] {
        try run("SELECT seq, name, change FROM token_changes WHERE seq > \(seq) ORDER BY seq LIMIT \(Int64(limit))").compactMap { row in
            let (seq, name, change) = try row.decode((Int64, String, String).self)
            return TokenChange.Kind(rawValue: change).map { TokenChange(seq: seq, name: name, kind: $0) }
        }
    }

    public func lastTokenChange() throws -> Int64 {
        try run("SELECT coalesce(max(seq), 0)::bigint FROM token_changes").first.map { try $0.decode(Int64.self) } ?? 0
    }

    // MARK: apps

    public func deleteApp(named name: String) throws -> Bool {
        (try run("DELETE FROM apps WHERE name = \(name)").metadata.rows ?? 0) == 1
    }

    static func appRecord(_ row: PostgresRow) throws -> AppRecord {
        let (name, appId, sealed, keyId, created, updated) = try row.decode((String, String, Data, Int64, Int64, Int64).self)
        var a = AppRecord(name: name, appId: appId, sealedSecret: sealed, dataKeyId: keyId, now: created)
        a.updatedAt = updated
        return a
    }

    public func app(named name: String) throws -> AppRecord? {
        try run("SELECT name, app_id, sealed_secret, data_key_id, created_at, updated_at FROM apps WHERE name = \(name)\(unescaped: lock)")
            .first.map(Self.appRecord)
    }

    public func apps() throws -> [AppRecord] {
        try run("SELECT name, app_id, sealed_secret, data_key_id, created_at, updated_at FROM apps ORDER BY name").map(Self.appRecord)
    }

    public func saveApp(_ a: AppRecord, replace: Bool) throws {
        let inserted = try run("""
            INSERT INTO apps(name, app_id, sealed_secret, data_key_id, created_at, updated_at)
            VALUES (\(a.name), \(a.appId), \(a.sealedSecret), \(a.dataKeyId), \(a.createdAt), \(a.updatedAt)) ON CONFLICT (name) DO NOTHING
            """).metadata.rows ?? 0
        if inserted == 1 { return }
        guard replace else { throw StoreError.alreadyExists(what: "app", name: a.name) }
        try run("""
            UPDATE apps SET app_id = \(a.appId), sealed_secret = \(a.sealedSecret), data_key_id = \(a.dataKeyId), updated_at = \(a.updatedAt)
            WHERE name = \(a.name)
            """)
    }

    public func tokenCountsByApp() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try run("SELECT app, count(*) FROM tokens WHERE app IS NOT NULL GROUP BY app") {
            let (app, n) = try row.decode((String, Int64).self)
            out[app] = Int(n)
        }
        return out
    }

    // MARK: audit checkpoints

    static func checkpoint(_ row: PostgresRow) throws -> AuditCheckpointRecord {
        let (host, seq, hash, mac, updated) = try row.decode((String, Int64, String, String, Int64).self)
        return AuditCheckpointRecord(host: host, seq: seq, hash: hash, mac: mac, updatedAt: updated)
    }

    public func auditCheckpoint(host: String) throws -> AuditCheckpointRecord? {
        try run("SELECT host, seq, hash, mac, updated_at FROM audit_checkpoints WHERE host = \(host)\(unescaped: lock)").first.map(Self.checkpoint)
    }

    public func auditCheckpoints() throws -> [AuditCheckpointRecord] {
        try run("SELECT host, seq, hash, mac, updated_at FROM audit_checkpoints ORDER BY host").map(Self.checkpoint)
    }

    public func saveAuditCheckpoint(_ r: AuditCheckpointRecord) throws {
        try run("""
            INSERT INTO audit_checkpoints(host, seq, hash, mac, updated_at) VALUES (\(r.host), \(r.seq), \(r.hash), \(r.mac), \(r.updatedAt))
            ON CONFLICT (host) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac, updated_at = EXCLUDED.updated_at
            """)
    }

    // MARK: re-sealing

    public func pendingAppSeals(notUnder current: Int64) throws -> [PendingSeal] {
        // Locked until the batch commits: a write by another host meanwhile waits, so the re-seal never puts
        // back an older value or a MAC over older metadata.
        try run("SELECT name, sealed_secret, data_key_id FROM apps WHERE data_key_id <> \(current)\(unescaped: lock)").map { row in
            let (name, sealed, keyId) = try row.decode((String, Data, Int64).self)
            return PendingSeal(kind: .app, name: name, sealed: sealed, dataKeyId: keyId)
        }
    }

    public func pendingTokenSeals(notUnder current: Int64, after: String, limit: Int) throws -> ([PendingSeal], String?) {
        let rows = try run("SELECT \(unescaped: Self.tokenColumns) FROM tokens WHERE name > \(after) ORDER BY name LIMIT \(limit)\(unescaped: lock)")
        var out: [PendingSeal] = []
        var last: String?
        for row in rows {
            let record = try Self.tokenRecord(row)
            last = record.name
            if record.dataKeyId != current {
                out.append(PendingSeal(kind: .token, name: record.name, sealed: record.sealed, dataKeyId: record.dataKeyId, record: record))
            }
        }
        return (out, rows.count < limit ? nil : last)
    }

    public func pendingSealCount(notUnder current: Int64) throws -> Int {
        Int(try run("""
            SELECT (SELECT count(*) FROM tokens WHERE data_key_id <> \(current)) + (SELECT count(*) FROM apps WHERE data_key_id <> \(current))
            """).first?.decode(Int64.self) ?? 0)
    }

    public func reseal(_ kind: PendingSeal.Kind, name: String, sealed: Data, dataKeyId: Int64, metaMAC: Data?) throws {
        if kind == .token {
            try run("UPDATE tokens SET sealed = \(sealed), data_key_id = \(dataKeyId), meta_mac = \(metaMAC) WHERE name = \(name)")
        } else {
            try run("UPDATE apps SET sealed_secret = \(sealed), data_key_id = \(dataKeyId) WHERE name = \(name)")
        }
    }
}

extension PostgresTransaction {
    public func removeEverything() throws {
        for table in ["token_changes", "meta_checks", "meta_state", "meta_pause", "tokens", "apps", "data_keys", "notifications", "audit_checkpoints", "audit_chunks", "vault_meta"] {
            try run(PostgresQuery(unsafeSQL: "DELETE FROM \(table)"))
        }
    }
}

// MARK: - the Meta lifecycle's state

extension PostgresTransaction: LifecycleStateTransaction {
    static let notificationColumns = "token, state, payload, pending, attempts, next_attempt_at, delivered_at, last_error, updated_at"

    static func notification(_ row: PostgresRow) throws -> NotificationRecord {
        let (token, state, payload, pending, attempts, next, delivered, lastError, updated) =
            try row.decode((String, String, String?, Bool, Int32, Int64?, Int64?, String?, Int64).self)
        var n = NotificationRecord(token: token, state: state, payload: payload, pending: pending, now: updated)
        n.attempts = Int(attempts)
        n.nextAttemptAt = next
        n.deliveredAt = delivered
        n.lastError = lastError
        return n
    }

    public func notification(token: String) throws -> NotificationRecord? {
        try run("SELECT \(unescaped: Self.notificationColumns) FROM notifications WHERE token = \(token)\(unescaped: lock)").first.map(Self.notification)
    }

    public func saveNotification(_ n: NotificationRecord) throws {
        try run("""
            INSERT INTO notifications(\(unescaped: Self.notificationColumns)) VALUES (\(n.token), \(n.state), \(n.payload), \(n.pending),
              \(Int32(n.attempts)), \(n.nextAttemptAt), \(n.deliveredAt), \(n.lastError), \(n.updatedAt))
            ON CONFLICT (token) DO UPDATE SET state = EXCLUDED.state, payload = EXCLUDED.payload, pending = EXCLUDED.pending,
              attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at, delivered_at = EXCLUDED.delivered_at,
              last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at
            """)
    }

    public func dueNotifications(now: Int64) throws -> [NotificationRecord] {
        try run("""
            SELECT \(unescaped: Self.notificationColumns) FROM notifications
            WHERE pending AND (next_attempt_at IS NULL OR next_attempt_at <= \(now)) ORDER BY token
            """).map(Self.notification)
    }

    public func notifications() throws -> [NotificationRecord] {
        try run("SELECT \(unescaped: Self.notificationColumns) FROM notifications ORDER BY token").map(Self.notification)
    }

    public func checkCandidates() throws -> [CheckCandidate] {
        try run("SELECT name, checked_at, expires_at, data_access_expires_at, kind, app FROM tokens WHERE app IS NOT NULL ORDER BY name").map { row in
            let (name, checked, expires, dataAccess, kind, app) = try row.decode((String, Int64?, Int64?, Int64?, String, String?).self)
            return CheckCandidate(name: name, checkedAt: checked, expiresAt: expires, dataAccessExpiresAt: dataAccess, kind: kind, app: app)
        }
    }

    static let metaStateColumns = """
        token, state, required_scopes, required_targets, user_id, app_id, issued_at, app_mismatch, last_success_at, problem_since, \
        refreshed_at, refresh_error, updated_at, refresh_failed_at, refresh_failed_seal
        """

    static func metaState(_ row: PostgresRow) throws -> MetaTokenState {
        let r = row.makeRandomAccess()
        var m = MetaTokenState(token: try r[0].decode(String.self), now: try r[12].decode(Int64.self))
        m.state = try r[1].decode(String.self)
        m.requiredScopes = try r[2].decode(String.self)
        m.requiredTargets = try r[3].decode(String.self)
        m.userId = try r[4].decode(String?.self)
        m.appId = try r[5].decode(String?.self)
        m.issuedAt = try r[6].decode(Int64?.self)
        m.appMismatch = try r[7].decode(Bool.self)
        m.lastSuccessAt = try r[8].decode(Int64?.self)
        m.problemSince = try r[9].decode(Int64?.self)
        m.refreshedAt = try r[10].decode(Int64?.self)
        m.refreshError = try r[11].decode(String?.self)
        m.refreshFailedAt = try r[13].decode(Int64?.self)
        m.refreshFailedSeal = try r[14].decode(String?.self)
        return m
    }

    public func metaState(token: String) throws -> MetaTokenState? {
        try run("SELECT \(unescaped: Self.metaStateColumns) FROM meta_state WHERE token = \(token)\(unescaped: lock)").first.map(Self.metaState)
    }

    public func saveMetaState(_ m: MetaTokenState) throws {
        try run("""
            INSERT INTO meta_state(\(unescaped: Self.metaStateColumns)) VALUES (\(m.token), \(m.state), \(m.requiredScopes), \(m.requiredTargets),
              \(m.userId), \(m.appId), \(m.issuedAt), \(m.appMismatch), \(m.lastSuccessAt), \(m.problemSince), \(m.refreshedAt),
              \(m.refreshError), \(m.updatedAt), \(m.refreshFailedAt), \(m.refreshFailedSeal))
            ON CONFLICT (token) DO UPDATE SET state = EXCLUDED.state, required_scopes = EXCLUDED.required_scopes,
              required_targets = EXCLUDED.required_targets, user_id = EXCLUDED.user_id, app_id = EXCLUDED.app_id,
              issued_at = EXCLUDED.issued_at, app_mismatch = EXCLUDED.app_mismatch, last_success_at = EXCLUDED.last_success_at,
              problem_since = EXCLUDED.problem_since, refreshed_at = EXCLUDED.refreshed_at, refresh_error = EXCLUDED.refresh_error,
              updated_at = EXCLUDED.updated_at, refresh_failed_at = EXCLUDED.refresh_failed_at,
              refresh_failed_seal = EXCLUDED.refresh_failed_seal
            """)
    }

    public func metaStates() throws -> [MetaTokenState] {
        try run("SELECT \(unescaped: Self.metaStateColumns) FROM meta_state ORDER BY token").map(Self.metaState)
    }

    static let checkColumns = "id, token, checked_at, verdict, state, scopes, expires_at, data_access_expires_at, error"

    static func check(_ row: PostgresRow) throws -> MetaCheckRecord {
        let (id, token, checkedAt, verdict, state, scopes, expires, dataAccess, error) =
            try row.decode((Int64, String, Int64, String, String, String, Int64?, Int64?, String?).self)
        return MetaCheckRecord(id: id, token: token, checkedAt: checkedAt, verdict: verdict, state: state, scopes: scopes,
                               expiresAt: expires, dataAccessExpiresAt: dataAccess, error: error)
    }

    public func appendCheck(_ c: MetaCheckRecord) throws {
        try run("""
            INSERT INTO meta_checks(token, checked_at, verdict, state, scopes, expires_at, data_access_expires_at, error)
            VALUES (\(c.token), \(c.checkedAt), \(c.verdict), \(c.state), \(c.scopes), \(c.expiresAt), \(c.dataAccessExpiresAt), \(c.error))
            """)
    }

    public func checks(token: String, limit: Int) throws -> [MetaCheckRecord] {
        try run("""
            SELECT \(unescaped: Self.checkColumns) FROM meta_checks WHERE token = \(token) ORDER BY id DESC LIMIT \(Int64(limit))
            """).map(Self.check).reversed()
    }

    public func allChecks() throws -> [MetaCheckRecord] {
        try run("SELECT \(unescaped: Self.checkColumns) FROM meta_checks ORDER BY id").map(Self.check)
    }

    public func pruneChecks(before: Int64) throws {
        try run("DELETE FROM meta_checks WHERE checked_at < \(before)")
    }

    public func sweepPause() throws -> SweepPauseRecord? {
        try run("SELECT until_at, reason, throttles FROM meta_pause WHERE id = 1").first.map { row in
            let (until, reason, throttles) = try row.decode((Int64, String, Int32).self)
            return SweepPauseRecord(untilAt: until, reason: reason, throttles: Int(throttles))
        }
    }

    public func saveSweepPause(_ pause: SweepPauseRecord?) throws {
        guard let pause else { _ = try run("DELETE FROM meta_pause"); return }
        try run("""
            INSERT INTO meta_pause(id, until_at, reason, throttles) VALUES (1, \(pause.untilAt), \(pause.reason), \(Int32(pause.throttles)))
            ON CONFLICT (id) DO UPDATE SET until_at = EXCLUDED.until_at, reason = EXCLUDED.reason, throttles = EXCLUDED.throttles
            """)
    }
}

// MARK: - the audit copy

extension PostgresTransaction: AuditCopyTransaction {
    public func lockAuditCopy(host: String) throws {
        try run("SELECT pg_advisory_xact_lock(\(PostgresStore.leaseKey("audit-copy:" + host)))")
    }

    public func lastCopiedSeq(host: String) throws -> Int64 {
        try run("SELECT COALESCE(max(last_seq), 0)::bigint FROM audit_chunks WHERE host = \(host)").first?.decode(Int64.self) ?? 0
    }

    public func insertAuditChunk(host: String, _ chunk: AuditCopyChunk) throws {
        try run("""
            INSERT INTO audit_chunks(host, first_seq, last_seq, lines) VALUES (\(host), \(chunk.firstSeq), \(chunk.lastSeq), \(chunk.lines))
            ON CONFLICT (host, first_seq) DO NOTHING
            """)
    }

    public func auditChunks(host: String, after seq: Int64, limit: Int) throws -> [AuditCopyChunk] {
        var out: [AuditCopyChunk] = [], total = 0
        for row in try run("""
            SELECT first_seq, last_seq, lines FROM audit_chunks WHERE host = \(host) AND last_seq > \(seq) ORDER BY first_seq LIMIT 64
            """) {
            let (first, last, lines) = try row.decode((Int64, Int64, String).self)
            out.append(AuditCopyChunk(firstSeq: first, count: Int(last - first + 1), lines: lines))
            total += Int(last - first + 1)
            if total >= limit { break }
        }
        return out
    }

    public func auditHosts() throws -> [String] {
        try run("SELECT DISTINCT host FROM audit_chunks ORDER BY host").map { try $0.decode(String.self) }
    }
}
