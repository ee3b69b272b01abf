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
    private let pause = Mutex<(Pause?, throttles: Int)>((nil, 0))
    /// When the hourly chores (stale tokens, reminders, history retention) last ran.
    private let chores = Mutex<Int64>(0)

    public init() {}

    public var lastSweep: Sweep? { last.withLock { $0 } }
    public var paused: Pause? { pause.withLock { $0.0 } }

    func note(_ sweep: Sweep) { last.withLock { $0 = sweep } }

    /// Holds calls back until `now + wait`, or, when Meta did not say how long, for 5 minutes doubling
    /// with each throttle in a row up to an hour (throttling can last that long). Returns the pause.
    @discardableResult
    func hold(now: Int64, wait: TimeInterval?, reason: String) -> Pause {
        pause.withLock { state in
            state.throttles += 1
            let backoff = min(3600, 300 << min(state.throttles - 1, 4))
            let p = Pause(until: now + Int64(wait ?? TimeInterval(backoff)), reason: reason)
            state.0 = p
            return p
        }
    }

    /// Whether the hourly chores are due (and, if so, that they run now).
    func choresDue(now: Int64) -> Bool {
        chores.withLock { last in
            guard now - last >= 3600 else { return false }
            last = now
            return true
        }
    }

    /// Calls went through: the next throttle starts from the shortest backoff again.
    func clearThrottles() { pause.withLock { $0 = (nil, 0) } }
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
        if let p = sweeps.paused, now < p.until {
            logger.debug("Meta calls held back", metadata: ["until": "\(p.until)", "reason": "\(p.reason)"])
        } else {
            await callMeta(now: now, sweep: &sweep)
        }
        doChores(now: now, sweep: &sweep)
        sweeps.note(.init(endedAt: MetaTokenService.now, checked: sweep.checked, failed: sweep.failed, leaseHeldElsewhere: false,
                          refreshed: sweep.refreshed, refreshFailed: sweep.refreshFailed, stale: sweep.stale))
        let (delivered, failed) = await service.deliverDueNotifications()
        if delivered + failed > 0 {
            logger.info("notifications", metadata: ["delivered": "\(delivered)", "failed": "\(failed)"])
        }
    }

    /// Refreshes, then checks; stops at the first sign that Meta wants less.
    private func callMeta(now: Int64, sweep: inout SweepLog.Sweep) async {
        var rejectedApps = Set<String>()
        let apps = (try? service.vault.lifecycleState { try $0.checkCandidates() }) ?? []
        let appOf = Dictionary(apps.map { ($0.name, $0.app) }, uniquingKeysWith: { a, _ in a })
        var calls: [(name: String, refresh: Bool)] = []
        if options.refresh != .off {
            let due = (try? service.dueForRefresh(days: options.refreshDays, userTokens: options.refresh == .all, now: now)) ?? []
            calls += due.map { ($0, true) }
        }
        let due = (try? service.dueCandidates(interval: interval, jitter: options.jitter, now: now)) ?? []
        calls += due.prefix(budget(candidates: apps.count)).map { ($0.name, false) }
        for call in calls {
            if Task.isShuttingDownGracefully { return }
            if let app = appOf[call.name] ?? nil, rejectedApps.contains(app) { continue }
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
                sweeps.clearThrottles()
            } catch GraphClientError.appCredentialRejected(let e) {
                sweep.failed += 1
                if let app = appOf[call.name] ?? nil {
                    rejectedApps.insert(app)
                    service.noteAppRejected(app: app, error: e, now: now)
                    logger.error("Meta rejected an app's credentials: its tokens wait", metadata: ["app": "\(app)", "error": "\(e)"])
                }
            } catch GraphClientError.api(let e) where e.isThrottling {
                sweep.failed += 1
                let p = sweeps.hold(now: now, wait: e.retryAfter, reason: "throttled: \(e)")
                logger.warning("Meta is throttling the app: the sweep pauses", metadata: ["until": "\(p.until)", "code": "\(e.code ?? 0)"])
                return
            } catch {
                if call.refresh { sweep.refreshFailed += 1 } else { sweep.failed += 1 }
                logger.warning(call.refresh ? "token refresh failed" : "token check failed", metadata: ["token": "\(call.name)", "error": "\(error)"])
            }
            if let usage = service.graph.lastUsage, let percent = usage.percent, percent >= options.pauseAtPercent {
                let wait = usage.regainAccessMinutes.flatMap { $0 > 0 ? TimeInterval($0) * 60 : nil }
                let p = sweeps.hold(now: now, wait: wait, reason: "Meta reports \(percent)% of the app's call budget used")
                logger.notice("Meta usage is high: the sweep pauses", metadata: ["until": "\(p.until)", "percent": "\(percent)"])
                return
            }
        }
    }

    /// Once an hour: tokens no check has reached Meta for (the watcher watched), reminders of problems
    /// still open, and the history's retention.
    private func doChores(now: Int64, sweep: inout SweepLog.Sweep) {
        guard sweeps.choresDue(now: now) else { return }
        do {
            sweep.stale = try service.noteStaleChecks(limit: 2 * interval, now: now).count
            try service.queueReminders(after: options.remindAfter, now: now)
            try service.pruneHistory(days: options.historyDays, now: now)
        } catch {
            logger.warning("Meta chores failed", metadata: ["error": "\(error)"])
        }
    }
}
