import Foundation
import MetaGraph
import VaultCore
import VaultCrypto

/// The Meta token lifecycle on top of the vault: code exchange, long-lived exchange, validity checks,
/// and notifications when a token needs an admin. Every step is an audited admin action.
public final class MetaTokenService: Sendable {
    public let vault: Vault
    public let graph: GraphClient
    let audit: any AuditSink
    let actor: AuditActor
    let channel: AuditChannel
    public let notifier: Notifier?
    /// Warn this many days before `expires_at` or `data_access_expires_at`.
    public let warnDays: Int

    public init(vault: Vault, graph: GraphClient, audit: any AuditSink, actor: AuditActor, channel: AuditChannel,
                notifier: Notifier?, warnDays: Int = 7) {
        self.vault = vault
        self.graph = graph
        self.audit = audit
        self.actor = actor
        self.channel = channel
        self.notifier = notifier
        self.warnDays = warnDays
    }

    public static var now: Int64 { Int64(Date().timeIntervalSince1970) }

    /// Records a failed step, best effort: nothing changed, so nothing waits on it.
    func recordFailure(_ action: String, token: String?, reason: String) {
        try? audit.appendAndWait(AuditEvent(action: action, channel: channel, actor: actor, token: token, outcome: .failed, reason: reason))
    }

    /// The hook a store change runs just before it commits: the step's record, durable, or no change at all.
    func recordBeforeCommit(_ action: String, token: String?, reason: String? = nil) -> () throws -> Void {
        { [audit, channel, actor] in
            try audit.appendAndWait(AuditEvent(action: action, channel: channel, actor: actor, token: token, outcome: .granted, reason: reason))
        }
    }

