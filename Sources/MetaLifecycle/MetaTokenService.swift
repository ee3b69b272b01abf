import Foundation
import MetaGraph
import VaultCore
import VaultCrypto

/// The Meta token lifecycle on top of the vault: code exchange, long-lived exchange, refresh, validity
/// checks against the scopes an admin requires, a history of every check, and notifications when a token
/// needs an admin. Every step is an audited admin action.
public final class MetaTokenService: Sendable {
    public let vault: Vault
    public let graph: GraphClient
    let audit: any AuditSink
    let actor: AuditActor
    let channel: AuditChannel
    public let notifier: Notifier?
    /// Warn this many days before `expires_at` or `data_access_expires_at`.
    public let warnDays: Int
    /// Where the login dialog sends a remote user back (`meta.login_redirect_uri`): notifications about a
    /// token that needs its user carry a ready dialog URL when it is set.
    public let loginRedirectURI: String?

    public init(vault: Vault, graph: GraphClient, audit: any AuditSink, actor: AuditActor, channel: AuditChannel,
                notifier: Notifier?, warnDays: Int = 7, loginRedirectURI: String? = nil) {
        self.vault = vault
        self.graph = graph
        self.audit = audit
        self.actor = actor
        self.channel = channel
        self.notifier = notifier
        self.warnDays = warnDays
        self.loginRedirectURI = loginRedirectURI
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

    /// `GET /oauth/access_token` with an authorization code; stores (or, with `replace`, replaces) the token,
    /// with the scopes it must keep (`requireScopes`), then checks it.
    @discardableResult
    public func exchange(name: String, app: String, code: String, redirectURI: String, kind: TokenKind = .user,
                         replace: Bool = false, requireScopes: [String] = []) async throws -> CheckOutcome? {
        try Names.validate(name)
        try Self.validateScopes(requireScopes)
        let (appId, secret) = try vault.appSecret(app: app)
        let grant = try await graphCall("meta_exchange", token: name) {
            try await graph.exchangeCode(appId: appId, appSecret: secret.unsafeStringCopy(), code: code, redirectURI: redirectURI)
        }
        let token = SecretBytes(copying: Array(grant.accessToken.utf8))
        let expiresAt = grant.expiresIn.map { Self.now + $0 }
        try vault.put([ImportEntry(name: name, secret: token, kind: kind, app: app, metadata: .expiring(at: expiresAt))],
                      replace: replace, beforeCommit: recordBeforeCommit("meta_exchange", token: name))
        if !requireScopes.isEmpty { try require(name: name, scopes: requireScopes, targets: nil) }
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

    /// `GET /me/permissions` for a stored token (with the app's proof): what its user granted and declined.
    /// Recorded (`meta_permissions`) before the token leaves for Meta.
    public func permissions(name: String) async throws -> [GraphClient.Permission] {
        let opened = try vault.get(name: name)
        guard let app = opened.record.app else { throw VaultError.noApp(token: name, action: "Meta cannot list its permissions") }
        let proof = try vault.appsecretProof(token: opened.secret, app: app, timed: true)
        try audit.appendAndWait(AuditEvent(action: "meta_permissions", channel: channel, actor: actor, token: name, outcome: .granted))
        return try await graphCall("meta_permissions", token: name) {
            try await graph.permissions(opened.secret.unsafeStringCopy(), proof: proof)
        }
    }

    // MARK: - required scopes

    /// Scopes as Meta names them: lower-case letters, digits and `_`.
    public static func validateScopes(_ scopes: [String]) throws {
        for s in scopes where s.isEmpty || s.count > 64 || !s.utf8.allSatisfy({ (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f }) {
            throw MetaTokenService.MetaInputError(description: "\"\(s)\" is not a Meta permission (like ads_management: lower-case letters, digits and _)")
        }
    }

    /// Sets the scopes `name` must have (and, with `targets`, the ad accounts or pages each must cover in
    /// `granular_scopes`); nil `targets` keeps the current ones. The next check judges the token by them.
    public func require(name: String, scopes: [String], targets: [String]?) throws {
        try Self.require(vault: vault, name: name, scopes: scopes, targets: targets) { reason in
            try self.recordBeforeCommit("meta_require", token: name, reason: reason)()
        }
    }

    /// ``require(name:scopes:targets:)`` for a caller that audits it itself: `beforeCommit` gets the
    /// record's reason (`requires ads_read,ads_management on act_101`) and runs before the change commits.
    public static func require(vault: Vault, name: String, scopes: [String], targets: [String]?,
                               beforeCommit: (String) throws -> Void) throws {
        try validateScopes(scopes)
        for t in targets ?? [] where t.isEmpty || t.count > 64 || !t.utf8.allSatisfy({ (0x21...0x7e).contains($0) }) {
            throw MetaTokenService.MetaInputError(description: "\"\(t)\" is not a target id (like act_1234567890 or a page id)")
        }
        var unique: [String] = []
        for s in scopes where !unique.contains(s) { unique.append(s) }
        try vault.lifecycle { change, tx in
            guard try change.token(named: name) != nil else { throw StoreError.notFound(what: "token", name: name) }
            var m = try tx.metaState(token: name) ?? MetaTokenState(token: name, now: now)
            m.requiredScopes = MetaTokenState.json(unique)
            if let targets { m.requiredTargets = MetaTokenState.json(targets) }
            m.updatedAt = now
            try tx.saveMetaState(m)
            try beforeCommit(requirement(unique, m.targets))
        }
    }

    /// The audit reason of a requirement: `requires ads_read,ads_management on act_101`.
    public static func requirement(_ scopes: [String], _ targets: [String]) -> String {
        "requires " + (scopes.isEmpty ? "no scope" : scopes.joined(separator: ",")) + (targets.isEmpty ? "" : " on " + targets.joined(separator: ","))
    }

    /// The lifecycle's state of every token that has one, by name.
    public func states() throws -> [String: MetaTokenState] { try Self.states(of: vault) }

    public static func states(of vault: Vault) throws -> [String: MetaTokenState] {
        Dictionary(uniqueKeysWithValues: try vault.lifecycleState { try $0.metaStates() }.map { ($0.token, $0) })
    }

    /// One token's lifecycle state (nil before anything was required or checked).
    public func state(of name: String) throws -> MetaTokenState? {
        try vault.lifecycleState { try $0.metaState(token: name) }
    }

    /// A token's checks, oldest first (the newest `limit`).
    public func history(name: String, limit: Int = 1000) throws -> [MetaCheckRecord] { try Self.history(of: vault, name: name, limit: limit) }

    public static func history(of vault: Vault, name: String, limit: Int = 1000) throws -> [MetaCheckRecord] {
        try vault.lifecycleState { try $0.checks(token: name, limit: limit) }
    }

    // MARK: - checks

    /// What one check found.
    public struct CheckOutcome: Sendable, Equatable {
        public let name: String
        public let info: DebugTokenInfo
        /// The ``TokenState`` after the check.
        public let state: String
        public let evaluation: TokenEvaluation
        public let diagnosis: TokenDiagnosis?
        /// Whether this check changed what admins were told (and so queued a notification, unless it was
        /// a first check that found the token fine).
        public let changed: Bool
    }

    /// `GET /debug_token` for one token: stores what Meta says, judges it by the required scopes, adds a
    /// row to its history and queues a notification when its state changed. A check Meta does not answer
    /// (unreachable, throttled, the app's credentials refused) is in the history too, as `failed`.
    public func check(name: String) async throws -> CheckOutcome {
        let opened = try vault.get(name: name)
        guard let app = opened.record.app else {
            throw VaultError.noApp(token: name, action: "Meta cannot check it")
        }
        let (appId, secret) = try vault.appSecret(app: app)
        let info: DebugTokenInfo
        do {
            info = try await graphCall("meta_check", token: name) {
                try await graph.debugToken(opened.secret.unsafeStringCopy(), appId: appId, appSecret: secret.unsafeStringCopy())
            }
        } catch {
            noteFailedCheck(name, error: error)
            throw error
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
        let result: (TokenEvaluation, Bool) = try vault.lifecycle { change, tx in
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
            var m = try tx.metaState(token: name) ?? MetaTokenState(token: name, now: now)
            let eval = TokenEvaluation.of(info, requiredScopes: m.required, requiredTargets: m.targets, expectedAppId: appId,
                                          now: now, warnDays: warnDays)
            m.state = eval.state.rawValue
            (m.userId, m.appId, m.issuedAt, m.appMismatch) = (info.userId, info.appId, info.issuedAt, eval.appMismatch)
            m.lastSuccessAt = now
            m.problemSince = eval.state == .ok ? nil : (m.problemSince ?? now)
            m.updatedAt = now
            // A refresh that failed is over once the token was replaced since (put --force, extend, a login).
            let replacedSinceFailure = m.refreshFailedSeal.map { $0 != Self.sealTag(opened.record.sealed) } ?? false
            if replacedSinceFailure { (m.refreshError, m.refreshFailedAt, m.refreshFailedSeal) = (nil, nil, nil) }
            try tx.saveMetaState(m)
            let checkError = eval.appMismatch ? "issued for app \(info.appId ?? "?"), not \(appId)"
                : eval.missing.isEmpty ? lastError : "missing " + eval.missing.joined(separator: ",")
            try tx.appendCheck(MetaCheckRecord(token: name, checkedAt: now, verdict: info.isValid ? "valid" : "invalid", state: eval.state.rawValue,
                                               scopes: scopes, expiresAt: info.expiresAt, dataAccessExpiresAt: info.dataAccessExpiresAt,
                                               error: checkError))
            try recordBeforeCommit("meta_check", token: name, reason: eval.state.rawValue + (eval.missing.isEmpty ? "" : ": missing " + eval.missing.joined(separator: ",")))()
            // The app answers again: an alert about its credentials is over.
            try resolveAlert(tx, key: MetaAlert.appKey(app), now: now, about: "the app \(app)'s credentials work again")
            try resolveAlert(tx, key: MetaAlert.staleKey(name), now: now, about: "\(name) is checked again")
            if replacedSinceFailure { try resolveAlert(tx, key: MetaAlert.refreshKey(name), now: now, about: "\(name) was replaced") }
            let previous = try tx.notification(token: name)
            guard !TokenEvaluation.sameNotice(previous?.state, eval.noticeKey) else { return (eval, false) }
            // A first check that finds the token fine is not news; a return to ok from a problem is (`resolved`).
            let wasProblem = previous.map { $0.state != "ok" } ?? false
            let notify = eval.state != .ok || wasProblem
            let payload = notify
                ? MetaNotice(service: self, name: name, record: opened.record, app: app, appId: appId, info: info, evaluation: eval,
                             state: m, diagnosis: diagnosis, now: now).json()
                : nil
            try tx.saveNotification(NotificationRecord(token: name, state: eval.noticeKey, payload: payload, pending: notify, now: now))
            return (eval, true)
        }
        return CheckOutcome(name: name, info: info, state: result.0.state.rawValue, evaluation: result.0, diagnosis: diagnosis, changed: result.1)
    }

    /// A check Meta did not answer: a `failed` row in the history (best effort; the audit log has it too).
    func noteFailedCheck(_ name: String, error: any Error) {
        let now = Self.now
        try? vault.lifecycle { change, tx in
            guard try change.token(named: name) != nil else { return }
            let state = try tx.metaState(token: name)?.state ?? TokenState.unchecked.rawValue
            try tx.appendCheck(MetaCheckRecord(token: name, checkedAt: now, verdict: "failed", state: state, scopes: "[]",
                                               expiresAt: nil, dataAccessExpiresAt: nil, error: String("\(error)".prefix(500))))
        }
    }

    /// Marks an alert (`#app …`, `#stale …`, `#refresh …`) as over, queuing a `resolved` notification if
    /// admins were told of it.
    func resolveAlert(_ tx: any LifecycleStateTransaction, key: String, now: Int64, about: String) throws {
        guard var n = try tx.notification(token: key), n.state != "ok" else { return }
        if n.deliveredAt == nil {
            // Nobody was told yet: it is settled without a word either way.
            (n.state, n.pending, n.payload, n.nextAttemptAt, n.updatedAt) = ("ok", false, nil, nil, now)
            return try tx.saveNotification(n)
        }
        let payload = MetaAlert.resolved(key: key, about: about, vault: vault.home.root, now: now)
        try tx.saveNotification(NotificationRecord(token: key, state: "ok", payload: payload, pending: true, now: now))
    }

    /// Tokens with an app whose last check is older than `interval`, or that expire within the warning
    /// window and were last checked more than `nearExpiryInterval` ago. With `jitter` (0…1), each token is
    /// due up to that fraction of the interval early, by a fixed amount of its own: checks made together
    /// drift apart instead of coming due together every day.
    public func dueForCheck(interval: Int64, nearExpiryInterval: Int64 = 3600, jitter: Double = 0,
                            now: Int64 = MetaTokenService.now) throws -> [String] {
        try dueCandidates(interval: interval, nearExpiryInterval: nearExpiryInterval, jitter: jitter, now: now).map(\.name)
    }

    func dueCandidates(interval: Int64, nearExpiryInterval: Int64 = 3600, jitter: Double = 0, now: Int64,
                       from candidates: [CheckCandidate]? = nil) throws -> [CheckCandidate] {
        let horizon = now + Int64(warnDays) * 86_400
        // Only names and dates: the daemon asks every minute, and a vault may hold 100,000 tokens.
        return try (candidates ?? vault.lifecycleState { try $0.checkCandidates() }).filter { r in
            guard let checked = r.checkedAt else { return true }
            let nearExpiry = [r.expiresAt, r.dataAccessExpiresAt].contains { e in e.map { $0 != 0 && $0 <= horizon } ?? false }
            let early = Int64(Double(interval) * jitter * Self.spread(r.name))
            return now - checked >= interval - early || (nearExpiry && now - checked >= nearExpiryInterval)
        }.sorted { ($0.checkedAt ?? 0, $0.name) < ($1.checkedAt ?? 0, $1.name) }
    }

    /// A fixed number in [0, 1) for a name (FNV-1a): where in the jitter window its checks fall.
    static func spread(_ name: String) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Double(h % 10_000) / 10_000
    }

    // MARK: - refresh

    public struct RefreshError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// A required scope, a target or a login state that is not what it must be; nothing changed.
    public struct MetaInputError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// A fresh token for `name` before it lapses, replacing it in one transaction with its record (action
    /// `meta_refresh`) and a `refreshed` change (what `watch` clients hear), then a check. A system-user
    /// token is exchanged with `set_token_expires_in_60_days=true`; a user token with `fb_exchange_token`,
    /// which Meta answers only while it allows (an expired token cannot be exchanged). A failure is
    /// recorded on the token and, once per failure, notified (`refresh_failed`).
    @discardableResult
    public func refresh(name: String) async throws -> CheckOutcome? {
        let opened = try vault.get(name: name)
        guard let app = opened.record.app else { throw VaultError.noApp(token: name, action: "Meta cannot refresh it") }
        let kind = opened.record.kind
        guard kind == TokenKind.systemUser.rawValue || kind == TokenKind.user.rawValue else {
            throw RefreshError(description: "\(name) is a \(kind) token: only user and system-user tokens are refreshed")
        }
        let (appId, secret) = try vault.appSecret(app: app)
        let grant: AccessTokenGrant
        do {
            grant = try await graphCall("meta_refresh", token: name) {
                try await graph.exchangeForLongLived(appId: appId, appSecret: secret.unsafeStringCopy(), token: opened.secret.unsafeStringCopy(),
                                                     setTokenExpiresIn60Days: kind == TokenKind.systemUser.rawValue)
            }
        } catch {
            // Throttling and an unreachable Meta are not a refusal: the next sweep tries again, no one is told.
            if !Self.isTransient(error) { noteRefreshFailure(name, app: app, record: opened.record, error: error) }
            throw error
        }
        let now = Self.now
        let expiresAt = grant.expiresIn.map { now + $0 }
        try vault.lifecycle { change, tx in
            // The token an admin stored while the exchange was in flight (a rotation after a leak, say) wins.
            guard let current = try change.token(named: name), current.sealed == opened.record.sealed else {
                throw RefreshError(description: "\(name) was replaced while Meta refreshed it; the refreshed token was not stored")
            }
            try change.replaceSecret(name: name, secret: SecretBytes(copying: Array(grant.accessToken.utf8)), expiresAt: expiresAt)
            var m = try tx.metaState(token: name) ?? MetaTokenState(token: name, now: now)
            m.refreshedAt = now
            (m.refreshError, m.refreshFailedAt, m.refreshFailedSeal) = (nil, nil, nil)
            m.updatedAt = now
            try tx.saveMetaState(m)
            try recordBeforeCommit("meta_refresh", token: name, reason: expiresAt.map { "expires \(MetaNotice.date($0))" } ?? "does not expire")()
            try resolveAlert(tx, key: MetaAlert.refreshKey(name), now: now, about: "\(name) was refreshed")
        }
        return try? await check(name: name)
    }

    /// A tag of a stored value's sealed bytes (a new nonce each time it is stored): which value a refresh was of.
    static func sealTag(_ sealed: Data) -> String {
        let label = Array("tokenvault-seal-tag".utf8)
        return String(hexString(label.withUnsafeBytes { l in sealed.withUnsafeBytes { HMACSHA256.mac(key: l, message: $0) } }).prefix(16))
    }

    /// An error that says nothing about the token: throttling, a server or transport failure.
    static func isTransient(_ error: any Error) -> Bool {
        switch error as? GraphClientError {
        case .api(let e)?: return e.isThrottling || e.httpStatus >= 500
        case .transport?: return true
        default: return false
        }
    }

    func noteRefreshFailure(_ name: String, app: String, record: TokenRecord, error: any Error) {
        let now = Self.now
        let why = String("\(error)".prefix(500))
        try? vault.lifecycle { change, tx in
            guard try change.token(named: name) != nil else { return }
            var m = try tx.metaState(token: name) ?? MetaTokenState(token: name, now: now)
            m.refreshError = why
            m.refreshFailedAt = now
            m.refreshFailedSeal = Self.sealTag(record.sealed)
            m.updatedAt = now
            try tx.saveMetaState(m)
            let key = MetaAlert.refreshKey(name)
            guard try tx.notification(token: key)?.state != "refresh_failed" else { return }
            let payload = MetaAlert.refreshFailed(service: self, name: name, record: record, app: app, why: why, now: now)
            try tx.saveNotification(NotificationRecord(token: key, state: "refresh_failed", payload: payload, pending: true, now: now))
        }
    }

    /// Refreshable tokens (system-user tokens, and user tokens when `userTokens`) that expire within
    /// `days` and were not refreshed, nor failed to be, in the last `retryAfter` seconds.
    public func dueForRefresh(days: Int, userTokens: Bool, retryAfter: Int64 = 6 * 3600, now: Int64 = MetaTokenService.now) throws -> [String] {
        try dueForRefresh(days: days, userTokens: userTokens, retryAfter: retryAfter, now: now,
                          from: try vault.lifecycleState { try $0.checkCandidates() }).map(\.name)
    }

    func dueForRefresh(days: Int, userTokens: Bool, retryAfter: Int64 = 6 * 3600, now: Int64, from candidates: [CheckCandidate]) throws -> [CheckCandidate] {
        let horizon = now + Int64(days) * 86_400
        // Refreshable and expiring first (cheap), then their state, one row at a time: few tokens get here.
        let expiring = candidates.filter { c in
            guard c.kind == TokenKind.systemUser.rawValue || (userTokens && c.kind == TokenKind.user.rawValue),
                  let e = c.expiresAt, e != 0, e > now, e <= horizon else { return false }
            return true
        }
        guard !expiring.isEmpty else { return [] }
        let states = try vault.lifecycleState { tx in try expiring.map { try tx.metaState(token: $0.name) } }
        return zip(expiring, states).filter { _, m in
            if let at = m?.refreshedAt, now - at < retryAfter { return false }
            if let at = m?.refreshFailedAt, now - at < retryAfter { return false }
            return m.map { $0.state != TokenState.invalid.rawValue && $0.state != TokenState.expired.rawValue } ?? true
        }.map(\.0)
    }

    // MARK: - the watcher watched

    /// Tokens with an app that no check has reached Meta for in `limit` seconds (since they were stored,
    /// when never): each is a `check_stale` alert once, until a check gets through.
    public func noteStaleChecks(limit: Int64, now: Int64 = MetaTokenService.now) throws -> [String] {
        let states = try states()
        let (candidates, appAlerts) = try vault.lifecycleState { tx in
            (try tx.checkCandidates(), Set(try tx.notifications().filter { $0.token.hasPrefix("#app ") && $0.state != "ok" }.map { String($0.token.dropFirst(5)) }))
        }
        // The time a never-checked token was stored: every row read, so only when there is such a token.
        let neverChecked = candidates.contains { states[$0.name]?.lastSuccessAt == nil && $0.checkedAt == nil }
        let stored = neverChecked ? Dictionary(uniqueKeysWithValues: try vault.list().map { ($0.name, $0.createdAt) }) : [:]
        var stale: [String] = []
        for c in candidates {
            // A check before this release kept no history: its time is the token row's.
            let since = states[c.name]?.lastSuccessAt ?? c.checkedAt ?? stored[c.name] ?? now
            guard now - since >= limit else { continue }
            // An app whose credentials Meta rejects has its own alert: its tokens are not news one by one.
            if let app = c.app, appAlerts.contains(app) { continue }
            stale.append(c.name)
            try vault.lifecycle { _, tx in
                let key = MetaAlert.staleKey(c.name)
                guard try tx.notification(token: key)?.state != "check_stale" else { return }
                let payload = MetaAlert.stale(name: c.name, app: c.app, since: since, vault: vault.home.root, now: now)
                try tx.saveNotification(NotificationRecord(token: key, state: "check_stale", payload: payload, pending: true, now: now))
            }
        }
        return stale
    }

    /// One alert for an app whose credentials Meta rejected, instead of a wrong diagnosis on each token.
    public func noteAppRejected(app: String, error: GraphAPIError, now: Int64 = MetaTokenService.now) {
        // Read before the write transaction: a read of its own inside one would need a second connection.
        let appId = (try? vault.apps())?.first { $0.name == app }?.appId
        try? vault.lifecycle { _, tx in
            let key = MetaAlert.appKey(app)
            guard try tx.notification(token: key)?.state != "app_credential_rejected" else { return }
            let payload = MetaAlert.appRejected(app: app, appId: appId, error: error, vault: vault.home.root, now: now)
            try tx.saveNotification(NotificationRecord(token: key, state: "app_credential_rejected", payload: payload, pending: true, now: now))
        }
    }

    /// Queues a reminder for each token problem admins were told of more than `after` seconds ago and
    /// that is still open (`"reminder": true` in the payload). Returns how many.
    @discardableResult
    public func queueReminders(after: Int64, now: Int64 = MetaTokenService.now) throws -> Int {
        guard after > 0 else { return 0 }
        let apps = Set(try vault.apps().map(\.name))  // before the write transaction, as above
        return try vault.lifecycle { _, tx in
            var queued = 0
            let tokens = Set(try tx.checkCandidates().map(\.name))
            for var n in try tx.notifications() where !n.pending && n.state != "ok" {
                guard let delivered = n.deliveredAt, now - delivered >= after, let payload = n.payload else { continue }
                // Its token (or app) is gone, or no longer Meta's to check: nothing to remind of; settled quietly.
                let subjectGone = n.token.hasPrefix("#app ") ? !apps.contains(String(n.token.dropFirst(5)))
                    : !(MetaAlert.token(ofKey: n.token).map(tokens.contains) ?? false)
                if subjectGone {
                    (n.state, n.updatedAt) = ("ok", now)
                    try tx.saveNotification(n)
                    continue
                }
                let since = MetaAlert.isAlert(n.token) ? delivered : (try tx.metaState(token: n.token)?.problemSince ?? delivered)
                n.payload = MetaNotice.markReminder(payload, since: since)
                n.pending = true
                n.nextAttemptAt = now
                n.attempts = 0
                n.updatedAt = now
                try tx.saveNotification(n)
                queued += 1
            }
            return queued
        }
    }

    /// Drops history rows older than `days`.
    public func pruneHistory(days: Int, now: Int64 = MetaTokenService.now) throws {
        try vault.lifecycle { _, tx in try tx.pruneChecks(before: now - Int64(days) * 86_400) }
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
            // An alert's key is not a token name: the record names the token (or none, for an app).
            let token = MetaAlert.token(ofKey: n.token)
            let event = AuditEvent(action: action, channel: channel, actor: actor, token: token, outcome: outcome,
                                   reason: MetaAlert.isAlert(n.token) ? "\(n.token): \(reason)" : reason)
            try? vault.lifecycle { _, tx in
                try tx.saveNotification(updated)
                try audit.appendAndWait(event)
            }
        }
        return (delivered, failed)
    }
}
