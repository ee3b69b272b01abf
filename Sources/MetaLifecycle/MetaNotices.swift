import Foundation
import MetaGraph
import VaultCore
import VaultCrypto

/// The notification about one token's state: a JSON document for the admin's notify command, with a
/// one-line `summary` a person can act on, readable dates beside the Unix ones, and, for a token that
/// needs its user, the login dialog URL to send them (when `meta.login_redirect_uri` is set).
struct MetaNotice {
    let service: MetaTokenService
    let name: String
    let record: TokenRecord
    let app: String
    let appId: String
    let info: DebugTokenInfo
    let evaluation: TokenEvaluation
    let state: MetaTokenState
    let diagnosis: TokenDiagnosis?
    let now: Int64

    var isSystemUser: Bool { record.kind == TokenKind.systemUser.rawValue || info.type == "SYSTEM_USER" }

    static func event(_ state: TokenState) -> String {
        switch state {
        case .ok: return "resolved"
        case .invalid: return "token_invalid"
        case .expiring: return "token_expiring"
        case .expired: return "token_expired"
        case .dataAccessExpiring: return "data_access_expiring"
        case .dataAccessExpired: return "data_access_expired"
        case .scopeMissing: return "scope_missing"
        case .unchecked: return "unchecked"
        }
    }

    /// `2026-12-03 10:00 UTC`.
    static func date(_ unix: Int64) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(unix)))
    }

    static func days(_ from: Int64, _ to: Int64) -> Int { Int(((Double(to - from)) / 86_400).rounded(.up)) }

    /// The dialog URL for this token's user: the scopes it has and must have, re-asking declined ones.
    func dialogURL() -> String? {
        guard !isSystemUser, !evaluation.appMismatch, let redirect = service.loginRedirectURI,
              [.expired, .invalid, .dataAccessExpired, .dataAccessExpiring, .scopeMissing, .expiring].contains(evaluation.state),
              let loginState = try? LoginState.make(vault: service.vault, name: name, app: app, redirectURI: redirect, now: now) else { return nil }
        var scopes = info.scopes ?? []
        for s in state.required where !scopes.contains(s) { scopes.append(s) }
        return service.graph.loginDialogURL(appId: appId, redirectURI: redirect, state: loginState, scopes: scopes,
                                            rerequest: evaluation.state == .scopeMissing).absoluteString
    }

    /// Why, and what to do: different for a system-user token (Business Manager) and a user token (login).
    func reasonAndAction(dialog: String?) -> (String, String) {
        let missing = evaluation.missing.joined(separator: ", ")
        let relogin = dialog != nil
            ? "send the user the dialog URL (dialog_url), then run `tokenvault meta exchange \(name) --app \(app) --state STATE --code CODE --redirect-uri \(service.loginRedirectURI ?? "URI")` with what the redirect carried"
            : "run `tokenvault meta login \(name) --app \(app) --force` with the user (or set meta.login_redirect_uri to get a link to send them)"
        let businessManager = "in Business Manager (Business settings → Users → System users), generate a new token for the system user"
            + (state.required.isEmpty ? "" : " with \(state.required.joined(separator: ", "))")
            + " and store it: `tokenvault put \(name) --kind system_user --app \(app) --force < token.txt`"
        switch evaluation.state {
        case .ok:
            return ("\(name) is ok again", "nothing")
        case .expiring:
            let when = info.expiresAt.map { "\(Self.date($0)), in \(Self.days(now, $0)) days" } ?? "soon"
            return ("the token expires on \(when)",
                    isSystemUser ? "the daemon refreshes expiring system-user tokens before they lapse; by hand: `tokenvault meta refresh \(name)`"
                                 : "run `tokenvault meta extend \(name)` while it is valid, or " + relogin)
        case .expired:
            return ("the token expired" + (info.expiresAt.map { $0 != 0 ? " on \(Self.date($0))" : "" } ?? ""),
                    isSystemUser ? businessManager : relogin)
        case .dataAccessExpiring:
            let when = info.dataAccessExpiresAt.map { "\(Self.date($0)), in \(Self.days(now, $0)) days" } ?? "soon"
            return ("data access ends on \(when) (90 days after the user last used the app)",
                    isSystemUser ? businessManager : "the user must log in again to renew it: " + relogin)
        case .dataAccessExpired:
            return ("data access has ended (the user has not used the app for 90 days)", isSystemUser ? businessManager : relogin)
        case .scopeMissing:
            return ("the token lacks \(missing)",
                    isSystemUser ? "give the system user \(missing) (assign the ad account or page, and the permission) in Business Manager, or " + businessManager
                                 : "ask the user again for it (the dialog re-asks declined permissions): " + relogin)
        case .invalid:
            if evaluation.appMismatch {
                return ("the token was issued for app \(info.appId ?? "?"), not for \(app) (app id \(appId))",
                        "store it with the app it belongs to, or get a token from \(app): never use another app's token")
            }
            let d = diagnosis ?? TokenDiagnosis.of(code: nil, subcode: nil)
            return (d.reason, isSystemUser ? businessManager : d.action + (dialog != nil ? "; " + relogin : ""))
        case .unchecked:
            return ("not checked yet", "nothing")
        }
    }

    func json() -> String {
        let dialog = dialogURL()
        let (reason, action) = reasonAndAction(dialog: dialog)
        let who = isSystemUser ? "system-user token" : "\(record.kind.replacingOccurrences(of: "_", with: "-")) token"
        let user = info.userId.map { " of Facebook user \($0)" } ?? ""
        var summary = "\(name) (\(who)\(user), app \(app)): \(reason). To do: \(action)."
        if let dialog { summary += " Link for the user: \(dialog)" }
        var object: [String: Any] = [
            "event": Self.event(evaluation.state), "token": name, "state": evaluation.state.rawValue, "app": app, "app_id": appId,
            "kind": record.kind, "meta_type": info.type as Any? ?? NSNull(), "user_id": info.userId as Any? ?? NSNull(),
            "token_app_id": info.appId as Any? ?? NSNull(), "valid": info.isValid, "scopes": info.scopes ?? [],
            "required_scopes": state.required, "missing": evaluation.missing,
            "expires_at": info.expiresAt as Any? ?? NSNull(), "data_access_expires_at": info.dataAccessExpiresAt as Any? ?? NSNull(),
            "issued_at": info.issuedAt as Any? ?? NSNull(),
            "error": info.error.map { ["code": $0.code as Any? ?? NSNull(), "subcode": $0.subcode as Any? ?? NSNull(),
                                       "message": $0.message as Any? ?? NSNull()] } as Any? ?? NSNull(),
            "reason": reason, "action": action, "dialog_url": dialog as Any? ?? NSNull(), "summary": summary,
            "detected_at": now, "detected": Self.date(now), "vault": service.vault.home.root, "reminder": false,
        ]
        for (key, value) in [("expires", info.expiresAt), ("data_access_expires", info.dataAccessExpiresAt), ("issued", info.issuedAt)] {
            object[key] = value.map { $0 == 0 ? "never" : Self.date($0) } as Any? ?? NSNull()
        }
        return MetaAlert.encode(object)
    }

    /// The payload again, as a reminder of a problem still open since `since`.
    static func markReminder(_ payload: String, since: Int64) -> String {
        guard var o = (try? JSONSerialization.jsonObject(with: Data(payload.utf8))) as? [String: Any] else { return payload }
        if o["reminder"] as? Bool != true, let summary = o["summary"] as? String { o["summary"] = "Reminder (open since \(date(since))): " + summary }
        o["reminder"] = true
        o["open_since"] = date(since)
        return MetaAlert.encode(o)
    }
}

