import Foundation
import Logging
import MetaGraph
import ServiceLifecycle
import Synchronization
import VaultCore

/// The last Meta check sweep this daemon ran, and whether Meta asked it to hold back, for `tokenvault status`.
public final class SweepLog: Sendable {
    public struct Sweep: Sendable, Equatable {
        /// When it ended (Unix seconds), how many tokens it checked and how many checks failed.
        public var endedAt: Int64
        public var checked: Int
        public var failed: Int
        /// Whether another daemon of the shared store held the sweep's lease, so this one did not sweep.
        public let leaseHeldElsewhere: Bool
        public var refreshed = 0
        public var refreshFailed = 0
        /// Tokens no check has reached Meta for in two intervals.
        public var stale = 0
    }

    /// Meta asked the app to back off: no call before `until` (Unix seconds).
    public struct Pause: Sendable, Equatable {
        public let until: Int64
        public let reason: String
    }

    private let last = Mutex<Sweep?>(nil)
    private let pause = Mutex<Pause?>(nil)
    /// When the hourly chores (stale tokens, reminders, history retention) last ran, and what they found.
    private let chores = Mutex<(at: Int64, stale: Int)>((0, 0))
    /// Apps whose credentials Meta rejected (retry one token after the time), and tokens whose last check
    /// failed (retried after the time): without this they would stay first in line and starve the rest.
    private let waits = Mutex<(apps: [String: Int64], tokens: [String: Int64])>(([:], [:]))

    public init() {}

    public var lastSweep: Sweep? { last.withLock { $0 } }
    /// The pause the last sweep found or made (the store holds it for every daemon).
    public var paused: Pause? { pause.withLock { $0 } }

    func note(_ sweep: Sweep) { last.withLock { $0 = sweep } }
    func show(_ p: SweepPauseRecord?) { pause.withLock { $0 = p.map { Pause(until: $0.untilAt, reason: $0.reason) } } }

    /// The pause after one more throttle: until `now + wait`, or, when Meta did not say how long, for 5
    /// minutes doubling with each throttle in a row up to an hour (throttling can last that long).
    static func pause(after previous: SweepPauseRecord?, now: Int64, wait: TimeInterval?, reason: String) -> SweepPauseRecord {
        let throttles = (previous?.throttles ?? 0) + 1
        let backoff = min(3600, 300 << min(throttles - 1, 4))
        return SweepPauseRecord(untilAt: now + Int64(wait ?? TimeInterval(backoff)), reason: reason, throttles: throttles)
    }

    /// Whether the hourly chores are due (and, if so, that they run now).
    func choresDue(now: Int64) -> Bool {
        chores.withLock { c in
            guard now - c.at >= 3600 else { return false }
            c.at = now
            return true
        }
    }

    func noteStale(_ n: Int) { chores.withLock { $0.stale = n } }
    var stale: Int { chores.withLock { $0.stale } }

    /// Which of `due` (in order) this sweep may call: not a token waiting after a failure, not an app
    /// waiting after a rejection, and of an app whose wait is over, one token (to see if it works again).
    func callable(_ due: [CheckCandidate], now: Int64) -> [CheckCandidate] {
        waits.withLock { w in
            var trying = Set<String>()
            return due.filter { c in
                if let t = w.tokens[c.name], t > now { return false }
                guard let app = c.app, let until = w.apps[app] else { return true }
                guard until <= now, !trying.contains(app) else { return false }
                trying.insert(app)
                return true
            }
        }
    }

    func appRejected(_ app: String, now: Int64) { waits.withLock { $0.apps[app] = now + 1800 } }
    func checkFailed(_ name: String, now: Int64) { waits.withLock { $0.tokens[name] = now + 900 } }
    func checkWorked(_ c: CheckCandidate) {
        waits.withLock { w in
            w.tokens[c.name] = nil
            if let app = c.app { w.apps[app] = nil }
        }
    }
}

/// In the daemon: re-checks Meta tokens on an interval (default daily), sooner when near expiry; refreshes
/// expiring system-user tokens; delivers notifications that are due (including retries of failed ones).
///
/// It respects Meta: checks are spread over the interval (each token is due at a point of its own inside
/// the last tenth of it) and at most a share of them run per tick; a throttling answer (codes 4, 17, 32,
/// 613, 80000–80014), or usage headers at 90% or more, pause the whole sweep for the time Meta announces
/// (`estimated_time_to_regain_access`) or a backoff; an app whose credentials Meta rejects is one alert
/// and its tokens wait, rather than each being called invalid. And it is watched: a token no check has
/// reached Meta for in two intervals is an alert of its own.
public struct Rechecker: Service {
    public enum RefreshMode: String, Sendable, CaseIterable {
        case off
        /// Expiring (60-day) system-user tokens, with `set_token_expires_in_60_days`.
        case systemUser = "system_user"
        /// User tokens too, for as long as Meta exchanges them.
        case all
    }

