import Dispatch
import Foundation
import NIOCore
import PostgresNIO
import Synchronization
import VaultCore

/// The rows a daemon remembers, and the `LISTEN` connection that keeps them true.
///
/// Every commit that changes a token, on any host, sends `t:NAME` on channel `tokenvault_changes` (a
/// trigger does it, so no writer can forget). The feed drops that row; the next read goes to the database.
/// While the listening connection is down — or silent for ``silenceLimit`` — nothing is remembered and every
/// read goes through, so a daemon never serves a row it could not hear change. With the database down
/// too, reads fail `unavailable`: never a token that was removed meanwhile.
///
/// A read that went to the database is remembered only if no notification arrived (and the connection did
/// not drop) while it was in flight: the generation counter moves on each of those.
final class ChangeFeed: Sendable {
    static let channel = "tokenvault_changes"
    /// The most rows remembered; past it the memory starts afresh.
    static let maxRemembered = 65_536
    /// The longest the listener may go without answering its heartbeat before it is treated as down.
    static let silenceLimit: TimeAmount = .milliseconds(1500)

    struct Entry {
        var record: TokenRecord
        var serial: UInt64
        var checked: Bool
    }

    struct State {
        var live = false
        var stopped = false
        var generation: UInt64 = 0
        var serial: UInt64 = 0
        var rows: [String: Entry] = [:]
        var listener: PostgresConnection?
        var lastHeard = NIODeadline.now()
        var heartbeat: RepeatedTask?
    }

    private let connections: Connections
    private let state = Mutex(State())

    init(connections: Connections) {
        self.connections = connections
    }

    // MARK: listening

    /// Connects the listener; a failure here is the caller's (the daemon does not start without it).
    func start() throws {
        try listen()
    }

    func stop() {
        let (listener, heartbeat) = state.withLock { s -> (PostgresConnection?, RepeatedTask?) in
            s.stopped = true
            s.live = false
            s.rows.removeAll()
            defer { s.listener = nil; s.heartbeat = nil }
            return (s.listener, s.heartbeat)
        }
        heartbeat?.cancel()
        if let listener { Connections.discard(listener) }
    }

    private func listen() throws {
        let connection = try connections.connect()
        connection.addListener(channel: Self.channel) { [weak self] _, notification in
            self?.heard(notification.payload)
        }
        do {
            _ = try connections.query("LISTEN tokenvault_changes", on: connection)
        } catch {
            Connections.discard(connection)
            throw error
        }
        let loop = connection.eventLoop
        let heartbeat = loop.scheduleRepeatedTask(initialDelay: .milliseconds(500), delay: .milliseconds(500)) { [weak self] _ in
            self?.beat(connection)
        }
        let kept = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            // Anything remembered before this connection listened may have changed unheard.
            s.rows.removeAll()
            s.generation &+= 1
            s.listener = connection
            s.heartbeat = heartbeat
            s.lastHeard = .now()
            s.live = true
            return true
        }
        guard kept else {
            heartbeat.cancel()
            Connections.discard(connection)
            return
        }
        connection.closeFuture.whenComplete { [weak self] _ in self?.lost(connection) }
    }

    /// One heartbeat: a query on the listener. A listener that stays silent past the limit is closed,
    /// which forgets every row (the network may have gone without the socket noticing).
    private func beat(_ connection: PostgresConnection) {
        let silent = state.withLock { NIODeadline.now() - $0.lastHeard > Self.silenceLimit }
        if silent {
            Connections.discard(connection)
            return
        }
        connection.query("SELECT 1", logger: Connections.logger).whenSuccess { [weak self] _ in
            self?.state.withLock { $0.lastHeard = .now() }
        }
    }

    private func lost(_ connection: PostgresConnection) {
        let retry = state.withLock { s -> Bool in
            guard s.listener === connection else { return false }
            s.live = false
            s.rows.removeAll()
            s.generation &+= 1
            s.listener = nil
            s.heartbeat?.cancel()
            s.heartbeat = nil
            return !s.stopped
        }
        if retry { reconnect(after: .milliseconds(100)) }
    }

    /// Tries again after `delay` (doubling to 2 s), off the connections' loop: connecting blocks, and the
    /// loop is what a connection needs to make progress.
    private func reconnect(after delay: TimeAmount) {
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(delay.nanoseconds))) { [weak self] in
            guard let self, !self.state.withLock({ $0.stopped }) else { return }
            do { try self.listen() } catch { self.reconnect(after: min(delay * 2, .seconds(2))) }
        }
    }

    /// A notification: `t:NAME` drops one row, `*` drops them all; anything else (a data key) needs nothing,
    /// as data keys are looked up by id and never change under one id.
    private func heard(_ payload: String) {
        state.withLock { s in
            s.lastHeard = .now()
            s.generation &+= 1
            if payload.hasPrefix("t:") {
                s.rows.removeValue(forKey: String(payload.dropFirst(2)))
            } else if payload == "*" {
                s.rows.removeAll()
            }
        }
    }

    // MARK: remembered rows

    /// The remembered row of `name` and its serial, or the generation to remember a read under.
    /// A listener silent past the limit (a half-open connection, a hung server) counts as down here too,
    /// whether or not its heartbeat has fired yet.
    func lookup(_ name: String) -> (entry: Entry?, generation: UInt64, live: Bool) {
        state.withLock { s in
            let live = s.live && NIODeadline.now() - s.lastHeard <= Self.silenceLimit
            return (live ? s.rows[name] : nil, s.generation, live)
        }
    }

    /// Remembers `record` if nothing changed since `generation` was taken. Returns its serial.
    func remember(_ record: TokenRecord, generation: UInt64) -> UInt64? {
        state.withLock { s in
            guard s.live, s.generation == generation else { return nil }
            if s.rows.count >= Self.maxRemembered { s.rows.removeAll(keepingCapacity: true) }
            s.serial &+= 1
            s.rows[record.name] = Entry(record: record, serial: s.serial, checked: false)
            return s.serial
        }
    }

    func isChecked(_ name: String, serial: UInt64) -> Bool {
        state.withLock { s in s.rows[name].map { $0.serial == serial && $0.checked } ?? false }
    }

    /// Marks the row of `name` checked, only if it is still the very row (`serial`) that was checked.
    func markChecked(_ name: String, serial: UInt64) {
        state.withLock { s in
            if s.rows[name]?.serial == serial { s.rows[name]?.checked = true }
        }
    }

    var rememberedCount: Int { state.withLock { $0.rows.count } }

    /// One event loop's view of the feed (the seam's ``HeldTokenReader``).
    final class Reader: HeldTokenReader, @unchecked Sendable {
        let feed: ChangeFeed
        let store: PostgresStore
        /// The serial of the row last returned for a name, so a check is credited to that row only.
        private var last: (name: String, serial: UInt64)?

        init(feed: ChangeFeed, store: PostgresStore) {
            self.feed = feed
            self.store = store
        }

        func token(named name: String) throws -> TokenRecord? {
            let (entry, generation, live) = feed.lookup(name)
            if let entry {
                last = (name, entry.serial)
                return entry.record
            }
            last = nil
            guard let record = try store.token(named: name) else { return nil }
            if live, let serial = feed.remember(record, generation: generation) { last = (name, serial) }
            return record
        }

        func isChecked(_ name: String) -> Bool {
            guard let last, last.name == name else { return false }
            return feed.isChecked(name, serial: last.serial)
        }

        func markChecked(_ name: String) {
            guard let last, last.name == name else { return }
            feed.markChecked(name, serial: last.serial)
        }

        func release() {}

        var rememberedCount: Int { feed.rememberedCount }
    }
}
