import Foundation
import NIOCore
import PostgresNIO
import VaultCore

/// The shared store: one PostgreSQL database that several hosts' vaults use at once.
///
/// It holds what `vault.db` holds — sealed values, wrapped keys, metadata, checkpoints — and never a key
/// or a plaintext token. Writes are PostgreSQL transactions (READ COMMITTED, rows read for a change locked
/// `FOR UPDATE`); reads on the daemon's hot path come from ``ChangeFeed``'s remembered rows, which every
/// commit on any host invalidates through `LISTEN`/`NOTIFY`.
public final class PostgresStore: VaultStorage {
    public let postgres: PostgresLocation
    public var location: String { postgres.description }
    public var isShared: Bool { true }
    let connections: Connections
    let feed: ChangeFeed

    /// Connects, applies pending migrations, and (with `listen`, the daemon) starts the change listener.
    public init(location: PostgresLocation, listen: Bool = false, timeout: TimeAmount = .seconds(10)) throws {
        postgres = location
        connections = try Connections(location: location, timeout: timeout)
        feed = ChangeFeed(connections: connections)
        do {
            try migrate()
            if listen { try feed.start() }
        } catch {
            connections.close()
            throw error
        }
    }

    public func close() {
        feed.stop()
        connections.close()
    }

    deinit { close() }

    // MARK: transactions

