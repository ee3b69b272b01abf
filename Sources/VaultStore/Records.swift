import Foundation
import GRDB

/// A data key, wrapped (sealed) under a master key from the keyring. Tokens are sealed under data keys.
public struct DataKeyRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "data_keys"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    public var id: Int64?
    /// The keyring id of the master key this data key is wrapped under.
    public var masterKeyId: String
    /// `Sealer` format v1 bytes.
    public var wrapped: Data
    public var createdAt: Int64
    /// Only one data key is current: new tokens are sealed under it.
    public var isCurrent: Bool
    /// `tokens` (seals tokens and app secrets) or `audit` (the audit log's key).
    public var purpose: String

    public init(id: Int64? = nil, masterKeyId: String, wrapped: Data, createdAt: Int64, isCurrent: Bool, purpose: String = "tokens") {
        self.id = id
        self.masterKeyId = masterKeyId
        self.wrapped = wrapped
        self.createdAt = createdAt
        self.isCurrent = isCurrent
        self.purpose = purpose
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One stored token: its sealed bytes and the metadata that is not secret.
public struct TokenRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "tokens"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    public var name: String
    /// `user`, `system_user`, `page`, `app` or `other`.
    public var kind: String
    /// The app (by vault name) this token belongs to, if any; its secret signs proofs.
    public var app: String?
    public var sealed: Data
    public var dataKeyId: Int64
    /// Meta's `type` from the last `debug_token` (USER, PAGE, APP, SYSTEM_USER).
    public var tokenType: String?
    /// JSON array of scope strings, as Meta last reported them; `[]` when never checked.
    public var scopes: String
    /// JSON array of `{scope, target_ids}` objects, when Meta reported any.
    public var granularScopes: String?
    /// Unix seconds; nil when the token never expires or has never been checked.
    public var expiresAt: Int64?
    public var dataAccessExpiresAt: Int64?
    /// The last check's verdict; nil when never checked.
    public var valid: Bool?
    public var checkedAt: Int64?
    /// JSON `{code, subcode, message}` of the last failed check.
    public var lastError: String?
    public var createdAt: Int64
    public var updatedAt: Int64
    /// The MAC that binds every field above but the two times to the sealed value (the vault computes it
    /// under the token's data key); nil on rows written before metadata was authenticated.
    public var metaMAC: Data?

    public init(name: String, kind: String, app: String?, sealed: Data, dataKeyId: Int64, now: Int64) {
        self.name = name
        self.kind = kind
        self.app = app
        self.sealed = sealed
        self.dataKeyId = dataKeyId
        self.tokenType = nil
        self.scopes = "[]"
        self.granularScopes = nil
        self.expiresAt = nil
        self.dataAccessExpiresAt = nil
        self.valid = nil
        self.checkedAt = nil
        self.lastError = nil
        self.createdAt = now
        self.updatedAt = now
        self.metaMAC = nil
    }
}

/// A Meta app: its id and its sealed app secret.
public struct AppRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "apps"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    /// The vault's name for the app (what `--app` takes).
    public var name: String
    /// Meta's numeric app id.
    public var appId: String
    public var sealedSecret: Data
    public var dataKeyId: Int64
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(name: String, appId: String, sealedSecret: Data, dataKeyId: Int64, now: Int64) {
        self.name = name
        self.appId = appId
        self.sealedSecret = sealedSecret
        self.dataKeyId = dataKeyId
        self.createdAt = now
        self.updatedAt = now
    }
}

/// The audit log's anchor in the database: the last record known durable, so a cut-off tail is caught.
public struct AuditCheckpointRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "audit_checkpoint"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    public var id: Int64 = 1
    public var seq: Int64
    /// Hex of the record's chain hash.
    public var hash: String
    /// Hex MAC of `seq || hash` under the audit key, so the row itself cannot be edited to match a cut log.
    public var mac: String
    public var updatedAt: Int64

    public init(seq: Int64, hash: String, mac: String, updatedAt: Int64) {
        self.seq = seq
        self.hash = hash
        self.mac = mac
        self.updatedAt = updatedAt
    }
}

// Explicit row mapping for the records read and written on hot paths: GRDB's Codable mapping with
// snake_case conversion costs tens of microseconds a row, most of a token read.

extension TokenRecord {
    static let columns = "name, kind, app, sealed, data_key_id, token_type, scopes, granular_scopes, expires_at, "
        + "data_access_expires_at, valid, checked_at, last_error, created_at, updated_at, meta_mac"

    public init(row: Row) throws {
        name = row[0]
        kind = row[1]
        app = row[2]
        sealed = row[3]
        dataKeyId = row[4]
        tokenType = row[5]
        scopes = row[6]
        granularScopes = row[7]
        expiresAt = row[8]
        dataAccessExpiresAt = row[9]
        valid = row[10]
        checkedAt = row[11]
        lastError = row[12]
        createdAt = row[13]
        updatedAt = row[14]
        metaMAC = row[15]
    }

    var arguments: StatementArguments {
        [name, kind, app, sealed, dataKeyId, tokenType, scopes, granularScopes, expiresAt, dataAccessExpiresAt, valid,
         checkedAt, lastError, createdAt, updatedAt, metaMAC]
    }
}

/// The notification state of one token: what admins were last told, and a delivery still owed.
public struct NotificationRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "notifications"
    public static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    public static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase

    public var token: String
    /// `ok`, `invalid:190/460`, `expiring`, `data_access_expiring`.
    public var state: String
    /// The JSON document the notify command gets.
    public var payload: String?
    public var pending: Bool
    public var attempts: Int
    public var nextAttemptAt: Int64?
    public var deliveredAt: Int64?
    public var lastError: String?
    public var updatedAt: Int64

    public init(token: String, state: String, payload: String?, pending: Bool, now: Int64) {
        self.token = token
        self.state = state
        self.payload = payload
        self.pending = pending
        self.attempts = 0
        self.nextAttemptAt = pending ? now : nil
        self.deliveredAt = nil
        self.lastError = nil
        self.updatedAt = now
    }
}
