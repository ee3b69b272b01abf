import Foundation

// The values that cross the storage seam. Every backend stores exactly these; none of them holds a key or
// a plaintext token. Column names in each backend are these fields in snake_case.

/// One committed change to a token, numbered in commit order: what a `watch` connection is told.
/// A store keeps the newest ``kept`` of them (older ones are pruned as new ones land).
public struct TokenChange: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// Stored anew or replaced (`put`, `import`, `meta exchange` of a new token).
        case replaced
        /// Removed (`rm`).
        case removed
        /// Given a new value by the Meta lifecycle (an extension or refresh).
        case refreshed
    }

    /// The change's number in the store's sequence (0 before it is stored).
    public var seq: Int64
    public var name: String
    public var kind: Kind

    public init(seq: Int64 = 0, name: String, kind: Kind) {
        self.seq = seq
        self.name = name
        self.kind = kind
    }

    /// How many changes a store keeps: a daemon that falls further behind than this (only a bulk
    /// import between two of its polls) reads what is left and says so in its log.
    public static let kept: Int64 = 10_000
}

/// A data key, wrapped (sealed) under a master key from the keyring. Tokens are sealed under data keys.
public struct DataKeyRecord: Codable, Sendable, Equatable {
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
}

/// One stored token: its sealed bytes and the metadata that is not secret.
public struct TokenRecord: Codable, Sendable, Equatable {
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
public struct AppRecord: Codable, Sendable, Equatable {
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

/// An app's id, sealed secret and data key: what a proof needs, on the fast read path.
public struct AppSeal: Sendable, Equatable {
    public let appId: String
    public let sealed: Data
    public let dataKeyId: Int64

    public init(appId: String, sealed: Data, dataKeyId: Int64) {
        self.appId = appId
        self.sealed = sealed
        self.dataKeyId = dataKeyId
    }
}

/// The audit log's anchor in the store: the last record known durable, so a cut-off tail is caught.
public struct AuditCheckpointRecord: Codable, Sendable, Equatable {
    /// The host whose local chain this vouches for (`local` in a single-host store).
    public var host: String
    public var seq: Int64
    /// Hex of the record's chain hash.
    public var hash: String
    /// Hex MAC of `seq || hash` under the audit key, so the row itself cannot be edited to match a cut log.
    public var mac: String
    public var updatedAt: Int64

    public init(host: String = AuditCheckpointRecord.localHost, seq: Int64, hash: String, mac: String, updatedAt: Int64) {
        self.host = host
        self.seq = seq
        self.hash = hash
        self.mac = mac
        self.updatedAt = updatedAt
    }

    /// The host name of a checkpoint written by a vault that names no host (SQLite's single row).
    public static let localHost = "local"
}

/// A sealed value waiting to be re-sealed under the current data key.
public struct PendingSeal: Sendable {
    public enum Kind: Sendable { case token, app }
    public let kind: Kind
    public let name: String
    public let sealed: Data
    public let dataKeyId: Int64
    /// A token's whole row, so its metadata can be checked and MAC'd again under the new key.
    public let record: TokenRecord?

    public init(kind: Kind, name: String, sealed: Data, dataKeyId: Int64, record: TokenRecord? = nil) {
        self.kind = kind
        self.name = name
        self.sealed = sealed
        self.dataKeyId = dataKeyId
        self.record = record
    }
}
