import GRDB
import MetaLifecycle
import VaultCore

extension NotificationRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "notifications"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
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

    public func checkCandidates() throws -> [CheckCandidate] {
        try Row.fetchAll(db, sql: "SELECT name, checked_at, expires_at, data_access_expires_at FROM tokens WHERE app IS NOT NULL ORDER BY name")
            .map { CheckCandidate(name: $0[0], checkedAt: $0[1], expiresAt: $0[2], dataAccessExpiresAt: $0[3]) }
    }
}
