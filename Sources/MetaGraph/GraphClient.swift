import Foundation
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where the Graph API is and how patiently to talk to it.
public struct GraphConfiguration: Sendable {
    /// `--graph-url` / `$TOKENVAULT_GRAPH_URL`; https, or http only to a loopback address (tests).
    public var baseURL: URL
    /// `--graph-version`.
    public var version: String
    /// The login dialog's host.
    public var dialogURL: URL
    public var timeout: TimeInterval = 15
    /// Attempts per call for transport and server errors. OAuth errors are never retried, nor is
    /// throttling: Meta asks for the whole app to back off (the error says for how long), which is the
    /// caller's to honour (the re-checker pauses its sweep), not a retry half a second later.
    public var maxAttempts = 3
    /// First retry delay; doubled for each further attempt.
    public var backoff: TimeInterval = 0.5

    public static let defaultBaseURL = URL(string: "https://graph.facebook.com")!
    /// The current Graph version (``GraphVersions``).
    public static let defaultVersion = GraphVersions.current

    public init(baseURL: URL = defaultBaseURL, version: String = defaultVersion,
                dialogURL: URL = URL(string: "https://www.facebook.com")!) {
        self.baseURL = baseURL
        self.version = version
        self.dialogURL = dialogURL
    }
}

/// What Meta says of the app's and its businesses' call budgets: the `X-App-Usage` header
/// (`{"call_count":…,"total_cputime":…,"total_time":…}`, percentages) and `X-Business-Use-Case-Usage`
/// (per business id, a list of `{type, call_count, total_cputime, total_time, estimated_time_to_regain_access}`).
public struct GraphUsage: Sendable, Equatable {
    /// The highest of the app's three percentages.
    public var appPercent: Int?
    /// The highest percentage of any business use case.
    public var businessPercent: Int?
    /// The longest `estimated_time_to_regain_access` announced, in minutes (0: not throttled).
    public var regainAccessMinutes: Int?

    public init(appPercent: Int? = nil, businessPercent: Int? = nil, regainAccessMinutes: Int? = nil) {
        self.appPercent = appPercent
        self.businessPercent = businessPercent
        self.regainAccessMinutes = regainAccessMinutes
    }

    /// The highest percentage of either budget.
    public var percent: Int? { [appPercent, businessPercent].compactMap { $0 }.max() }

    /// Parses the two headers; nil when neither is there or readable.
    public static func parse(appUsage: String?, businessUsage: String?) -> GraphUsage? {
        func number(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue ?? (v as? String).flatMap { Int($0) } }
        func object(_ text: String?) -> Any? { text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } }
        var u = GraphUsage()
        if let app = object(appUsage) as? [String: Any] {
            u.appPercent = ["call_count", "total_cputime", "total_time"].compactMap { number(app[$0]) }.max()
        }
        if let business = object(businessUsage) as? [String: Any] {
            for case let cases as [[String: Any]] in business.values {
                for c in cases {
                    if let p = ["call_count", "total_cputime", "total_time"].compactMap({ number(c[$0]) }).max() {
                        u.businessPercent = max(u.businessPercent ?? 0, p)
                    }
                    if let m = number(c["estimated_time_to_regain_access"]) { u.regainAccessMinutes = max(u.regainAccessMinutes ?? 0, m) }
                }
            }
        }
        return u == GraphUsage() ? nil : u
    }
}

