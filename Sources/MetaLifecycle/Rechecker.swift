import Foundation
import Logging
import ServiceLifecycle
import VaultCore

/// In the daemon: re-checks Meta tokens on an interval (default daily), sooner when near expiry, and
/// delivers notifications that are due (including retries of failed ones).
public struct Rechecker: Service {
    let service: MetaTokenService
    let interval: Int64
    let tick: Duration
    let logger: Logger

    public init(service: MetaTokenService, interval: Int64 = 86_400, tick: Duration = .seconds(60), logger: Logger) {
        self.service = service
        self.interval = interval
        self.tick = tick
        self.logger = logger
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
        guard let lease else { return }
        defer { lease.release() }
        let due = (try? service.dueForCheck(interval: interval)) ?? []
        for name in due {
            if Task.isShuttingDownGracefully { return }
            do {
                let outcome = try await service.check(name: name)
                if outcome.changed {
                    logger.notice("token state changed", metadata: ["token": "\(name)", "state": "\(outcome.state)"])
                }
            } catch {
                logger.warning("token check failed", metadata: ["token": "\(name)", "error": "\(error)"])
            }
        }
        let (delivered, failed) = await service.deliverDueNotifications()
        if delivered + failed > 0 {
            logger.info("notifications", metadata: ["delivered": "\(delivered)", "failed": "\(failed)"])
        }
    }
}
