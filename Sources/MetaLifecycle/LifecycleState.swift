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
}

/// What the re-checker needs to know of a token to decide whether it is due.
public struct CheckCandidate: Sendable, Equatable {
    public let name: String
    public let checkedAt: Int64?
    public let expiresAt: Int64?
    public let dataAccessExpiresAt: Int64?

    public init(name: String, checkedAt: Int64?, expiresAt: Int64?, dataAccessExpiresAt: Int64?) {
        self.name = name
        self.checkedAt = checkedAt
        self.expiresAt = expiresAt
        self.dataAccessExpiresAt = dataAccessExpiresAt
    }
}

/// The notification state of one token: what admins were last told, and a delivery still owed.
public struct NotificationRecord: Codable, Sendable, Equatable {
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
