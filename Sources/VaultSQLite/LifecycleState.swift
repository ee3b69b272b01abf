import GRDB
import MetaLifecycle
import VaultCore

extension NotificationRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "notifications"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
}

extension MetaTokenState: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "meta_state"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
}

extension MetaCheckRecord: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "meta_checks"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// The Meta lifecycle's state in SQLite: the `notifications` table and the check candidates' index.
extension SQLiteTransaction: LifecycleStateTransaction {
    public func notification(token: String) throws -> NotificationRecord? {
        try NotificationRecord.fetchOne(db, key: token)
    }

    public func saveNotification(_ record: NotificationRecord) throws {
        try record.save(db)
    }

    public func dueNotifications(now: Int64) throws -> [NotificationRecord] {
        try NotificationRecord.filter(Column("pending") == true && (Column("next_attempt_at") == nil || Column("next_attempt_at") <= now))
            .order(Column("token")).fetchAll(db)
    }

    public func notifications() throws -> [NotificationRecord] {
        try NotificationRecord.order(Column("token")).fetchAll(db)
    }

    /// Read from the index of tokens with an app alone, never by scanning every token (the planner, with
    /// no statistics, would scan them in name order rather than sort the few it needs).
    static let checkCandidatesSQL = "SELECT name, checked_at, expires_at, data_access_expires_at, kind, app FROM tokens "
        + "INDEXED BY tokens_with_app WHERE app IS NOT NULL ORDER BY name"

    public func checkCandidates() throws -> [CheckCandidate] {
        try Row.fetchAll(db, sql: Self.checkCandidatesSQL)
            .map { CheckCandidate(name: $0[0], checkedAt: $0[1], expiresAt: $0[2], dataAccessExpiresAt: $0[3], kind: $0[4], app: $0[5]) }
    }

    public func metaState(token: String) throws -> MetaTokenState? {
        try MetaTokenState.fetchOne(db, key: token)
    }

    public func saveMetaState(_ state: MetaTokenState) throws {
        try state.save(db)
    }

    public func metaStates() throws -> [MetaTokenState] {
        try MetaTokenState.order(Column("token")).fetchAll(db)
    }

    public func appendCheck(_ check: MetaCheckRecord) throws {
        var c = check
        c.id = nil
        try c.insert(db)
    }

    public func checks(token: String, limit: Int) throws -> [MetaCheckRecord] {
        try MetaCheckRecord.filter(Column("token") == token).order(Column("id").desc).limit(limit).fetchAll(db).reversed()
    }

    public func allChecks() throws -> [MetaCheckRecord] {
        try MetaCheckRecord.order(Column("id")).fetchAll(db)
    }

    public func pruneChecks(before: Int64) throws {
        try db.execute(sql: "DELETE FROM meta_checks WHERE checked_at < ?", arguments: [before])
    }

    public func sweepPause() throws -> SweepPauseRecord? {
        try Row.fetchOne(db, sql: "SELECT until_at, reason, throttles FROM meta_pause WHERE id = 1")
            .map { SweepPauseRecord(untilAt: $0[0], reason: $0[1], throttles: $0[2]) }
    }

    public func saveSweepPause(_ pause: SweepPauseRecord?) throws {
        guard let pause else { return try db.execute(sql: "DELETE FROM meta_pause") }
        try db.execute(sql: "INSERT OR REPLACE INTO meta_pause(id, until_at, reason, throttles) VALUES (1, ?, ?, ?)",
                       arguments: [pause.untilAt, pause.reason, pause.throttles])
    }
}