/// An error object from the Graph API: `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.
public struct GraphAPIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var httpStatus: Int
    public var message: String
    public var type: String?
    public var code: Int?
    public var subcode: Int?
    public var fbtraceId: String?
    /// The usage headers that came with it (throttling says there how long to wait).
    public var usage: GraphUsage?

    /// Codes Meta uses for rate limiting: retry later with backoff.
    public var isThrottling: Bool {
        guard let code else { return false }
        return [4, 17, 32, 613].contains(code) || (80000...80014).contains(code)
    }

    /// How long Meta asks the app to wait, when it says (`estimated_time_to_regain_access`).
    public var retryAfter: TimeInterval? {
        guard let m = usage?.regainAccessMinutes, m > 0 else { return nil }
        return TimeInterval(m) * 60
    }

    public var description: String {
        var parts = ["Graph API error"]
        if let code { parts.append("code \(code)" + (subcode.map { "/\($0)" } ?? "")) }
        if let type { parts.append(type) }
        var text = parts.joined(separator: " ") + ": " + message
        if let fbtraceId { text += " (fbtrace_id \(fbtraceId))" }
        return text
    }
}

public enum GraphClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case insecureURL(String)
    case transport(String)
    case badResponse(String)
    case api(GraphAPIError)
    /// `debug_token` itself was refused with an OAuth error: the app's own credential (id and secret) is
    /// what Meta rejected (the secret was reset, the app removed), not the token being checked.
    case appCredentialRejected(GraphAPIError)

    public var description: String {
        switch self {
        case .insecureURL(let u): return "refusing the Graph URL \(u): use https (plain http is allowed only to a loopback address)"
        case .transport(let why): return "could not reach the Graph API: \(why)"
        case .badResponse(let why): return "unexpected Graph API response: \(why)"
        case .api(let e): return e.description
        case .appCredentialRejected(let e): return "Meta rejected the app's credentials (app id and secret): \(e)"
        }
    }
}

/// `{"access_token", "token_type", "expires_in"}` from `/oauth/access_token`.
public struct AccessTokenGrant: Sendable {
    public let accessToken: String
    public let tokenType: String?
    /// Seconds; nil for a token that does not expire.
    public let expiresIn: Int64?
}

/// `data` of `/debug_token`.
public struct DebugTokenInfo: Sendable, Equatable, Codable {
    public struct Granular: Sendable, Equatable, Codable {
        public var scope: String
        public var targetIds: [String]?
        enum CodingKeys: String, CodingKey { case scope, targetIds = "target_ids" }
    }
    public struct TokenError: Sendable, Equatable, Codable {
        public var code: Int?
        public var subcode: Int?
        public var message: String?
        public init(code: Int? = nil, subcode: Int? = nil, message: String? = nil) {
            self.code = code
            self.subcode = subcode
            self.message = message
        }
    }
    public var appId: String?
    public var type: String?
    public var application: String?
    /// 0 means never.
    public var expiresAt: Int64?
    public var dataAccessExpiresAt: Int64?
    public var isValid: Bool
    public var issuedAt: Int64?
    public var scopes: [String]?
    public var granularScopes: [Granular]?
    public var userId: String?
    public var error: TokenError?

    enum CodingKeys: String, CodingKey {
        case appId = "app_id", type, application, expiresAt = "expires_at", dataAccessExpiresAt = "data_access_expires_at"
        case isValid = "is_valid", issuedAt = "issued_at", scopes, granularScopes = "granular_scopes", userId = "user_id", error
    }
}

/// A small Graph API client: the three calls the vault makes, with timeouts, bounded retries with backoff
/// on transport errors and throttling (never on OAuth errors), and errors that never carry a secret.
public final class GraphClient: Sendable {
    public let configuration: GraphConfiguration
    private let session: URLSession
    private let usage = Mutex<GraphUsage?>(nil)

    public init(configuration: GraphConfiguration = GraphConfiguration()) throws {
        try Self.checkSecure(configuration.baseURL)
        self.configuration = configuration
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = configuration.timeout
        c.timeoutIntervalForResource = configuration.timeout * 2
        c.httpCookieStorage = nil
        c.urlCache = nil
        session = URLSession(configuration: c)
    }

    /// https anywhere; http only to 127.0.0.0/8, ::1 or localhost.
    public static func checkSecure(_ url: URL) throws {
        let scheme = url.scheme?.lowercased()
        if scheme == "https" { return }
        let host = (url.host ?? "").lowercased()
        let loopback = host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
        guard scheme == "http", loopback else { throw GraphClientError.insecureURL(url.absoluteString) }
    }