    /// Runs a Graph call for `action`; a failure is recorded (the success is recorded with the change it makes).
    func graphCall<T>(_ action: String, token: String, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            recordFailure(action, token: token, reason: "\(error)")
            throw error
        }
    }

    // MARK: - getting tokens in

    /// `GET /oauth/access_token` with an authorization code; stores (or, with `replace`, replaces) the token.
    @discardableResult
    public func exchange(name: String, app: String, code: String, redirectURI: String, kind: TokenKind = .user,
                         replace: Bool = false) async throws -> CheckOutcome? {
        try Names.validate(name)
        let (appId, secret) = try vault.appSecret(app: app)
        let grant = try await graphCall("meta_exchange", token: name) {
            try await graph.exchangeCode(appId: appId, appSecret: secret.unsafeStringCopy(), code: code, redirectURI: redirectURI)
        }
        let token = SecretBytes(copying: Array(grant.accessToken.utf8))
        let expiresAt = grant.expiresIn.map { Self.now + $0 }
        try vault.put([ImportEntry(name: name, secret: token, kind: kind, app: app, metadata: .expiring(at: expiresAt))],
                      replace: replace, beforeCommit: recordBeforeCommit("meta_exchange", token: name))
        return try? await check(name: name)
    }

    /// `grant_type=fb_exchange_token`: a long-lived token replaces the stored one in one transaction.
    @discardableResult
    public func extend(name: String) async throws -> CheckOutcome? {
        let opened = try vault.get(name: name)
        guard let app = opened.record.app else { throw VaultError.noApp(token: name, action: "Meta cannot extend it") }
        let (appId, secret) = try vault.appSecret(app: app)
        let grant = try await graphCall("meta_extend", token: name) {
            try await graph.exchangeForLongLived(appId: appId, appSecret: secret.unsafeStringCopy(), token: opened.secret.unsafeStringCopy())
        }
        try vault.replaceSecret(name: name, secret: SecretBytes(copying: Array(grant.accessToken.utf8)),
                                expiresAt: grant.expiresIn.map { Self.now + $0 }, beforeCommit: recordBeforeCommit("meta_extend", token: name))
        return try? await check(name: name)
    }

    // MARK: - checks

    /// What one check found.
    public struct CheckOutcome: Sendable, Equatable {
        public let name: String
        public let info: DebugTokenInfo
        /// The token's notification state after the check (`ok`, `invalid:190/460`, `expiring`, `data_access_expiring`).
        public let state: String
        public let diagnosis: TokenDiagnosis?
        /// Whether this check changed the state (and so queued a notification, unless the new state is `ok`).
        public let changed: Bool
    }

    /// `GET /debug_token` for one token; stores what Meta says and queues a notification on a state change.
    public func check(name: String) async throws -> CheckOutcome {
        let opened = try vault.get(name: name)
        guard let app = opened.record.app else {
            throw VaultError.noApp(token: name, action: "Meta cannot check it")
        }
        let (appId, secret) = try vault.appSecret(app: app)
        let info = try await graphCall("meta_check", token: name) {
            try await graph.debugToken(opened.secret.unsafeStringCopy(), appId: appId, appSecret: secret.unsafeStringCopy())
        }
        let now = Self.now
        let diagnosis = info.isValid ? nil : TokenDiagnosis.of(code: info.error?.code, subcode: info.error?.subcode)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let scopes = String(decoding: try encoder.encode(info.scopes ?? []), as: UTF8.self)
        let granular = try info.granularScopes.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        var lastError: String?
        if !info.isValid || info.error != nil {
            let e = info.error ?? DebugTokenInfo.TokenError()
            let object: [String: Any] = ["code": e.code as Any? ?? NSNull(), "subcode": e.subcode as Any? ?? NSNull(),
                                         "message": e.message ?? "", "reason": diagnosis?.reason ?? "", "action": diagnosis?.action ?? ""]
            lastError = String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
        }
        let state = stateOf(info, now: now)
        let changed: Bool = try vault.lifecycle { change, tx in
            // The row is checked against its MAC in this transaction: an edit made during the Graph call fails here.
            try change.updateToken(named: name) { r in
                r.tokenType = info.type
                r.scopes = scopes
                r.granularScopes = granular
                r.expiresAt = info.expiresAt
                r.dataAccessExpiresAt = info.dataAccessExpiresAt
                r.valid = info.isValid
                r.checkedAt = now
                r.lastError = lastError
            }
            try recordBeforeCommit("meta_check", token: name)()
            let previous = try tx.notification(token: name)
            guard previous?.state != state else { return false }
            // A first check that finds the token fine is not news; any other change is.
            let notify = state != "ok"
            let payload = notify ? notificationPayload(name: name, record: opened.record, info: info, state: state, diagnosis: diagnosis, now: now) : nil
            try tx.saveNotification(NotificationRecord(token: name, state: state, payload: payload, pending: notify, now: now))
            return true
        }
        return CheckOutcome(name: name, info: info, state: state, diagnosis: diagnosis, changed: changed)
    }

    /// The notification state a check result puts a token in.
    func stateOf(_ info: DebugTokenInfo, now: Int64) -> String {
        if !info.isValid {
            return "invalid:\(info.error?.code.map(String.init) ?? "?")/\(info.error?.subcode.map(String.init) ?? "-")"
        }
        let horizon = now + Int64(warnDays) * 86_400
        if let e = info.expiresAt, e != 0, e <= horizon { return "expiring" }
        if let d = info.dataAccessExpiresAt, d != 0, d <= horizon { return "data_access_expiring" }
        return "ok"
    }

    func notificationPayload(name: String, record: TokenRecord, info: DebugTokenInfo, state: String, diagnosis: TokenDiagnosis?, now: Int64) -> String {
        let event: String
        let reason: String
        let action: String
        switch state {
        case "expiring":
            event = "token_expiring"
            reason = "the token expires at \(info.expiresAt ?? 0) (within \(warnDays) days)"
            action = "run `tokenvault meta extend \(name)`, or log in again with `tokenvault meta login`"
        case "data_access_expiring":
            event = "data_access_expiring"
            reason = "data access expires at \(info.dataAccessExpiresAt ?? 0) (within \(warnDays) days)"
            action = "the user must use the app (log in again through `tokenvault meta login`) to renew data access"
        default:
            event = "token_invalid"
            reason = diagnosis?.reason ?? "Meta reports the token as invalid"
            action = diagnosis?.action ?? "re-authorise"
        }
        let object: [String: Any] = [
            "event": event, "token": name, "app": record.app as Any? ?? NSNull(), "kind": record.kind, "meta_type": info.type as Any? ?? NSNull(),
            "valid": info.isValid, "expires_at": info.expiresAt as Any? ?? NSNull(),
            "data_access_expires_at": info.dataAccessExpiresAt as Any? ?? NSNull(),
            "error": info.error.map { ["code": $0.code as Any? ?? NSNull(), "subcode": $0.subcode as Any? ?? NSNull(),
                                       "message": $0.message as Any? ?? NSNull()] } as Any? ?? NSNull(),
            "reason": reason, "action": action, "detected_at": now, "vault": vault.home.root,
        ]
        return String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
    }

    /// Tokens with an app whose last check is older than `interval`, or that expire within the warning
    /// window and were last checked more than `nearExpiryInterval` ago.
    public func dueForCheck(interval: Int64, nearExpiryInterval: Int64 = 3600, now: Int64 = MetaTokenService.now) throws -> [String] {
        let horizon = now + Int64(warnDays) * 86_400
        // Only names and dates: the daemon asks every minute, and a vault may hold 100,000 tokens.
        return try vault.lifecycleState { try $0.checkCandidates() }.filter { r in
            guard let checked = r.checkedAt else { return true }
            let nearExpiry = [r.expiresAt, r.dataAccessExpiresAt].contains { e in e.map { $0 != 0 && $0 <= horizon } ?? false }
            return now - checked >= interval || (nearExpiry && now - checked >= nearExpiryInterval)
        }.map(\.name)
    }

    // MARK: - notifications

    /// What admins were last told about `token`, and any delivery still owed.
    public func notificationState(token: String) throws -> NotificationRecord? {
        try vault.lifecycleState { try $0.notification(token: token) }
    }

    /// Delivers every notification that is due; a failure is recorded (and audited) and retried later
    /// with backoff: 1 min, 5 min, 30 min, then every 2 h. Returns (delivered, failed).
    @discardableResult
    public func deliverDueNotifications(now: Int64 = MetaTokenService.now) async -> (Int, Int) {
        guard let notifier else { return (0, 0) }
        let due = (try? vault.lifecycleState { try $0.dueNotifications(now: now) }) ?? []
        var delivered = 0, failed = 0
        for var n in due {
            let result = await notifier.send(n.payload ?? "{}")
            n.attempts += 1
            n.updatedAt = Self.now
            let action: String, outcome: AuditOutcome, reason: String
            switch result {
            case .success:
                n.pending = false
                n.deliveredAt = Self.now
                n.nextAttemptAt = nil
                n.lastError = nil
                delivered += 1
                (action, outcome, reason) = ("notification_sent", .granted, n.state)
            case .failure(let error):
                let delays: [Int64] = [60, 300, 1800, 7200]
                n.nextAttemptAt = Self.now + delays[min(n.attempts - 1, delays.count - 1)]
                n.lastError = "\(error)"
                failed += 1
                (action, outcome, reason) = ("notification_failed", .failed, "\(n.state): \(error) (attempt \(n.attempts))")
            }
            // The record commits with the delivery state: without it the notification stays owed (and is retried).
            let updated = n
            let event = AuditEvent(action: action, channel: channel, actor: actor, token: n.token, outcome: outcome, reason: reason)
            try? vault.lifecycle { _, tx in
                try tx.saveNotification(updated)
                try audit.appendAndWait(event)
            }
        }
        return (delivered, failed)
    }
}
