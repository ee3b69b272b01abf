import Foundation
import MetaGraph

/// The closed set of states a Meta token is in, as `show` and `list` print them.
public enum TokenState: String, CaseIterable, Sendable, Codable {
    case ok
    /// Valid, but `expires_at` is within the warning window.
    case expiring
    /// Past `expires_at` (Meta: code 190 / 463, or the date has passed).
    case expired
    /// Valid, but `data_access_expires_at` is within the warning window.
    case dataAccessExpiring = "data_access_expiring"
    /// Valid, but data access has lapsed: the user must log in again.
    case dataAccessExpired = "data_access_expired"
    /// Valid, but a required scope (or a required target of one) is missing.
    case scopeMissing = "scope_missing"
    /// Revoked, or otherwise refused by Meta; or issued for another app.
    case invalid
    /// Never checked (or stored without an app, so it cannot be).
    case unchecked
}

/// What one `debug_token` answer means for a token, given what the admin requires of it.
public struct TokenEvaluation: Sendable, Equatable {
    public let state: TokenState
    /// Required scopes missing from `scopes`, and required targets missing from a required scope's
    /// `granular_scopes` (as `scope@target`).
    public let missing: [String]
    /// `app_id` is not the token's app's.
    public let appMismatch: Bool
    /// What admins are told about, once: a change of this key is news (a different error, a different
    /// missing scope); the same key again is not. The keys of earlier releases (`ok`, `expiring`,
    /// `data_access_expiring`, `invalid:190/460`) keep their form, and their `invalid:190/463` (expired)
    /// counts as `expired` (``sameNotice(_:_:)``), so an upgrade re-sends nothing already told. A data
    /// access window that has since closed (`data_access_expiring` to `data_access_expired`) is news.
    public let noticeKey: String

    /// Whether `previous` (a stored key, maybe an earlier release's) tells what `key` tells.
    public static func sameNotice(_ previous: String?, _ key: String) -> Bool {
        guard let previous else { return false }
        return previous == key || (previous == "invalid:190/463" && key == "expired")
    }

    public static func of(_ info: DebugTokenInfo, requiredScopes: [String], requiredTargets: [String], expectedAppId: String?,
                          now: Int64, warnDays: Int) -> TokenEvaluation {
        let mismatch = expectedAppId != nil && info.appId != nil && info.appId != expectedAppId
        if mismatch {
            return .init(state: .invalid, missing: [], appMismatch: true, noticeKey: "invalid:app_mismatch")
        }
        if !info.isValid {
            let expired = info.error?.subcode == 463 || (info.expiresAt.map { $0 != 0 && $0 <= now } ?? false)
            if expired { return .init(state: .expired, missing: [], appMismatch: false, noticeKey: "expired") }
            let key = "invalid:\(info.error?.code.map(String.init) ?? "?")/\(info.error?.subcode.map(String.init) ?? "-")"
            return .init(state: .invalid, missing: [], appMismatch: false, noticeKey: key)
        }
        if let e = info.expiresAt, e != 0, e <= now { return .init(state: .expired, missing: [], appMismatch: false, noticeKey: "expired") }
        if let d = info.dataAccessExpiresAt, d != 0, d <= now {
            return .init(state: .dataAccessExpired, missing: [], appMismatch: false, noticeKey: "data_access_expired")
        }
        let granted = Set(info.scopes ?? [])
        var missing = requiredScopes.filter { !granted.contains($0) }
        for scope in requiredScopes where granted.contains(scope) {
            let targets = Set(info.granularScopes?.first { $0.scope == scope }?.targetIds ?? [])
            // No granular entry for the scope: Meta grants it on everything the user can reach.
            guard info.granularScopes?.contains(where: { $0.scope == scope }) == true else { continue }
            missing += requiredTargets.filter { !targets.contains($0) }.map { "\(scope)@\($0)" }
        }
        if !missing.isEmpty {
            return .init(state: .scopeMissing, missing: missing, appMismatch: false, noticeKey: "scope_missing:" + missing.sorted().joined(separator: ","))
        }
        let horizon = now + Int64(warnDays) * 86_400
        if let e = info.expiresAt, e != 0, e <= horizon { return .init(state: .expiring, missing: [], appMismatch: false, noticeKey: "expiring") }
        if let d = info.dataAccessExpiresAt, d != 0, d <= horizon {
            return .init(state: .dataAccessExpiring, missing: [], appMismatch: false, noticeKey: "data_access_expiring")
        }
        return .init(state: .ok, missing: [], appMismatch: false, noticeKey: "ok")
    }
}
