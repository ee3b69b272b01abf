import Foundation
import Logging
import NIOCore
import Synchronization
import VaultCore
import VaultPolicy

/// The `watch` connections, and the poller that tells them of committed token changes.
///
/// Every writer — the CLI, another daemon's host, the Meta lifecycle — numbers its changes in the store
/// (``TokenChange``) in the transaction that makes them. While at least one connection watches, one
/// thread reads the changes after the last it saw every ``interval`` and hands each event loop, in one
/// task, the events of that loop's watchers: those whose patterns match and whom the policy in force
/// *now* lets read the name. With nobody watching it stops; the next watcher starts it again from the
/// store's newest change, so nothing committed after a `watch` is acknowledged is missed.
final class WatchHub: Sendable {
    /// Where a watcher's events go: called on the watcher's event loop.
    struct Watcher: Sendable {
        let caller: Caller
        let patterns: [String]
        let loop: any EventLoop
        let deliver: @Sendable ([TokenChange]) -> Void

        func matches(_ name: String) -> Bool {
            patterns.contains { Policy.pattern($0, matches: name) }
        }
    }

    private struct State {
        var watchers: [ObjectIdentifier: Watcher] = [:]
        /// The newest change already handed out; nil while the poller is not running.
        var last: Int64?
        var stopped = false
    }

    /// How often the poller looks for changes (a change reaches a watcher within about this, plus a hop).
    static let interval: TimeInterval = 0.005
    /// Changes read at a time.
    static let batch = 1000

    private let vault: Vault
    private let policy: @Sendable () -> Policy
    private let logger: Logger
    private let state = Mutex(State())

    init(vault: Vault, policy: @escaping @Sendable () -> Policy, logger: Logger) {
        self.vault = vault
        self.policy = policy
        self.logger = logger
    }

    var count: Int { state.withLock { $0.watchers.count } }

    /// Adds a watcher. Once this returns, every change committed later reaches it (it may also hear of
    /// one committed just before). Throws when the store cannot say where its changes stand.
    func add(_ id: ObjectIdentifier, _ watcher: Watcher) throws {
        let running = state.withLock { s -> Bool in
            guard s.last != nil else { return false }
            s.watchers[id] = watcher
            return true
        }
        guard !running else { return }
        let baseline = try vault.lastChange()
        let start = state.withLock { s -> Bool in
            s.watchers[id] = watcher
            guard s.last == nil, !s.stopped else { return false }
            s.last = baseline
            return true
        }
        if start {
            let thread = Thread { [self] in poll() }
            thread.name = "tokenvault-watch"
            thread.start()
        }
    }

    func remove(_ id: ObjectIdentifier) {
        state.withLock { _ = $0.watchers.removeValue(forKey: id) }
    }

    /// Ends the poller (at shutdown).
    func stop() {
        state.withLock { $0.stopped = true; $0.watchers.removeAll() }
    }

    private func poll() {
        var failing = false
        var behind = false
        while true {
            // A full batch means more are waiting: read on without a pause.
            if !behind { Thread.sleep(forTimeInterval: Self.interval) }
            behind = false
            guard let last = state.withLock({ s -> Int64? in
                if s.watchers.isEmpty || s.stopped { s.last = nil; return nil }
                return s.last
            }) else { return }
            let changes: [TokenChange]
            do {
                changes = try vault.changes(after: last, limit: Self.batch)
                if failing { logger.info("watch: the store answers again") }
                failing = false
            } catch {
                if !failing { logger.error("watch: cannot read the store's changes; retrying", metadata: ["error": "\(error)"]) }
                failing = true
                continue
            }
            guard let newest = changes.last?.seq else { continue }
            behind = changes.count == Self.batch
            if let first = changes.first?.seq, first > last + 1, last > 0 {
                logger.warning("watch: changes were pruned before they were read (a bulk import?); watchers miss them",
                               metadata: ["from": "\(last + 1)", "to": "\(first - 1)"])
            }
            let watchers = state.withLock { s -> [Watcher] in
                s.last = newest
                return Array(s.watchers.values)
            }
            fanOut(changes, to: watchers)
        }
    }

    /// Hands each event loop, in one task, the events of its watchers that match and are readable now.
    private func fanOut(_ changes: [TokenChange], to watchers: [Watcher]) {
        let policy = self.policy()
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, work: [(Watcher, [TokenChange])])] = [:]
        for w in watchers {
            let mine = changes.filter { w.matches($0.name) && policy.permits(w.caller, name: $0.name).allowed }
            guard !mine.isEmpty else { continue }
            byLoop[ObjectIdentifier(w.loop), default: (w.loop, [])].work.append((w, mine))
        }
        for (_, entry) in byLoop {
            let work = entry.work
            entry.loop.execute {
                for (w, events) in work { w.deliver(events) }
            }
        }
    }
}
