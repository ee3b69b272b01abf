import Foundation
import Logging
import MetaGraph
import Synchronization
import TestSupport
import Testing
import TokenVaultClient
import VaultCore
import VaultCrypto
@testable import MetaLifecycle
#if canImport(Glibc)
import Glibc
#endif

extension Fixture {
    func fleetService(notify: String? = nil, redirect: String? = nil) throws -> MetaTokenService {
        var config = GraphConfiguration(baseURL: URL(string: graph.url)!)
        config.backoff = 0.01
        return MetaTokenService(vault: vault, graph: try GraphClient(configuration: config), audit: audit,
                                actor: AuditActor(uid: 0, gid: 0, pid: 1), channel: .daemon,
                                notifier: notify.map { Notifier(command: $0) }, loginRedirectURI: redirect)
    }

    func rechecker(_ service: MetaTokenService, options: Rechecker.Options = Rechecker.Options()) -> Rechecker {
        Rechecker(service: service, interval: 86_400, logger: Logger(label: "test"), options: options)
    }

    /// The JSON documents the notify command got, in order.
    func inbox(_ path: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}

@Suite("Keeping a fleet of Meta tokens alive")
struct MetaFleetTests {
    @Test func aDroppedScopeIsScopeMissingOnceAndRestoringItIsResolved() async throws {
        let scopes = Mutex(["ads_read", "ads_management"])
        let targets = Mutex(["act_101"])
        let f = try await Fixture { _ in FakeGraph.debug(valid: true, scopes: scopes.withLock { $0 }, targets: targets.withLock { $0 }) }
        try f.vault.put(name: "acme/ads", secret: secret("EAAB-scopes"), kind: .user, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)", redirect: "https://ads.example.com/fb-callback")
        try service.require(name: "acme/ads", scopes: ["ads_read", "ads_management"], targets: ["act_101"])
        #expect(try service.state(of: "acme/ads")?.required == ["ads_read", "ads_management"])

        let fine = try await service.check(name: "acme/ads")
        #expect(fine.state == "ok" && fine.changed)
        #expect(await service.deliverDueNotifications().0 == 0, "a first check that finds the token fine is not news")

        scopes.withLock { $0 = ["ads_read"] }
        let dropped = try await service.check(name: "acme/ads")
        #expect(dropped.state == "scope_missing" && dropped.evaluation.missing == ["ads_management"] && dropped.changed)
        #expect(try await service.check(name: "acme/ads").changed == false, "the same problem again is not news")
        #expect(await service.deliverDueNotifications().0 == 1)
        var notes = f.inbox(inbox)
        #expect(notes.count == 1 && notes[0]["event"] as? String == "scope_missing" && notes[0]["missing"] as? [String] == ["ads_management"])
        let dialog = try #require(notes[0]["dialog_url"] as? String)
        let items = URLComponents(string: dialog)?.queryItems ?? []
        #expect(items.contains { $0.name == "auth_type" && $0.value == "rerequest" }, "the link re-asks the declined permission")
        #expect(items.first { $0.name == "scope" }?.value?.contains("ads_management") == true)
        #expect(items.first { $0.name == "redirect_uri" }?.value == "https://ads.example.com/fb-callback")
        let state = try #require(items.first { $0.name == "state" }?.value)
        #expect(try LoginState.problem(state, vault: f.vault, name: "acme/ads", app: "acme", redirectURI: "https://ads.example.com/fb-callback",
                                       now: MetaTokenService.now) == nil)
        let summary = notes[0]["summary"] as? String ?? ""
        #expect(summary.contains("Facebook user 10215241773831025") && summary.contains("lacks ads_management") && summary.contains(dialog))