    public struct Options: Sendable {
        /// The fraction of the interval over which checks are spread.
        public var jitter = 0.1
        public var refresh = RefreshMode.systemUser
        /// Refresh this many days before expiry.
        public var refreshDays = 15
        /// Remind of a problem still open after this many seconds (0: never).
        public var remindAfter: Int64 = 3 * 86_400
        /// Keep this many days of check history.
        public var historyDays = 400
        /// Hold back once Meta reports usage at this percentage or more.
        public var pauseAtPercent = 90
        public init() {}
    }

    let service: MetaTokenService
    let interval: Int64
    let tick: Duration
    let logger: Logger
    let options: Options
    public let sweeps: SweepLog

    public init(service: MetaTokenService, interval: Int64 = 86_400, tick: Duration = .seconds(60), logger: Logger,
                sweeps: SweepLog = SweepLog(), options: Options = Options()) {
        self.service = service
        self.interval = interval
        self.tick = tick
        self.logger = logger
        self.sweeps = sweeps
        self.options = options
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await runOnce()
            // Sleeps, but wakes at once for a graceful shutdown.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
        }
    }

    /// How many checks one tick may make: four times the steady rate (so a backlog drains), at least 50.
    func budget(candidates: Int) -> Int {
        let seconds = Double(tick.components.seconds) + Double(tick.components.attoseconds) / 1e18
        return max(50, Int((Double(candidates) * seconds / Double(max(interval, 1)) * 4).rounded(.up)))
    }

    /// One pass: refresh and check what is due (unless Meta asked to hold back), then deliver what is owed.
    /// Only one daemon of all that share the store sweeps at a time (a lease): with several hosts, a token
    /// is checked and a notification sent once, not once per host. A daemon that finds the lease held skips.
    public func runOnce(now: Int64 = MetaTokenService.now) async {
        let lease: (any StoreLease)?
        do { lease = try service.vault.tryLease("meta-sweep") } catch {
            logger.warning("Meta re-check skipped: the store cannot be reached", metadata: ["error": "\(error)"])
            return
        }
        guard let lease else {
            sweeps.note(.init(endedAt: MetaTokenService.now, checked: 0, failed: 0, leaseHeldElsewhere: true))
            return
        }
        defer { lease.release() }
        var sweep = SweepLog.Sweep(endedAt: now, checked: 0, failed: 0, leaseHeldElsewhere: false)
        // The pause is in the store: a throttle seen by one daemon holds back every daemon of the store.
        let pause = try? service.vault.lifecycleState { try $0.sweepPause() }
        sweeps.show(pause)
        if let p = pause, now < p.untilAt {
            logger.debug("Meta calls held back", metadata: ["until": "\(p.untilAt)", "reason": "\(p.reason)"])
        } else {
            await callMeta(now: now, sweep: &sweep, pause: pause)
        }
        doChores(now: now, sweep: &sweep)
        sweeps.note(.init(endedAt: MetaTokenService.now, checked: sweep.checked, failed: sweep.failed, leaseHeldElsewhere: false,
                          refreshed: sweep.refreshed, refreshFailed: sweep.refreshFailed, stale: sweep.stale))
        let (delivered, failed) = await service.deliverDueNotifications()
        if delivered + failed > 0 {
            logger.info("notifications", metadata: ["delivered": "\(delivered)", "failed": "\(failed)"])
        }
    }

    /// Makes (or lengthens) the store's pause and shows it; `now` is when Meta said so.
    private func hold(after previous: SweepPauseRecord?, now: Int64, wait: TimeInterval?, reason: String) -> SweepPauseRecord {
        let p = SweepLog.pause(after: previous, now: now, wait: wait, reason: reason)
        try? service.vault.lifecycle { _, tx in try tx.saveSweepPause(p) }
        sweeps.show(p)
        return p
    }

    /// Refreshes, then checks; stops at the first sign that Meta wants less.
    private func callMeta(now start: Int64, sweep: inout SweepLog.Sweep, pause: SweepPauseRecord?) async {
        // The sweep's clock: `start` (which tests set), moved on by the time the calls take, so a pause
        // runs from when Meta asked for it, not from when a long sweep began.
        let begun = MetaTokenService.now
        var now: Int64 { start + max(0, MetaTokenService.now - begun) }
        var throttled = pause
        var rejectedApps = Set<String>()
        let candidates = (try? service.vault.lifecycleState { try $0.checkCandidates() }) ?? []
        var calls: [(candidate: CheckCandidate, refresh: Bool)] = []
        if options.refresh != .off {
            let due = (try? service.dueForRefresh(days: options.refreshDays, userTokens: options.refresh == .all, now: now, from: candidates)) ?? []
            calls += sweeps.callable(due, now: now).map { ($0, true) }
        }
        let due = (try? service.dueCandidates(interval: interval, jitter: options.jitter, now: now, from: candidates)) ?? []
        calls += sweeps.callable(due, now: now).map { ($0, false) }
        // The budget counts calls made: tokens of an app rejected on the way are passed over, not spent.
        let limit = budget(candidates: candidates.count)
        var checks = 0
        for (candidate, refresh) in calls {
            let call = (name: candidate.name, refresh: refresh)
            if Task.isShuttingDownGracefully { return }
            if let app = candidate.app, rejectedApps.contains(app) { continue }
            if !refresh {
                guard checks < limit else { break }
                checks += 1
            }
            do {
                if call.refresh {
                    try await service.refresh(name: call.name)
                    sweep.refreshed += 1
                    logger.notice("token refreshed", metadata: ["token": "\(call.name)"])
                } else {
                    let outcome = try await service.check(name: call.name)
                    sweep.checked += 1
                    if outcome.changed {
                        logger.notice("token state changed", metadata: ["token": "\(call.name)", "state": "\(outcome.state)"])
                    }
                }
                sweeps.checkWorked(candidate)
                if throttled != nil {
                    // Calls go through again: the next throttle starts from the shortest backoff.
                    throttled = nil
                    try? service.vault.lifecycle { _, tx in try tx.saveSweepPause(nil) }
                    sweeps.show(nil)
                }
            } catch GraphClientError.appCredentialRejected(let e) {
                sweep.failed += 1
                if let app = candidate.app {
                    rejectedApps.insert(app)
                    sweeps.appRejected(app, now: now)
                    service.noteAppRejected(app: app, error: e, now: now)
                    logger.error("Meta rejected an app's credentials: its tokens wait", metadata: ["app": "\(app)", "error": "\(e)"])
                }
            } catch GraphClientError.api(let e) where e.isThrottling {
                sweep.failed += 1
                let p = hold(after: throttled, now: now, wait: e.retryAfter, reason: "throttled: \(e)")
                logger.warning("Meta is throttling the app: the sweep pauses", metadata: ["until": "\(p.untilAt)", "code": "\(e.code ?? 0)"])
                return
            } catch {
                if call.refresh { sweep.refreshFailed += 1 } else { sweep.failed += 1 }
                sweeps.checkFailed(call.name, now: now)
                logger.warning(call.refresh ? "token refresh failed" : "token check failed", metadata: ["token": "\(call.name)", "error": "\(error)"])
            }
            if let usage = service.graph.lastUsage, let percent = usage.percent, percent >= options.pauseAtPercent {
                let wait = usage.regainAccessMinutes.flatMap { $0 > 0 ? TimeInterval($0) * 60 : nil }
                let p = hold(after: throttled, now: now, wait: wait, reason: "Meta reports \(percent)% of the app's call budget used")
                logger.notice("Meta usage is high: the sweep pauses", metadata: ["until": "\(p.untilAt)", "percent": "\(percent)"])
                return
            }
        }
    }

    /// Once an hour: tokens no check has reached Meta for (the watcher watched), reminders of problems
    /// still open, and the history's retention.
    private func doChores(now: Int64, sweep: inout SweepLog.Sweep) {
        defer { sweep.stale = sweeps.stale }
        guard sweeps.choresDue(now: now) else { return }
        do {
            sweeps.noteStale(try service.noteStaleChecks(limit: 2 * interval, now: now).count)
            try service.queueReminders(after: options.remindAfter, now: now)
            try service.pruneHistory(days: options.historyDays, now: now)
        } catch {
            logger.warning("Meta chores failed", metadata: ["error": "\(error)"])
        }
    }
}