    /// `GET /{ver}/oauth/access_token?client_id&redirect_uri&client_secret&code`.
    public func exchangeCode(appId: String, appSecret: String, code: String, redirectURI: String) async throws -> AccessTokenGrant {
        try grant(try await get("oauth/access_token", [
            ("client_id", appId), ("redirect_uri", redirectURI), ("client_secret", appSecret), ("code", code),
        ], secrets: [appSecret, code]))
    }

    /// `GET /{ver}/oauth/access_token?grant_type=fb_exchange_token&…`: a long-lived token for a short-lived one;
    /// with `setTokenExpiresIn60Days`, a fresh 60-day token for an expiring system-user token.
    public func exchangeForLongLived(appId: String, appSecret: String, token: String,
                                     setTokenExpiresIn60Days: Bool = false) async throws -> AccessTokenGrant {
        var query = [("grant_type", "fb_exchange_token"), ("client_id", appId), ("client_secret", appSecret), ("fb_exchange_token", token)]
        if setTokenExpiresIn60Days { query.append(("set_token_expires_in_60_days", "true")) }
        return try grant(try await get("oauth/access_token", query, secrets: [appSecret, token]))
    }

    /// One permission of `GET /me/permissions`: `granted`, `declined` or `expired`.
    public struct Permission: Sendable, Equatable, Codable {
        public var permission: String
        public var status: String
    }

    /// `GET /{ver}/me/permissions`: what the token's user granted, declined or let expire. With the app's
    /// proof (`appsecret_proof`, `appsecret_time`), for apps that require one.
    public func permissions(_ token: String, proof: (hex: String, time: Int64?)?) async throws -> [Permission] {
        var query = [("access_token", token)]
        if let proof {
            query.append(("appsecret_proof", proof.hex))
            if let t = proof.time { query.append(("appsecret_time", String(t))) }
        }
        let body = try await get("me/permissions", query, secrets: [token])
        struct Envelope: Decodable { var data: [Permission] }
        do { return try JSONDecoder().decode(Envelope.self, from: body).data } catch {
            throw GraphClientError.badResponse("/me/permissions' reply has no usable \"data\"")
        }
    }

    /// `GET /{ver}/debug_token?input_token&access_token=APP_ID|APP_SECRET`. An OAuth error on the call
    /// itself is ``GraphClientError/appCredentialRejected(_:)``: a dead token is an answer (HTTP 200, `is_valid` false).
    public func debugToken(_ token: String, appId: String, appSecret: String) async throws -> DebugTokenInfo {
        let body: Data
        do {
            body = try await get("debug_token", [("input_token", token), ("access_token", "\(appId)|\(appSecret)")],
                                 secrets: [token, appSecret])
        } catch GraphClientError.api(let e) where !e.isThrottling && e.httpStatus < 500 && [101, 102, 190].contains(e.code ?? 0) {
            throw GraphClientError.appCredentialRejected(e)
        }
        struct Envelope: Decodable { var data: DebugTokenInfo }
        do { return try JSONDecoder().decode(Envelope.self, from: body).data } catch {
            throw GraphClientError.badResponse("debug_token's reply has no usable \"data\"")
        }
    }

    /// The login dialog a user opens to grant the app its scopes. `rerequest` asks again for permissions
    /// the user declined before (`auth_type=rerequest`; without it the dialog does not); `configId` is a
    /// Facebook Login for Business configuration, which takes the place of `scope`.
    public func loginDialogURL(appId: String, redirectURI: String, state: String, scopes: [String],
                               rerequest: Bool = false, configId: String? = nil) -> URL {
        var c = URLComponents(url: configuration.dialogURL.appendingPathComponent("\(configuration.version)/dialog/oauth"),
                              resolvingAgainstBaseURL: false)!
        var items: [URLQueryItem] = [.init(name: "client_id", value: appId), .init(name: "redirect_uri", value: redirectURI),
                                     .init(name: "state", value: state)]
        if let configId { items.append(.init(name: "config_id", value: configId)) } else {
            items.append(.init(name: "scope", value: scopes.joined(separator: ",")))
        }
        if rerequest { items.append(.init(name: "auth_type", value: "rerequest")) }
        c.queryItems = items
        return c.url!
    }