        // Back, then the target goes: a different missing piece is news of its own.
        scopes.withLock { $0 = ["ads_read", "ads_management"] }
        #expect(try await service.check(name: "acme/ads").state == "ok")
        #expect(await service.deliverDueNotifications().0 == 1)
        targets.withLock { $0 = ["act_202"] }
        let noTarget = try await service.check(name: "acme/ads")
        #expect(noTarget.state == "scope_missing" && noTarget.evaluation.missing == ["ads_management@act_101"])
        #expect(await service.deliverDueNotifications().0 == 1)
        notes = f.inbox(inbox)
        #expect(notes.map { $0["event"] as? String } == ["scope_missing", "resolved", "scope_missing"])
        #expect(try f.vault.show(name: "acme/ads").valid == true, "Meta still calls it valid: the state says what is wrong")
        await f.graph.stop()
    }

    @Test func aThrottledSweepStopsCallingUntilTheAnnouncedTime() async throws {
        let throttled = Mutex(true)
        let f = try await Fixture { _ in
            throttled.withLock { $0 } ? FakeGraph.error(400, code: 80004, message: "There have been too many calls to this ad-account.")
                                      : FakeGraph.debug(valid: true)
        }
        f.graph.setHeaders(["X-Business-Use-Case-Usage": #"{"101":[{"type":"ads_management","call_count":100,"total_cputime":10,"total_time":10,"estimated_time_to_regain_access":30}]}"#])
        for n in 1...3 { try f.vault.put(name: "acme/t\(n)", secret: secret("EAAB-t\(n)"), kind: .user, app: "acme") }
        let service = try f.fleetService()
        let sweeper = f.rechecker(service)
        let t0 = MetaTokenService.now
        await sweeper.runOnce(now: t0)
        #expect(f.graph.count("debug_token") == 1, "the first throttled answer stops the sweep")
        // As long as Meta said, from when it said so (the call itself may take a moment here).
        let until = try #require(sweeper.sweeps.paused?.until)
        #expect(until >= t0 + 30 * 60 && until <= t0 + 30 * 60 + 30)
        await sweeper.runOnce(now: t0 + 60)
        throttled.withLock { $0 = false }
        f.graph.setHeaders([:])
        await sweeper.runOnce(now: until - 1)
        #expect(f.graph.count("debug_token") == 1, "no call before the announced time")
        await sweeper.runOnce(now: until + 1)
        #expect(f.graph.count("debug_token") == 4 && sweeper.sweeps.lastSweep?.checked == 3)

        // Usage near the limit on a good answer: hold back too (5 minutes when Meta names no time).
        for n in 1...3 { try f.vault.put(name: "acme/u\(n)", secret: secret("EAAB-u\(n)"), kind: .user, app: "acme") }
        f.graph.setHeaders(["X-App-Usage": #"{"call_count":95,"total_cputime":12,"total_time":20}"#])
        let t1 = t0 + 40 * 60
        await sweeper.runOnce(now: t1)
        #expect(f.graph.count("debug_token") == 5)
        #expect((t1 + 300...t1 + 330).contains(sweeper.sweeps.paused?.until ?? 0))
        await f.graph.stop()
    }

    @Test func anExpiringSystemUserTokenIsRefreshedFor60MoreDays() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let refreshed = Mutex(false)
        let f = try await Fixture { req in
            if req.path.hasSuffix("/oauth/access_token") {
                guard req.query["grant_type"] == "fb_exchange_token", req.query["set_token_expires_in_60_days"] == "true",
                      req.query["fb_exchange_token"] == "EAAB-sys-old", req.query["client_secret"] == appSecret else {
                    return FakeGraph.error(400, code: 100, message: "bad refresh")
                }
                refreshed.withLock { $0 = true }
                return FakeGraph.ok(#"{"access_token":"EAAB-sys-new","token_type":"bearer","expires_in":5184000}"#)
            }
            return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: refreshed.withLock { $0 } ? now + 5_184_000 : now + 5 * 86_400)
        }
        try f.vault.put(name: "acme/sys", secret: secret("EAAB-sys-old"), kind: .systemUser, app: "acme")
        try f.vault.put(name: "acme/forever", secret: secret("EAAB-forever"), kind: .systemUser, app: "acme")
        let service = try f.fleetService()
        _ = try await service.check(name: "acme/sys")
        let before = try f.vault.changes(after: 0).last?.seq ?? 0
        #expect(try service.dueForRefresh(days: 15, userTokens: false) == ["acme/sys"])
        await f.rechecker(service).runOnce()
        #expect(try f.vault.get(name: "acme/sys").secret.unsafeStringCopy() == "EAAB-sys-new")
        let changes = try f.vault.changes(after: before)
        #expect(changes.contains { $0.name == "acme/sys" && $0.kind == .refreshed }, "what watch clients hear")
        #expect(f.audit.actions.contains("meta_refresh:granted"))
        #expect(try service.state(of: "acme/sys")?.refreshedAt != nil)
        #expect(try service.dueForRefresh(days: 15, userTokens: false).isEmpty, "60 days from now: not due")
        let calls = f.graph.requests.filter { $0.path.hasSuffix("/oauth/access_token") }
        #expect(calls.count == 1, "a never-expiring token is not refreshed")
        await f.graph.stop()
    }

    @Test func aFailedRefreshIsNotifiedOnce() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let f = try await Fixture { req in
            req.path.hasSuffix("/oauth/access_token") ? FakeGraph.error(400, code: 190, subcode: 463, message: "Session has expired")
                : FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: now + 3 * 86_400)
        }
        try f.vault.put(name: "acme/sys", secret: secret("EAAB-sys"), kind: .systemUser, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        await #expect(throws: GraphClientError.self) { try await service.refresh(name: "acme/sys") }
        await #expect(throws: GraphClientError.self) { try await service.refresh(name: "acme/sys") }
        await service.deliverDueNotifications()
        let notes = f.inbox(inbox).filter { $0["event"] as? String == "refresh_failed" }
        #expect(notes.count == 1 && (notes[0]["action"] as? String)?.contains("Business Manager") == true)
        #expect(try service.state(of: "acme/sys")?.refreshError?.contains("463") == true)
        #expect(try service.dueForRefresh(days: 15, userTokens: false).isEmpty, "not retried at once after a failure")
        await f.graph.stop()
    }

    @Test func aTokenFromAnotherAppIsFlagged() async throws {
        let f = try await Fixture { _ in FakeGraph.debug(valid: true, appId: "999000999") }
        try f.vault.put(name: "acme/foreign", secret: secret("EAAB-foreign"), kind: .user, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        let o = try await service.check(name: "acme/foreign")
        #expect(o.state == "invalid" && o.evaluation.appMismatch && o.evaluation.noticeKey == "invalid:app_mismatch")
        let m = try #require(try service.state(of: "acme/foreign"))
        #expect(m.appMismatch && m.appId == "999000999" && m.userId == "10215241773831025" && m.issuedAt == 1_570_733_000)
        await service.deliverDueNotifications()
        let note = try #require(f.inbox(inbox).first)
        #expect(note["event"] as? String == "token_invalid" && (note["reason"] as? String)?.contains("issued for app 999000999") == true)
        #expect(note["dialog_url"] is NSNull, "no login link for a token that is another app's")
        await f.graph.stop()
    }

    @Test func aRejectedAppSecretIsOneAppLevelAlert() async throws {
        let rejected = Mutex(true)
        let f = try await Fixture { _ in
            rejected.withLock { $0 } ? FakeGraph.error(400, code: 190, message: "Error validating client secret.") : FakeGraph.debug(valid: true)
        }
        for n in 1...4 { try f.vault.put(name: "acme/t\(n)", secret: secret("EAAB-t\(n)"), kind: .user, app: "acme") }
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        let sweeper = f.rechecker(service)
        await sweeper.runOnce()
        #expect(f.graph.count("debug_token") == 1, "the app's other tokens wait")
        await sweeper.runOnce()
        var notes = f.inbox(inbox)
        #expect(notes.count == 1 && notes[0]["event"] as? String == "app_credential_rejected" && notes[0]["app"] as? String == "acme")
        #expect((notes[0]["action"] as? String)?.contains("tokenvault app add acme") == true)
        for n in 1...4 {
            #expect(try service.state(of: "acme/t\(n)")?.state ?? "unchecked" == "unchecked", "no token is blamed")
            #expect(try service.notificationState(token: "acme/t\(n)") == nil)
        }
        // The secret is fixed: checks go through, and the alert is resolved.
        rejected.withLock { $0 = false }
        _ = try await service.check(name: "acme/t1")
        await service.deliverDueNotifications()
        notes = f.inbox(inbox)
        #expect(notes.map { $0["event"] as? String } == ["app_credential_rejected", "resolved"])
        #expect(f.audit.events.withLock { $0 }.contains { $0.action == "notification_sent" && $0.token == nil && ($0.reason ?? "").hasPrefix("#app acme") })
        await f.graph.stop()
    }

    @Test func metaHistoryListsEveryCheckInOrder() async throws {
        let answer = Mutex(0)
        let f = try await Fixture { _ in
            switch answer.withLock({ $0 }) {
            case 0: return FakeGraph.debug(valid: true, expiresAt: 1_900_000_000)
            case 1: return (503, "down")
            case 2: return FakeGraph.debug(valid: true, scopes: ["ads_read"])
            default: return FakeGraph.debug(valid: false, code: 190, subcode: 460)
            }
        }
        try f.vault.put(name: "acme/h", secret: secret("EAAB-h"), kind: .user, app: "acme")
        let service = try f.fleetService()
        try service.require(name: "acme/h", scopes: ["ads_management"], targets: nil)
        for step in 0...3 {
            answer.withLock { $0 = step }
            _ = try? await service.check(name: "acme/h")
        }
        let history = try service.history(name: "acme/h")
        #expect(history.map(\.verdict) == ["valid", "failed", "valid", "invalid"])
        #expect(history.map(\.state) == ["ok", "ok", "scope_missing", "invalid"])
        #expect(history[0].expiresAt == 1_900_000_000 && history[1].error?.contains("503") == true)
        #expect(history[2].error == "missing ads_management" && history[3].error?.contains("460") == true)
        #expect(history.compactMap(\.id) == history.compactMap(\.id).sorted() && history.allSatisfy { $0.id != nil })
        // Through the CLI, in the same order.
        let out = try tv(["meta", "history", "acme/h", "--json"], home: f.vault.home.root, graph: f.graph.url).stdout
        let lines = out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.map { $0["verdict"] as? String } == ["valid", "failed", "valid", "invalid"])
        let table = try tv(["meta", "history", "acme/h"], home: f.vault.home.root, graph: f.graph.url).stdout
        #expect(table.contains("scope_missing") && table.contains("failed"))
        await f.graph.stop()
    }

    @Test func aTokenNoCheckReachesIsAnAlertOfItsOwn() async throws {
        let f = try await Fixture { _ in (503, "down") }
        try f.vault.put(name: "acme/quiet", secret: secret("EAAB-q"), kind: .user, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        let later = MetaTokenService.now + 3 * 86_400
        #expect(try service.noteStaleChecks(limit: 2 * 86_400, now: later) == ["acme/quiet"])
        #expect(try service.noteStaleChecks(limit: 2 * 86_400, now: later) == ["acme/quiet"])
        await service.deliverDueNotifications(now: later)
        #expect(f.inbox(inbox).map { $0["event"] as? String } == ["check_stale"], "once")
        await f.graph.stop()
    }

    @Test func remindersForProblemsStillOpen() async throws {
        let f = try await Fixture { _ in FakeGraph.debug(valid: false, code: 190, subcode: 460) }
        try f.vault.put(name: "acme/r", secret: secret("EAAB-r"), kind: .user, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        _ = try await service.check(name: "acme/r")
        await service.deliverDueNotifications()
        #expect(try service.queueReminders(after: 3600) == 0, "too soon")
        let later = MetaTokenService.now + 7200
        #expect(try service.queueReminders(after: 3600, now: later) == 1)
        await service.deliverDueNotifications(now: later)
        let notes = f.inbox(inbox)
        #expect(notes.count == 2 && notes[1]["reminder"] as? Bool == true && (notes[1]["summary"] as? String)?.hasPrefix("Reminder") == true)
        await f.graph.stop()
    }

    @Test func oneRejectedAppDoesNotStarveTheOthers() async throws {
        let f = try await Fixture { req in
            // acme's secret was reset; beta's works.
            (req.query["access_token"] ?? "").hasPrefix("138483919580948|") ? FakeGraph.error(400, code: 190, message: "Error validating client secret.")
                : FakeGraph.debug(valid: true, appId: "777")
        }
        try f.vault.addApp(name: "beta", appId: "777", secret: secret("beta-secret"))
        // More of acme's tokens than one tick's budget, all due first (never checked, names sort first).
        for n in 0..<80 { try f.vault.put(name: "a/\(n)", secret: secret("EAAB-a\(n)"), kind: .user, app: "acme") }
        for n in 0..<5 { try f.vault.put(name: "b/\(n)", secret: secret("EAAB-b\(n)"), kind: .user, app: "beta") }
        let service = try f.fleetService()
        let sweeper = f.rechecker(service)
        let t0 = MetaTokenService.now
        await sweeper.runOnce(now: t0)
        #expect(try (0..<5).allSatisfy { try service.state(of: "b/\($0)")?.state == "ok" }, "beta's tokens are checked")
        let acmeCalls = { f.graph.requests.filter { ($0.query["access_token"] ?? "").hasPrefix("138483919580948|") }.count }
        #expect(acmeCalls() == 1)
        await sweeper.runOnce(now: t0 + 60)
        #expect(acmeCalls() == 1, "the app waits: no call a minute for a reset secret")
        await sweeper.runOnce(now: t0 + 1900)
        #expect(acmeCalls() == 2, "then one token, to see whether it works again")
        // Nor does any of its tokens count as stale while the app's alert is open.
        #expect(try service.noteStaleChecks(limit: 60, now: t0 + 3 * 86_400).allSatisfy { $0.hasPrefix("b/") })
        await f.graph.stop()
    }

    @Test func aPauseHoldsBackEveryDaemonOfTheStore() async throws {
        let f = try await Fixture { _ in FakeGraph.error(400, code: 4, message: "Application request limit reached") }
        try f.vault.put(name: "acme/p", secret: secret("EAAB-p"), kind: .user, app: "acme")
        let t0 = MetaTokenService.now
        await f.rechecker(try f.fleetService()).runOnce(now: t0)
        #expect(f.graph.count("debug_token") == 1)
        // Another daemon (its own service and sweep log, the same store) makes no call either.
        let other = f.rechecker(try f.fleetService())
        await other.runOnce(now: t0 + 60)
        let until = try #require(other.sweeps.paused?.until)
        #expect(f.graph.count("debug_token") == 1 && (t0 + 300...t0 + 330).contains(until))
        // A second throttle in a row doubles the wait when Meta names none.
        await other.runOnce(now: until + 1)
        #expect(f.graph.count("debug_token") == 2)
        #expect((until + 1 + 600...until + 631).contains(other.sweeps.paused?.until ?? 0))
        await f.graph.stop()
    }

    @Test func aRefreshNeverUndoesATokenStoredMeanwhile() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let box = Mutex<Vault?>(nil)
        let f = try await Fixture { req in
            if req.path.hasSuffix("/oauth/access_token") {
                // The admin rotates the token (a leak) while Meta answers the refresh.
                try? box.withLock { $0 }?.put(name: "acme/sys", secret: secret("EAAB-admin-new"), kind: .systemUser, app: "acme", replace: true)
                return FakeGraph.ok(#"{"access_token":"EAAB-refreshed-old","token_type":"bearer","expires_in":5184000}"#)
            }
            return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: now + 5 * 86_400)
        }
        box.withLock { $0 = f.vault }
        try f.vault.put(name: "acme/sys", secret: secret("EAAB-sys"), kind: .systemUser, app: "acme")
        let service = try f.fleetService()
        await #expect(throws: MetaTokenService.RefreshError.self) { try await service.refresh(name: "acme/sys") }
        #expect(try f.vault.get(name: "acme/sys").secret.unsafeStringCopy() == "EAAB-admin-new")
        await f.graph.stop()
    }

    @Test func throttlingIsNoRefreshFailureAndAFailureIsRetriedLater() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let answer = Mutex("throttle")
        let f = try await Fixture { req in
            if req.path.hasSuffix("/oauth/access_token") {
                switch answer.withLock({ $0 }) {
                case "throttle": return FakeGraph.error(400, code: 17, message: "User request limit reached")
                default: return FakeGraph.error(400, code: 190, subcode: 463, message: "Session has expired")
                }
            }
            return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: now + 5 * 86_400)
        }
        try f.vault.put(name: "acme/sys", secret: secret("EAAB-sys"), kind: .systemUser, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        _ = try await service.check(name: "acme/sys")
        await #expect(throws: GraphClientError.self) { try await service.refresh(name: "acme/sys") }
        #expect(try service.notificationState(token: MetaAlert.refreshKey("acme/sys")) == nil, "a throttle is not a refusal")
        #expect(try service.dueForRefresh(days: 15, userTokens: false) == ["acme/sys"], "tried again next sweep")
        answer.withLock { $0 = "refuse" }
        await #expect(throws: GraphClientError.self) { try await service.refresh(name: "acme/sys") }
        await service.deliverDueNotifications()
        // Checks in between (hourly near expiry) do not push the retry away.
        _ = try await service.check(name: "acme/sys")
        #expect(try service.dueForRefresh(days: 15, userTokens: false).isEmpty)
        #expect(try service.dueForRefresh(days: 15, userTokens: false, now: MetaTokenService.now + 7 * 3600) == ["acme/sys"])
        // The admin stores a new token: the alert is over at its next check.
        try f.vault.put(name: "acme/sys", secret: secret("EAAB-new-sys"), kind: .systemUser, app: "acme", replace: true)
        _ = try await service.check(name: "acme/sys")
        await service.deliverDueNotifications()
        #expect(f.inbox(inbox).map { $0["event"] as? String }.sorted { ($0 ?? "") < ($1 ?? "") } == ["refresh_failed", "resolved", "token_expiring"])
        #expect(try service.state(of: "acme/sys")?.refreshError == nil)
        await f.graph.stop()
    }

    @Test func noReminderForATokenThatIsGoneAndAnOldExpiredNoticeIsNotNews() async throws {
        let f = try await Fixture { _ in FakeGraph.debug(valid: false, code: 190, subcode: 463) }
        try f.vault.put(name: "acme/gone", secret: secret("EAAB-g"), kind: .user, app: "acme")
        let inbox = f.dir.path + "/inbox"
        let service = try f.fleetService(notify: "cat >> \(inbox)")
        _ = try await service.check(name: "acme/gone")
        await service.deliverDueNotifications()
        try f.vault.remove(name: "acme/gone")
        #expect(try service.queueReminders(after: 60, now: MetaTokenService.now + 3600) == 0)
        #expect(try service.notificationState(token: "acme/gone")?.state == "ok", "settled quietly")

        // What an earlier release stored for an expired token: the same news as `expired`.
        try f.vault.put(name: "acme/old", secret: secret("EAAB-o"), kind: .user, app: "acme")
        try f.vault.change { change in
            try change.state((any LifecycleStateTransaction).self)
                .saveNotification(NotificationRecord(token: "acme/old", state: "invalid:190/463", payload: "{}", pending: false, now: 1))
        }
        #expect(try await service.check(name: "acme/old").changed == false)
        await f.graph.stop()
    }

    @Test func graphVersionsAreWarnedAboutBeforeMetaRetiresThem() {
        #expect(GraphConfiguration.defaultVersion == GraphVersions.current)
        #expect(GraphVersions.warning(for: GraphVersions.current, today: "2026-12-03") == nil)
        #expect(GraphVersions.warning(for: "v25.0", today: "2026-12-03") == nil)
        #expect(GraphVersions.warning(for: "v21.0", today: "2026-12-03")?.contains("retired on 2027-01-21 (in 49 days)") == true)
        #expect(GraphVersions.warning(for: "v19.0", today: "2026-12-03")?.contains("was retired on 2026-05-21") == true)
        #expect(GraphVersions.warning(for: "v3.4", today: "2026-12-03")?.contains("not in this release's table") == true)
        #expect(GraphVersions.warning(for: "v27.0", today: "2026-12-03") == nil, "newer than this release knows: Meta released it since")
        #expect(GraphVersions.warning(for: "latest", today: "2026-12-03")?.contains("not a Graph API version") == true)
        #expect(GraphVersions.table.map(\.released) == GraphVersions.table.map(\.released).sorted(by: >), "newest first")
    }

    @Test func usageHeadersAreRead() {
        let u = GraphUsage.parse(appUsage: #"{"call_count":28,"total_cputime":25,"total_time":65}"#,
                                 businessUsage: #"{"101":[{"type":"ads_insights","call_count":3,"total_cputime":97,"total_time":2,"estimated_time_to_regain_access":0}],"202":[{"type":"ads_management","call_count":40,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":7}]}"#)
        #expect(u == GraphUsage(appPercent: 65, businessPercent: 97, regainAccessMinutes: 7))
        #expect(GraphUsage.parse(appUsage: nil, businessUsage: "not json") == nil)
    }

    @Test func aLoginStateIsBoundToItsTokenAndExpires() async throws {
        let f = try await Fixture { _ in FakeGraph.debug(valid: true) }
        let now = MetaTokenService.now
        let cb = "https://ads.example.com/cb"
        let state = try LoginState.make(vault: f.vault, name: "acme/ads", app: "acme", redirectURI: cb, now: now)
        #expect(try LoginState.problem(state, vault: f.vault, name: "acme/ads", app: "acme", redirectURI: cb, now: now + 60) == nil)
        #expect(try LoginState.problem(state, vault: f.vault, name: "acme/other", app: "acme", redirectURI: cb, now: now)?.contains("not made for") == true)
        #expect(try LoginState.problem(state, vault: f.vault, name: "acme/ads", app: "acme", redirectURI: "https://evil.example/cb", now: now) != nil)
        #expect(try LoginState.problem(state, vault: f.vault, name: "acme/ads", app: "acme", redirectURI: cb, now: now + 8 * 86_400)?.contains("older than 7 days") == true)
        #expect(try LoginState.problem("\(now).0000", vault: f.vault, name: "acme/ads", app: "acme", redirectURI: cb, now: now) != nil)
        #expect(try LoginState.problem("garbage", vault: f.vault, name: "acme/ads", app: "acme", redirectURI: cb, now: now) != nil)
        // No appsecret_proof the vault hands out is a state: a token whose value is a state's message, and its proof.
        let message = "acme/ads\n\(cb)\n\(now)"
        let proof = try f.vault.appsecretProof(token: secret(message), app: "acme", timed: false).hex
        #expect(!state.hasSuffix(String(proof.prefix(32))))
        await f.graph.stop()
    }
}

/// The surfaces an admin types: `meta login --rerequest` and the remote flow, `meta require`, `put
/// --require-scope`, `show` and `list` with states, and a daemon whose `watch` clients hear a refresh.
@Suite("Meta fleet commands end to end")
struct MetaFleetCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }

    @Test func rerequestRemoteLoginAndRequiredScopes() async throws {
        let graph = try await FakeGraph { req in
            if req.path.hasSuffix("oauth/access_token") {
                return req.query["code"] == "AQB-remote" && req.query["redirect_uri"] == "https://ads.example.com/cb"
                    ? FakeGraph.ok(#"{"access_token":"EAAB-remote","token_type":"bearer","expires_in":5183944}"#)
                    : FakeGraph.error(400, code: 100, subcode: 36007, message: "Invalid verification code format.")
            }
            if req.path.hasSuffix("me/permissions") {
                guard req.query["appsecret_proof"] != nil else { return FakeGraph.error(400, code: 100, message: "appsecret_proof required") }
                return FakeGraph.ok(#"{"data":[{"permission":"ads_read","status":"granted"},{"permission":"ads_management","status":"declined"}]}"#)
            }
            return FakeGraph.debug(valid: true, scopes: ["ads_read"])
        }
        #expect(try tv(["init"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["app", "add", "acme", "--app-id", "138483919580948"], home: home, graph: graph.url, stdin: appSecret).status == 0)

        let printed = try tv(["meta", "login", "acme/ads", "--app", "acme", "--rerequest", "--redirect-uri", "https://ads.example.com/cb",
                              "--require-scope", "ads_management"], home: home, graph: graph.url)
        #expect(printed.status == 0, "\(printed.stderr)")
        let link = try #require(printed.stdout.split(separator: "\n").first { $0.hasPrefix("https://www.facebook.com/") })
        let items = URLComponents(string: String(link))?.queryItems ?? []
        #expect(items.first { $0.name == "auth_type" }?.value == "rerequest")
        #expect(items.first { $0.name == "scope" }?.value == "ads_read,ads_management")
        let state = try #require(items.first { $0.name == "state" }?.value)
        #expect(printed.stderr.contains("meta exchange acme/ads") && printed.stderr.contains("--require-scope ads_management"))
        let business = try tv(["meta", "login", "acme/ads", "--app", "acme", "--config-id", "123456", "--redirect-uri", "https://ads.example.com/cb"],
                              home: home, graph: graph.url).stdout
        #expect(business.contains("config_id=123456") && !business.contains("scope="))

        // A state made for another name, or none of ours, stores nothing.
        let other = try tv(["meta", "exchange", "acme/other", "--app", "acme", "--code", "AQB-remote", "--state", state,
                            "--redirect-uri", "https://ads.example.com/cb"], home: home, graph: graph.url)
        #expect(other.status == 2 && other.stderr.contains("not made for acme/other"))
        #expect(try tv(["list", "--json"], home: home, graph: graph.url).stdout.isEmpty)
        let done = try tv(["meta", "exchange", "acme/ads", "--app", "acme", "--code", "AQB-remote", "--state", state,
                           "--redirect-uri", "https://ads.example.com/cb", "--require-scope", "ads_management"], home: home, graph: graph.url)
        #expect(done.status == 0, "\(done.stderr)")
        #expect(done.stdout.contains("scope_missing") && done.stdout.contains("declined ads_management"), "\(done.stdout)")
        #expect(done.stdout.contains("--rerequest"))
        let shown = try JSONSerialization.jsonObject(with: Data(try tv(["show", "acme/ads", "--json"], home: home, graph: graph.url).stdout.utf8)) as? [String: Any]
        #expect(shown?["state"] as? String == "scope_missing" && shown?["required_scopes"] as? [String] == ["ads_management"])
        #expect(shown?["user_id"] as? String == "10215241773831025")

        // `meta require` changes it later (targets kept unless replaced or cleared); `put --require-scope`
        // sets it at once; `list` shows states.
        #expect(try tv(["meta", "require", "acme/ads", "ads_read", "--target", "act_101"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["meta", "require", "acme/ads", "ads_read"], home: home, graph: graph.url).stderr.contains("on act_101"))
        #expect(try tv(["meta", "require", "acme/ads", "ads_read", "--clear-targets"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["meta", "require", "acme/ads", "--target", "act_1"], home: home, graph: graph.url).status != 0)
        #expect(try tv(["meta", "check", "acme/ads"], home: home, graph: graph.url).stdout.contains("ok"))
        #expect(try tv(["meta", "require", "acme/ads", "Not-A-Scope"], home: home, graph: graph.url).status != 0)
        #expect(try tv(["put", "acme/sys", "--kind", "system_user", "--app", "acme", "--require-scope", "ads_management"],
                       home: home, graph: graph.url, stdin: "EAAB-sys").status == 0)
        let listed = try tv(["list", "--json"], home: home, graph: graph.url).stdout.split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(listed.map { $0["state"] as? String } == ["ok", "unchecked"])
        #expect(listed.last?["required_scopes"] as? [String] == ["ads_management"])
        #expect(try tv(["list"], home: home, graph: graph.url).stdout.contains("STATE"))
        await graph.stop()
    }

    @Test func aWatchClientHearsARefresh() async throws {
        let now = Int64(Date().timeIntervalSince1970)
        let graph = try await FakeGraph { req in
            if req.path.hasSuffix("oauth/access_token") {
                return req.query["set_token_expires_in_60_days"] == "true"
                    ? FakeGraph.ok(#"{"access_token":"EAAB-sys-60","token_type":"bearer","expires_in":5184000}"#)
                    : FakeGraph.error(400, code: 100, message: "no flag")
            }
            return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: now + 5_184_000)
        }
        #expect(try tv(["init"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["app", "add", "acme", "--app-id", "138483919580948"], home: home, graph: graph.url, stdin: appSecret).status == 0)
        #expect(try tv(["put", "acme/sys", "--kind", "system_user", "--app", "acme"], home: home, graph: graph.url, stdin: "EAAB-sys").status == 0)
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        let daemon = try startDaemon(home: home, graph: graph.url)
        func stop() { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() }
        let watch: WatchConnection
        do { watch = try WatchConnection(client: TokenVaultClient(socketPath: home + "/tokenvault.sock"), patterns: ["acme/*"]) } catch {
            stop()
            throw error
        }
        let refreshed = try tv(["meta", "refresh", "acme/sys"], home: home, graph: graph.url)
        #expect(refreshed.status == 0, "\(refreshed.stderr)")
        let change = try watch.next()
        #expect(change == TokenVaultClient.Change(name: "acme/sys", kind: .refreshed))
        #expect(try TokenVaultClient(socketPath: home + "/tokenvault.sock").getBlocking("acme/sys").token == "EAAB-sys-60")
        watch.close()
        stop()
        await graph.stop()
    }
}
