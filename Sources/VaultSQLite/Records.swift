import Foundation
import GRDB
import VaultCore

// The seam's values as GRDB records: each table is its record's fields in snake_case.

extension DataKeyRecord: FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "data_keys"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension TokenRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "tokens"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
}

extension AppRecord: FetchableRecord, PersistableRecord {
    public static let databaseTableName = "apps"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
}

// Explicit row mapping for the records read and written on hot paths: GRDB's Codable mapping with
// snake_case conversion costs tens of microseconds a row, most of a token read.

extension TokenRecord {
    static let columns = "name, kind, app, sealed, data_key_id, token_type, scopes, granular_scopes, expires_at, "
        + "data_access_expires_at, valid, checked_at, last_error, created_at, updated_at, meta_mac"

    public init(row: Row) throws {
        self.init(name: row[0], kind: row[1], app: row[2], sealed: row[3], dataKeyId: row[4], now: row[13])
        tokenType = row[5]
        scopes = row[6]
        granularScopes = row[7]
        expiresAt = row[8]
        dataAccessExpiresAt = row[9]
        valid = row[10]
        checkedAt = row[11]
        lastError = row[12]
        updatedAt = row[14]
        metaMAC = row[15]
    }

    var arguments: StatementArguments {
        [name, kind, app, sealed, dataKeyId, tokenType, scopes, granularScopes, expiresAt, dataAccessExpiresAt, valid,
         checkedAt, lastError, createdAt, updatedAt, metaMAC]
    }
}

extension AuditCheckpointRecord {
    /// SQLite keeps one checkpoint row (`id = 1`): a single-host store's.
    init(row: Row, host: String) {
        self.init(host: host, seq: row["seq"], hash: row["hash"], mac: row["mac"], updatedAt: row["updated_at"])
    }
}
