import Foundation
import MetaGraph
import Synchronization
import TestSupport
import Testing
import VaultAudit
import VaultCore
import VaultCrypto
import VaultStores
@testable import MetaLifecycle
#if canImport(Glibc)
import Glibc
#endif



let appSecret = "app-secret-9f8e7d"

/// Records audit events in memory.
final class MemoryAudit: AuditSink, Sendable {
    let events = Mutex<[AuditEvent]>([])
    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        events.withLock { $0.append(event) }
        completion(.success(()))
    }
    var actions: [String] { events.withLock { $0.map { "\($0.action):\($0.outcome.rawValue)" } } }
}

struct Fixture {
    let dir = TempDir()
    let vault: Vault
    let graph: FakeGraph
    let audit = MemoryAudit()

    init(_ handler: @escaping FakeGraph.Handler) async throws {
        vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        try vault.addApp(name: "acme", appId: "138483919580948", secret: secret(appSecret))
        graph = try await FakeGraph(handler)
    }

    func service(notify: String? = nil, backoff: TimeInterval = 0.01) throws -> MetaTokenService {
        var config = GraphConfiguration(baseURL: URL(string: graph.url)!)
        config.backoff = backoff
        return MetaTokenService(vault: vault, graph: try GraphClient(configuration: config), audit: audit,
                                actor: AuditActor(uid: 0, gid: 0, pid: 1), channel: .cli,
                                notifier: notify.map { Notifier(command: $0) })
    }
}

@Suite("Meta token lifecycle against a fake Graph API")
struct MetaLifecycleTests {
    @Test func exchangeStoresTheTokenAndChecksIt() async throws {
        let f = try await Fixture { req in
            if req.path.hasSuffix("/oauth/access_token") {
                guard req.query["client_id"] == "138483919580948", req.query["client_secret"] == appSecret,
                      req.query["code"] == "AQB-code", req.query["redirect_uri"] == "https://example.com/cb" else {
                    return FakeGraph.error(400, code: 100, subcode: 36007, message: "Invalid verification code format.")
                }
                return FakeGraph.ok(#"{"access_token":"EAAB-exchanged","token_type":"bearer","expires_in":5183944}"#)
            }
            #expect(req.query["access_token"] == "138483919580948|\(appSecret)")
            return FakeGraph.debug(valid: true, expiresAt: 1_900_000_000, dataAccess: 1_900_000_000)
        }
        let outcome = try await f.service().exchange(name: "acme/ads", app: "acme", code: "AQB-code", redirectURI: "https://example.com/cb")
        #expect(outcome?.state == "ok")
        #expect(try f.vault.get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-exchanged")
        let r = try f.vault.show(name: "acme/ads")
        #expect(r.app == "acme" && r.kind == "user" && r.valid == true && r.tokenType == "USER" && r.expiresAt == 1_900_000_000)
        #expect(r.scopes == #"["ads_read","ads_management"]"#)
        #expect(r.granularScopes?.contains("act_101") == true)
        #expect(f.audit.actions == ["meta_exchange:granted", "meta_check:granted"])
        await f.graph.stop()
    }

    @Test func rejectedCodeIsNotRetriedAndStoresNothing() async throws {
        let f = try await Fixture { _ in FakeGraph.error(400, code: 100, subcode: 36007, message: "Invalid verification code format.") }
        await #expect {
            try await f.service().exchange(name: "acme/ads", app: "acme", code: "bad", redirectURI: "https://example.com/cb")
        } throws: { error in
            guard case GraphClientError.api(let e) = error else { return false }
            return e.code == 100 && e.subcode == 36007 && e.fbtraceId == "AbCdEf123"
                && TokenDiagnosis.of(code: e.code, subcode: e.subcode).action.contains("login again")
        }
        #expect(f.graph.count("oauth/access_token") == 1)
        #expect(try f.vault.list().isEmpty)
        #expect(f.audit.actions == ["meta_exchange:failed"])
        await f.graph.stop()
    }

