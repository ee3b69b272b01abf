import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VaultCore

/// The last Meta check sweep this daemon ran, for `tokenvault status`.
public final class SweepLog: Sendable {
    public struct Sweep: Sendable, Equatable {
        /// When it ended (Unix seconds), how many tokens it checked and how many checks failed.
        public let endedAt: Int64
        public let checked: Int
        public let failed: Int
        /// Whether another daemon of the shared store held the sweep's lease, so this one did not sweep.
        public let leaseHeldElsewhere: Bool
    }

    private let last = Mutex<Sweep?>(nil)

    public init() {}

    public var lastSweep: Sweep? { last.withLock { $0 } }

    func note(_ sweep: Sweep) { last.withLock { $0 = sweep } }
}

/// In the daemon: re-checks Meta tokens on an interval (default daily), sooner when near expiry, and
/// delivers notifications that are due (including retries of failed ones).
public struct Rechecker: Service {
    let service: MetaTokenService
    let interval: Int64
    let tick: Duration
    let logger: Logger
    public let sweeps: SweepLog

    public init(service: MetaTokenService, interval: Int64 = 86_400, tick: Duration = .seconds(60), logger: Logger,
                sweeps: SweepLog = SweepLog()) {
        self.service = service
        self.interval = interval
        self.tick = tick
        self.logger = logger
        self.sweeps = sweeps
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await runOnce()
            // Sleeps, but wakes at once for a graceful shutdown.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: tick) }
        }
    }

    /// One pass: check what is due, then deliver what is owed. Only one daemon of all that share the store
    /// sweeps at a time (a lease): with several hosts, a token is checked and a notification sent once,
    /// not once per host. A daemon that finds the lease held skips this pass.
    public func runOnce() async {
        let lease: (any StoreLease)?
        do { lease = try service.vault.tryLease("meta-sweep") } catch {
            logger.warning("Meta re-check skipped: the store cannot be reached", metadata: ["error": "\(error)"])
            return
        }
        guard let lease else {
            sweeps.note(.init(endedAt: Int64(Date().timeIntervalSince1970), checked: 0, failed: 0, leaseHeldElsewhere: true))
            return
        }
        defer { lease.release() }
        let due = (try? service.dueForCheck(interval: interval)) ?? []
        var checked = 0, checkFailures = 0
        for name in due {
            if Task.isShuttingDownGracefully { return }
            do {
                let outcome = try await service.check(name: name)
                checked += 1
                if outcome.changed {
                    logger.notice("token state changed", metadata: ["token": "\(name)", "state": "\(outcome.state)"])
                }
            } catch {
                checkFailures += 1
                logger.warning("token check failed", metadata: ["token": "\(name)", "error": "\(error)"])
            }
        }
        sweeps.note(.init(endedAt: Int64(Date().timeIntervalSince1970), checked: checked, failed: checkFailures, leaseHeldElsewhere: false))
        let (delivered, failed) = await service.deliverDueNotifications()
        if delivered + failed > 0 {
            logger.info("notifications", metadata: ["delivered": "\(delivered)", "failed": "\(failed)"])
        }
    }
}