/// The alerts that are not one token's state: an app whose credentials Meta rejected, a token no check has
/// reached Meta for, a refresh that failed. Each is one row of the notifications, keyed with `#` (which no
/// name holds), notified once and `resolved` when it is over.
public enum MetaAlert {
    public static func appKey(_ app: String) -> String { "#app " + app }
    public static func staleKey(_ token: String) -> String { "#stale " + token }
    public static func refreshKey(_ token: String) -> String { "#refresh " + token }
    public static func isAlert(_ key: String) -> Bool { key.hasPrefix("#") }

    /// The token an alert (or a token's own notification) is about; nil for an app's.
    public static func token(ofKey key: String) -> String? {
        guard isAlert(key) else { return key }
        if key.hasPrefix("#app ") { return nil }
        return key.split(separator: " ", maxSplits: 1).dropFirst().first.map(String.init)
    }

    static func encode(_ object: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
    }

    static func appRejected(app: String, appId: String?, error: GraphAPIError, vault: String, now: Int64) -> String {
        let reason = "Meta rejected the app's own credentials (its id and secret) when checking tokens: the secret was reset, or the app was removed or restricted"
        let action = "copy the app secret from the app dashboard (App settings → Basic) and run `tokenvault app add \(app) --app-id \(appId ?? "ID") --force` "
            + "(the secret on stdin); checks of this app's tokens are held off, and no token is blamed, until then"
        return encode(["event": "app_credential_rejected", "app": app, "app_id": appId as Any? ?? NSNull(),
                       "error": ["code": error.code as Any? ?? NSNull(), "subcode": error.subcode as Any? ?? NSNull(), "message": error.message],
                       "reason": reason, "action": action, "summary": "app \(app): \(reason). To do: \(action).",
                       "detected_at": now, "detected": MetaNotice.date(now), "vault": vault, "reminder": false])
    }