    @Test func extendReplacesTheToken() async throws {
        let f = try await Fixture { req in
            if req.query["grant_type"] == "fb_exchange_token" {
                #expect(req.query["fb_exchange_token"] == "EAAB-short")
                return FakeGraph.ok(#"{"access_token":"EAAB-long-lived","token_type":"bearer","expires_in":5184000}"#)
            }
            return FakeGraph.debug(valid: true, expiresAt: Int64(Date().timeIntervalSince1970) + 5_184_000)
        }
        try f.vault.put(name: "acme/ads", secret: secret("EAAB-short"), kind: .user, app: "acme")
        let created = try f.vault.show(name: "acme/ads").createdAt
        try await f.service().extend(name: "acme/ads")
        #expect(try f.vault.get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-long-lived")
        #expect(try f.vault.show(name: "acme/ads").createdAt == created)
        #expect(try f.vault.show(name: "acme/ads").kind == "user")
        await f.graph.stop()
    }

    @Test func checksStoreValidityExpiryAndReasons() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let f = try await Fixture { req in
            switch req.query["input_token"] {
            case "EAAB-valid": return FakeGraph.debug(valid: true, expiresAt: now + 40 * 86_400)
            case "EAAB-system": return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: 0)
            case "EAAB-expired": return FakeGraph.debug(valid: false, expiresAt: now - 10, code: 190, subcode: 463)
            case "EAAB-password": return FakeGraph.debug(valid: false, code: 190, subcode: 460)
            default: return FakeGraph.debug(valid: false, code: 190)
            }
        }
        for (name, token, kind) in [("v", "EAAB-valid", TokenKind.user), ("s", "EAAB-system", .systemUser),
                                    ("e", "EAAB-expired", .user), ("p", "EAAB-password", .user), ("u", "EAAB-unknown", .user)] {
            try f.vault.put(name: name, secret: secret(token), kind: kind, app: "acme")
        }
        let service = try f.service()
        let v = try await service.check(name: "v")
        #expect(v.state == "ok" && v.info.isValid && v.diagnosis == nil)
        let s = try await service.check(name: "s")
        #expect(s.state == "ok" && s.info.expiresAt == 0, "a never-expiring system user token is fine")
        #expect(try f.vault.show(name: "s").expiresAt == 0 && f.vault.show(name: "s").tokenType == "SYSTEM_USER")
        let e = try await service.check(name: "e")
        #expect(e.state == "expired" && e.evaluation.noticeKey == "expired" && e.diagnosis?.reason == "the token expired")
        let p = try await service.check(name: "p")
        #expect(p.state == "invalid" && p.evaluation.noticeKey == "invalid:190/460" && p.diagnosis?.reason == "the user changed their password")
        let stored = try f.vault.show(name: "p")
        #expect(stored.valid == false && stored.lastError?.contains("\"subcode\":460") == true && stored.lastError?.contains("re-authorise") == true)
        let u = try await service.check(name: "u")
        #expect(u.state == "invalid" && u.evaluation.noticeKey == "invalid:190/-" && u.diagnosis?.action == "get a new token")
        #expect(try service.dueForCheck(interval: 86_400).isEmpty, "everything was just checked")
        #expect(try service.dueForCheck(interval: 0).count == 5)
        await f.graph.stop()
    }

    @Test func serverErrorsAreRetriedThrottlingAndOAuthErrorsAreNot() async throws {
        let calls = Mutex(0)
        let f = try await Fixture { _ in
            let n = calls.withLock { $0 += 1; return $0 }
            return n <= 2 ? (503, "upstream hiccup") : FakeGraph.debug(valid: true)
        }
        try f.vault.put(name: "t", secret: secret("EAAB-t"), app: "acme")
        let outcome = try await f.service().check(name: "t")
        #expect(outcome.info.isValid && f.graph.count("debug_token") == 3)

        f.graph.setHandler { _ in FakeGraph.error(400, code: 190, subcode: 460, message: "Error validating access token: password changed") }
        await #expect(throws: GraphClientError.self) { try await f.service().check(name: "t") }
        #expect(f.graph.count("debug_token") == 4, "an OAuth error is final")

        // Throttling is the whole app's to honour (the sweep pauses): not retried half a second later.
        f.graph.setHandler { _ in FakeGraph.error(400, code: 613, message: "Calls to this api have exceeded the rate limit.") }
        f.graph.setHeaders(["X-Business-Use-Case-Usage": #"{"101":[{"type":"ads_management","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":12}]}"#])
        do {
            _ = try await f.service().check(name: "t")
            Issue.record("expected throttling")
        } catch GraphClientError.api(let e) {
            #expect(e.isThrottling && e.retryAfter == 720 && e.usage?.businessPercent == 100)
        }
        #expect(f.graph.count("debug_token") == 5, "one call, no retry")
        await f.graph.stop()
    }

    @Test func secretsNeverAppearInErrors() async throws {
        let f = try await Fixture { req in
            // A hostile or buggy server echoing what it was sent.
            FakeGraph.error(400, code: 190, message: "bad token \(req.query["input_token"] ?? "") secret \(appSecret)")
        }
        try f.vault.put(name: "t", secret: secret("EAAB-echoed-token-123"), app: "acme")
        do {
            _ = try await f.service().check(name: "t")
            Issue.record("expected an error")
        } catch {
            let text = "\(error) \(String(reflecting: error))"
            #expect(!text.contains("EAAB-echoed-token-123") && !text.contains(appSecret) && text.contains("[redacted]"))
        }
        for event in f.audit.events.withLock({ $0 }) {
            #expect(!(event.reason ?? "").contains("EAAB-echoed") && !(event.reason ?? "").contains(appSecret))
        }
        await f.graph.stop()
    }

    @Test func plainHTTPOnlyToLoopback() throws {
        #expect(throws: GraphClientError.self) { try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "http://graph.example.com")!)) }
        #expect(throws: GraphClientError.self) { try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "http://10.0.0.1:8080")!)) }
        _ = try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "https://graph.facebook.com")!))
        _ = try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "http://127.0.0.1:1234")!))
        _ = try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "http://localhost:1234")!))
        _ = try GraphClient(configuration: GraphConfiguration(baseURL: URL(string: "http://[::1]:1234")!))
    }

    @Test func notificationsOncePerChangeAndRetriedAfterAFailure() async throws {
        let invalid = Mutex(true)
        let f = try await Fixture { _ in invalid.withLock { $0 } ? FakeGraph.debug(valid: false, code: 190, subcode: 460) : FakeGraph.debug(valid: true) }
        try f.vault.put(name: "acme/ads", secret: secret("EAAB-n"), app: "acme")
        let inbox = f.dir.path + "/inbox"
        let flaky = f.dir.path + "/fail-once"
        _ = FileManager.default.createFile(atPath: flaky, contents: Data())
        // Fails (and removes its marker) the first time; appends the JSON to the inbox after that.
        let command = "if [ -e \(flaky) ]; then rm \(flaky); echo 'smtp down' >&2; exit 1; fi; cat >> \(inbox)"
        let service = try f.service(notify: command)

        let first = try await service.check(name: "acme/ads")
        #expect(first.changed && first.state == "invalid" && first.evaluation.noticeKey == "invalid:190/460")
        var (sent, failed) = await service.deliverDueNotifications()
        #expect(sent == 0 && failed == 1)
        let owed = try service.notificationState(token: "acme/ads")
        #expect(owed?.pending == true && owed?.attempts == 1 && owed?.lastError?.contains("smtp down") == true)
        #expect(f.audit.actions.contains("notification_failed:failed"))

        (sent, failed) = await service.deliverDueNotifications()
        #expect(sent == 0 && failed == 0, "not due yet: backoff")
        (sent, failed) = await service.deliverDueNotifications(now: MetaTokenService.now + 61)
        #expect(sent == 1 && failed == 0)
        let delivered = try String(contentsOfFile: inbox, encoding: .utf8)
        let json = try JSONSerialization.jsonObject(with: Data(delivered.utf8)) as? [String: Any]
        #expect(json?["event"] as? String == "token_invalid" && json?["token"] as? String == "acme/ads")
        #expect((json?["action"] as? String)?.contains("meta login") == true)
        #expect(!delivered.contains("EAAB-n") && !delivered.contains(appSecret))
        #expect(delivered.contains("\"acme/ads\"") && !delivered.contains("\\/"), "JSON for people writes / as it is")

        // Still invalid: no new notification.
        #expect(try await service.check(name: "acme/ads").changed == false)
        (sent, failed) = await service.deliverDueNotifications(now: MetaTokenService.now + 10_000)
        #expect(sent == 0)
        // Fixed, then broken again: one more notification.
        invalid.withLock { $0 = false }
        #expect(try await service.check(name: "acme/ads").state == "ok")
        invalid.withLock { $0 = true }
        #expect(try await service.check(name: "acme/ads").changed)
        (sent, _) = await service.deliverDueNotifications()
        #expect(sent == 1)
        #expect(try String(contentsOfFile: inbox, encoding: .utf8).split(separator: "\n").count == 2)
        await f.graph.stop()
    }

    @Test func expiringSoonIsAStateToo() async throws {
        let soon = Int64(Date().timeIntervalSince1970) + 2 * 86_400
        let f = try await Fixture { _ in FakeGraph.debug(valid: true, expiresAt: soon) }
        try f.vault.put(name: "t", secret: secret("EAAB-soon"), app: "acme")
        let service = try f.service()
        let o = try await service.check(name: "t")
        #expect(o.state == "expiring" && o.changed)
        #expect(try service.dueForCheck(interval: 86_400, nearExpiryInterval: 0) == ["t"], "near expiry: checked sooner")
        await f.graph.stop()
    }

    @Test func loopbackRedirectRefusesAForgedState() async throws {
        let redirect = try LoopbackRedirect()
        let task = Task.detached { try redirect.waitForCode(timeout: 10) }
        func hit(_ query: String) async throws -> Int {
            let (_, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(redirect.port)/callback?\(query)")!)
            return (response as? HTTPURLResponse)?.statusCode ?? 0
        }
        #expect(try await hit("code=forged&state=0123456789abcdef") == 400)
        #expect(try await hit("code=AQB-real&state=\(redirect.state)") == 200)
        #expect(try await task.value == "AQB-real")
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// An audit sink that cannot write (a full audit disk, as the daemon's log would report it).
final class FailingAudit: AuditSink, Sendable {
    struct Full: Error {}
    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        completion(.failure(Full()))
    }
}

@Suite("Meta lifecycle: no change without its audit record")
struct MetaAuditBeforeCommitTests {
    /// With the audit log unwritable, exchange, extend and check change nothing: each step's record is made
    /// durable inside the transaction that would commit it, or the transaction rolls back.
    @Test func exchangeExtendAndCheckChangeNothingWhenTheirRecordCannotBeWritten() async throws {
        let f = try await Fixture { req in
            if req.path.hasSuffix("/oauth/access_token") {
                if req.query["grant_type"] == "fb_exchange_token" {
                    return FakeGraph.ok(#"{"access_token":"EAAB-long-lived","token_type":"bearer","expires_in":5184000}"#)
                }
                return FakeGraph.ok(#"{"access_token":"EAAB-exchanged","token_type":"bearer","expires_in":5183944}"#)
            }
            return FakeGraph.debug(valid: false, code: 190, subcode: 460)
        }
        var config = GraphConfiguration(baseURL: URL(string: f.graph.url)!)
        config.backoff = 0.01
        let service = MetaTokenService(vault: f.vault, graph: try GraphClient(configuration: config), audit: FailingAudit(),
                                       actor: AuditActor(uid: 0, gid: 0, pid: 1), channel: .cli, notifier: nil)
        await #expect(throws: (any Error).self) {
            try await service.exchange(name: "acme/new", app: "acme", code: "AQB-code", redirectURI: "https://example.com/cb")
        }
        #expect(throws: StoreError.self) { try f.vault.show(name: "acme/new") }

        try f.vault.put(name: "acme/ads", secret: secret("EAAB-short"), kind: .user, app: "acme")
        await #expect(throws: (any Error).self) { try await service.extend(name: "acme/ads") }
        #expect(try f.vault.get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-short")

        await #expect(throws: (any Error).self) { try await service.check(name: "acme/ads") }
        let row = try f.vault.show(name: "acme/ads")
        #expect(row.valid == nil && row.checkedAt == nil, "the failed check's verdict was not stored")
        await f.graph.stop()
    }
}