    /// The usage Meta reported with the last answer (see ``GraphUsage``), for pacing.
    public var lastUsage: GraphUsage? { usage.withLock { $0 } }

    // MARK: - transport

    private func grant(_ body: Data) throws -> AccessTokenGrant {
        guard let o = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let token = o["access_token"] as? String else {
            throw GraphClientError.badResponse("no access_token in the reply")
        }
        return AccessTokenGrant(accessToken: token, tokenType: o["token_type"] as? String, expiresIn: (o["expires_in"] as? NSNumber)?.int64Value)
    }

    private func get(_ path: String, _ query: [(String, String)], secrets: [String]) async throws -> Data {
        var c = URLComponents(url: configuration.baseURL.appendingPathComponent("\(configuration.version)/\(path)"),
                              resolvingAgainstBaseURL: false)!
        c.percentEncodedQueryItems = query.map { URLQueryItem(name: $0.0, value: Self.encode($0.1)) }
        var request = URLRequest(url: c.url!)
        request.timeoutInterval = configuration.timeout
        request.setValue("TokenVault/0.1", forHTTPHeaderField: "User-Agent")
        var attempt = 0
        while true {
            attempt += 1
            var failure: GraphClientError
            do {
                let (data, response) = try await session.data(for: request)
                let http = response as? HTTPURLResponse
                let status = http?.statusCode ?? 0
                let reported = GraphUsage.parse(appUsage: http?.value(forHTTPHeaderField: "X-App-Usage"),
                                                businessUsage: http?.value(forHTTPHeaderField: "X-Business-Use-Case-Usage"))
                usage.withLock { $0 = reported }
                if (200..<300).contains(status) { return data }
                var apiError = Self.parseError(data, status: status, secrets: secrets)
                apiError.usage = reported
                failure = .api(apiError)
                // OAuth errors, other client errors and throttling are final; server errors may pass.
                guard !apiError.isThrottling, status >= 500, apiError.code == nil else { throw failure }
            } catch let e as GraphClientError {
                throw e
            } catch {
                failure = .transport(Self.redact((error as? URLError).map { "\($0.code.rawValue): \($0.localizedDescription)" } ?? "\(error)", secrets))
            }
            guard attempt < configuration.maxAttempts else { throw failure }
            try await Task.sleep(nanoseconds: UInt64(configuration.backoff * pow(2, Double(attempt - 1)) * 1e9))
        }
    }

    static func parseError(_ data: Data, status: Int, secrets: [String]) -> GraphAPIError {
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let e = o["error"] as? [String: Any] else {
            return GraphAPIError(httpStatus: status, message: "HTTP \(status) without a Graph error object")
        }
        return GraphAPIError(httpStatus: status, message: redact(e["message"] as? String ?? "no message", secrets),
                             type: e["type"] as? String, code: (e["code"] as? NSNumber)?.intValue,
                             subcode: (e["error_subcode"] as? NSNumber)?.intValue, fbtraceId: e["fbtrace_id"] as? String)
    }

    /// Removes any secret a server (or a transport error) echoed back.
    static func redact(_ text: String, _ secrets: [String]) -> String {
        secrets.filter { $0.count >= 4 }.reduce(text) { $0.replacingOccurrences(of: $1, with: "[redacted]") }
    }

    /// Query encoding that also escapes `+`, `&`, `=` and `|` (URLComponents leaves some of them bare).
    static func encode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