    static func stale(name: String, app: String?, since: Int64, vault: String, now: Int64) -> String {
        let reason = "no check of the token has reached Meta since \(MetaNotice.date(since)): its state is not known"
        let action = "look at `tokenvault status` and the daemon's log (Meta unreachable, throttling, an app secret refused, or the re-checker not running); "
            + "`tokenvault meta check \(name)` checks it by hand"
        return encode(["event": "check_stale", "token": name, "app": app as Any? ?? NSNull(), "last_success_at": since,
                       "last_success": MetaNotice.date(since), "reason": reason, "action": action,
                       "summary": "\(name): \(reason). To do: \(action).", "detected_at": now, "detected": MetaNotice.date(now),
                       "vault": vault, "reminder": false])
    }

    static func refreshFailed(service: MetaTokenService, name: String, record: TokenRecord, app: String, why: String, now: Int64) -> String {
        let systemUser = record.kind == TokenKind.systemUser.rawValue
        let action = systemUser
            ? "in Business Manager (Business settings → Users → System users), generate a new token for the system user and store it: "
                + "`tokenvault put \(name) --kind system_user --app \(app) --force < token.txt`"
            : "the user must log in again: `tokenvault meta login \(name) --app \(app) --force`"
        let expires = record.expiresAt.map { $0 == 0 ? "never" : MetaNotice.date($0) } ?? "unknown"
        return encode(["event": "refresh_failed", "token": name, "app": app, "kind": record.kind, "error": why,
                       "expires_at": record.expiresAt as Any? ?? NSNull(), "expires": expires,
                       "reason": "Meta refused to refresh the token: \(why)", "action": action,
                       "summary": "\(name): the refresh failed (\(why)); it expires \(expires). To do: \(action).",
                       "detected_at": now, "detected": MetaNotice.date(now), "vault": service.vault.home.root, "reminder": false])
    }

    static func resolved(key: String, about: String, vault: String, now: Int64) -> String {
        encode(["event": "resolved", "alert": key, "token": token(ofKey: key) as Any? ?? NSNull(), "reason": about, "action": "nothing",
                "summary": "\(about).", "detected_at": now, "detected": MetaNotice.date(now), "vault": vault, "reminder": false])
    }
}

/// The login dialog's `state` for a user who is not at the vault host: `<time>.<mac>`, where the MAC
/// (HMAC-SHA256 under a key derived from the app's secret for this one use, `tokenvault-login-state-v1`)
/// binds the token name, the redirect URI and the time. `meta exchange --state` accepts it for that name
/// and redirect URI only, for 7 days; nothing needs to be stored in between. (Meta's code is single-use,
/// so a state seen twice completes at most one exchange per login the user makes.)
public enum LoginState {
    public static let maxAge: Int64 = 7 * 86_400

    public static func make(vault: Vault, name: String, app: String, redirectURI: String, now: Int64) throws -> String {
        "\(now).\(try mac(vault: vault, name: name, app: app, redirectURI: redirectURI, time: now))"
    }

    static func mac(vault: Vault, name: String, app: String, redirectURI: String, time: Int64) throws -> String {
        let (_, secret) = try vault.appSecret(app: app)
        // The key is the app secret MAC'd under a label (not a MAC keyed with the secret, which is what an
        // appsecret_proof is): no proof the vault hands out is ever a state.
        let label = Array("tokenvault-login-state-v1".utf8)
        let key = label.withUnsafeBytes { l in secret.withUnsafeBytes { HMACSHA256.mac(key: l, message: $0) } }
        let message = Array("\(name)\n\(redirectURI)\n\(time)".utf8)
        let mac = key.withUnsafeBytes { k in message.withUnsafeBytes { HMACSHA256.mac(key: k, message: $0) } }
        return String(hexString(mac).prefix(32))
    }

    /// Whether `state` was made for `name` (and `app`, `redirectURI`) within ``maxAge``; why not, when not.
    public static func problem(_ state: String, vault: Vault, name: String, app: String, redirectURI: String, now: Int64) throws -> String? {
        let parts = state.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let time = Int64(parts[0]) else { return "the state is not one this vault made" }
        let expected = try mac(vault: vault, name: name, app: app, redirectURI: redirectURI, time: time)
        guard constantTimeEqual(Array(parts[1].utf8), Array(expected.utf8)) else {
            return "the state was not made for \(name) with app \(app) and this redirect URI (a forged or mixed-up link)"
        }
        guard now - time <= maxAge, time <= now + 300 else { return "the link is older than 7 days: make a new one with `meta login --redirect-uri`" }
        return nil
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in a.indices { d |= a[i] ^ b[i] }
        return d == 0
    }
}
