import Foundation
import VaultCore

/// The lifecycle's own state, behind an API this module owns: every store backend's transaction
/// implements it, and the lifecycle reaches it through ``VaultChange/state(_:)`` so that a check's token
/// update and its notification state commit in one transaction.
public protocol LifecycleStateTransaction {
    func notification(token: String) throws -> NotificationRecord?
    func saveNotification(_ record: NotificationRecord) throws
    /// Notifications owed whose next attempt is due (`next_attempt_at` unset or ≤ `now`), by token name.
    func dueNotifications(now: Int64) throws -> [NotificationRecord]
    /// Every token's notification state, by token name (for copying a vault to another store).
    func notifications() throws -> [NotificationRecord]
    /// Tokens with an app (the ones Meta can check): name, last check and expiries only, by name.
    func checkCandidates() throws -> [CheckCandidate]

    /// A token's lifecycle state (required scopes, the state its last check put it in, who issued it).
    func metaState(token: String) throws -> MetaTokenState?
    /// Saves it; the token must exist (its removal removes the state and the history with it).
    func saveMetaState(_ state: MetaTokenState) throws
    /// Every token's lifecycle state, by token name.
    func metaStates() throws -> [MetaTokenState]
    /// Appends one check to the history.
    func appendCheck(_ check: MetaCheckRecord) throws
    /// A token's checks, oldest first (at most `limit`, the newest ones).
    func checks(token: String, limit: Int) throws -> [MetaCheckRecord]
    /// Every token's checks, oldest first (for copying a vault to another store).
    func allChecks() throws -> [MetaCheckRecord]
    /// Removes checks made before `before` (Unix seconds): the history's retention.
    func pruneChecks(before: Int64) throws
    /// The pause Meta asked for, shared by every daemon of the store (nil: none).
    func sweepPause() throws -> SweepPauseRecord?
    /// Sets or (nil) clears it.
    func saveSweepPause(_ pause: SweepPauseRecord?) throws
}

/// Meta asked the app to back off: no call before `untilAt` (Unix seconds), from any daemon of the store.
public struct SweepPauseRecord: Codable, Sendable, Equatable {
    public var untilAt: Int64
    public var reason: String
    /// Throttles in a row (the next backoff doubles).
    public var throttles: Int

    public init(untilAt: Int64, reason: String, throttles: Int) {
        self.untilAt = untilAt
        self.reason = reason
        self.throttles = throttles
    }
}

/// What the lifecycle keeps of a token besides the token row: what the admin requires of it, the state
/// its last check put it in, and what Meta said of who issued it.
public struct MetaTokenState: Codable, Sendable, Equatable {
    public var token: String
    /// A ``TokenState`` raw value.
    public var state: String
    /// JSON array of scopes the token must have (`meta require`, `--require-scope`).
    public var requiredScopes: String
    /// JSON array of target ids (`act_…`, a page id) each required scope must list in `granular_scopes`.
    public var requiredTargets: String
    public var userId: String?
    public var appId: String?
    public var issuedAt: Int64?
    /// The token's `app_id` is not its app's (Login Security: never assume a token is your app's).
    public var appMismatch: Bool
    /// When Meta last answered a check of it (valid or not).
    public var lastSuccessAt: Int64?
    /// When it left `ok` (nil while ok or never checked).
    public var problemSince: Int64?
    public var refreshedAt: Int64?
    /// Why the last automatic refresh failed (nil after a success), and when.
    public var refreshError: String?
    public var refreshFailedAt: Int64?
    /// Which stored value the failed refresh was of (a tag of its sealed bytes): a new value ends the alert.
    public var refreshFailedSeal: String?
    public var updatedAt: Int64

    public init(token: String, now: Int64) {
        self.token = token
        state = TokenState.unchecked.rawValue
        requiredScopes = "[]"
        requiredTargets = "[]"
        appMismatch = false
        updatedAt = now
    }

    public var required: [String] { Self.list(requiredScopes) }
    public var targets: [String] { Self.list(requiredTargets) }

    public static func list(json: String) -> [String] { list(json) }

    static func list(_ json: String) -> [String] { (try? JSONDecoder().decode([String].self, from: Data(json.utf8))) ?? [] }

    static func json(_ list: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(list)) ?? Data("[]".utf8), as: UTF8.self)
    }
}

/// One check in a token's history (`tokenvault meta history`).
public struct MetaCheckRecord: Codable, Sendable, Equatable {
    /// Assigned by the store; nil before it is saved.
    public var id: Int64?
    public var token: String
    public var checkedAt: Int64
    /// `valid`, `invalid` (Meta answered), or `failed` (no answer: unreachable, throttled, the app refused).
    public var verdict: String
    /// The ``TokenState`` after it.
    public var state: String
    /// JSON array of scopes Meta reported (`[]` when it did not answer).
    public var scopes: String
    public var expiresAt: Int64?
    public var dataAccessExpiresAt: Int64?
    public var error: String?

    public init(id: Int64? = nil, token: String, checkedAt: Int64, verdict: String, state: String, scopes: String,
                expiresAt: Int64?, dataAccessExpiresAt: Int64?, error: String?) {
        self.id = id
        self.token = token
        self.checkedAt = checkedAt
        self.verdict = verdict
        self.state = state
        self.scopes = scopes
        self.expiresAt = expiresAt
        self.dataAccessExpiresAt = dataAccessExpiresAt
        self.error = error
    }
}

/// What the re-checker needs to know of a token to decide whether it is due.
public struct CheckCandidate: Sendable, Equatable {
    public let name: String
    public let checkedAt: Int64?
    public let expiresAt: Int64?
    public let dataAccessExpiresAt: Int64?
    /// `user`, `system_user`, …: which tokens can be refreshed.
    public let kind: String
    /// The token's app (by vault name).
    public let app: String?

    public init(name: String, checkedAt: Int64?, expiresAt: Int64?, dataAccessExpiresAt: Int64?, kind: String = "user", app: String? = nil) {
        self.name = name
        self.checkedAt = checkedAt
        self.expiresAt = expiresAt
        self.dataAccessExpiresAt = dataAccessExpiresAt
        self.kind = kind
        self.app = app
    }
}

/// The notification state of one token: what admins were last told, and a delivery still owed.
public struct NotificationRecord: Codable, Sendable, Equatable {
    public var token: String
    /// What admins were last told (``TokenEvaluation/noticeKey``: `ok`, `invalid:190/460`, `expiring`,
    /// `scope_missing:ads_management`, …). Rows keyed `#app NAME`, `#stale NAME`, `#refresh NAME` (a
    /// character no name holds) are the app-level and watcher alerts.
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

extension Vault {
    /// Runs `body` with the lifecycle's state in one write transaction of the vault's store.
    func lifecycle<T>(_ body: (VaultChange, any LifecycleStateTransaction) throws -> T) throws -> T {
        try change { change in try body(change, try change.state((any LifecycleStateTransaction).self)) }
    }

    /// Reads the lifecycle's state on a snapshot.
    func lifecycleState<T>(_ body: (any LifecycleStateTransaction) throws -> T) throws -> T {
        try inspect { try body(try $0.state((any LifecycleStateTransaction).self)) }
    }
}