    public func write<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try transaction(begin: "BEGIN", forUpdate: true, body)
    }

    public func writeBulk<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try transaction(begin: "BEGIN", forUpdate: true, body)
    }

    public func read<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        try transaction(begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", forUpdate: false, body)
    }

    func transaction<T>(begin: String, forUpdate: Bool, _ body: (any StorageTransaction) throws -> T) throws -> T {
        let connection = try connections.checkout()
        var healthy = false
        defer { connections.checkin(connection, healthy: healthy) }
        let tx = PostgresTransaction(connections: connections, connection: connection, forUpdate: forUpdate)
        _ = try connections.query(PostgresQuery(unsafeSQL: begin), on: connection)
        do {
            let result = try body(tx)
            _ = try connections.query("COMMIT", on: connection)
            healthy = true
            return result
        } catch {
            // A failed statement leaves the transaction aborted: roll it back so the connection can be reused.
            if (try? connections.query("ROLLBACK", on: connection)) != nil { healthy = true }
            throw error
        }
    }

    /// Runs one statement outside any transaction (the fast reads).
    func autocommit(_ query: PostgresQuery) throws -> PostgresQueryResult {
        let connection = try connections.checkout()
        var healthy = false
        defer { connections.checkin(connection, healthy: healthy) }
        let result = try connections.query(query, on: connection)
        healthy = true
        return result
    }

    // MARK: fast reads

    public func token(named name: String) throws -> TokenRecord? {
        try autocommit("SELECT \(unescaped: PostgresTransaction.tokenColumns) FROM tokens WHERE name = \(name)")
            .first.map(PostgresTransaction.tokenRecord)
    }

    public func appSeal(named name: String) throws -> AppSeal? {
        try autocommit("SELECT app_id, sealed_secret, data_key_id FROM apps WHERE name = \(name)").first.map { row in
            let (appId, sealed, keyId) = try row.decode((String, Data, Int64).self)
            return AppSeal(appId: appId, sealed: sealed, dataKeyId: keyId)
        }
    }

    public func tokenNames() throws -> [String] {
        try autocommit("SELECT name FROM tokens ORDER BY name").map { try $0.decode(String.self) }
    }

    public func makeHeldReader() -> any HeldTokenReader {
        ChangeFeed.Reader(feed: feed, store: self)
    }

    // MARK: the rotation lock

    /// The advisory lock every host's `key rotate` takes (session level, on a connection of its own, so a
    /// crashed holder's lock ends with its session).
    static let rotationLockKey: Int64 = 0x746F6B76_726F74  // "tokvrot"

    public func withRotationLock<T>(holder: String, wait: Bool, _ body: () throws -> T) throws -> T {
        let connection = try connections.connect()
        defer { Connections.discard(connection) }
        // Polled, not `pg_advisory_lock`: a wait longer than the query timeout would read as an outage.
        var told = false
        while true {
            let got = try connections.query("SELECT pg_try_advisory_lock(\(Self.rotationLockKey))", on: connection)
                .first?.decode(Bool.self) ?? false
            if got { break }
            let who = try? connections.query("SELECT value FROM vault_meta WHERE key = 'rotation_lock_holder'", on: connection)
                .first?.decode(String.self)
            guard wait else { throw StoreError.locked(what: "the key rotation lock of \(location)", holder: who ?? "another host") }
            if !told { FileHandle.standardError.write(Data("waiting for the key rotation lock, held by \(who ?? "another host")\n".utf8)); told = true }
            usleep(250_000)
        }
        _ = try connections.query("""
            INSERT INTO vault_meta(key, value) VALUES ('rotation_lock_holder', \(holder))
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
            """, on: connection)
        defer { _ = try? connections.query("SELECT pg_advisory_unlock(\(Self.rotationLockKey))", on: connection) }
        return try body()
    }

    // MARK: leases

    /// A lease: a session advisory lock on a connection of its own, ended by `release()` or by the session.
    final class AdvisoryLease: StoreLease, @unchecked Sendable {
        let connection: PostgresConnection
        let connections: Connections
        let key: Int64
        private let released = NSLock()
        private var done = false

        init(connection: PostgresConnection, connections: Connections, key: Int64) {
            self.connection = connection
            self.connections = connections
            self.key = key
        }

        func release() {
            let first: Bool = released.withLock { defer { done = true }; return !done }
            guard first else { return }
            _ = try? connections.query("SELECT pg_advisory_unlock(\(key))", on: connection)
            Connections.discard(connection)
        }

        deinit { release() }
    }

    /// The advisory-lock key of a lease name (FNV-1a, 64 bits; the rotation and migration locks are fixed).
    static func leaseKey(_ name: String) -> Int64 {
        var h: UInt64 = 0xcbf29ce484222325
        for b in ("tokenvault-lease:" + name).utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return Int64(bitPattern: h)
    }

    public func tryLease(_ name: String, holder: String) throws -> (any StoreLease)? {
        let key = Self.leaseKey(name)
        let connection = try connections.connect()
        do {
            let got = try connections.query("SELECT pg_try_advisory_lock(\(key))", on: connection).first?.decode(Bool.self) ?? false
            guard got else {
                Connections.discard(connection)
                return nil
            }
        } catch {
            Connections.discard(connection)
            throw error
        }
        return AdvisoryLease(connection: connection, connections: connections, key: key)
    }

    // MARK: migrations

    static let migrationLockKey: Int64 = 0x746F6B76_6D6967  // "tokvmig"

    /// Applies pending migrations, each in one transaction, under an advisory lock so that hosts starting
    /// together migrate once.
    func migrate() throws {
        let connection = try connections.checkout()
        var healthy = false
        defer { connections.checkin(connection, healthy: healthy) }
        _ = try connections.query("SELECT pg_advisory_lock(\(Self.migrationLockKey))", on: connection)
        defer { _ = try? connections.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", on: connection) }
        _ = try connections.query("""
            CREATE TABLE IF NOT EXISTS tokenvault_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
            """, on: connection)
        let applied = Set(try connections.query("SELECT name FROM tokenvault_migrations", on: connection).map { try $0.decode(String.self) })
        for (name, statements) in Schema.migrations where !applied.contains(name) {
            _ = try connections.query("BEGIN", on: connection)
            do {
                for sql in statements { _ = try connections.query(PostgresQuery(unsafeSQL: sql), on: connection) }
                _ = try connections.query("INSERT INTO tokenvault_migrations(name) VALUES (\(name))", on: connection)
                _ = try connections.query("COMMIT", on: connection)
            } catch {
                _ = try? connections.query("ROLLBACK", on: connection)
                throw error
            }
        }
        healthy = true
    }
}
