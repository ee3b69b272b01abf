import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization
import VaultCore

/// The store's connections to PostgreSQL: one event-loop thread of their own, a small free list, and a
/// blocking call for the vault's synchronous seam.
///
/// The vault's store API is synchronous (the SQLite default answers in microseconds on the caller's
/// thread). A call here hands its query to the connections' own event loop and blocks the caller until
/// the answer — or until `timeout`, when the connection is dropped and the call fails `unavailable`.
/// The caller may be one of the daemon's event loops: it blocks as it would on SQLite's disk, and never
/// on its own loop (the connections have theirs).
final class Connections: Sendable {
    let location: PostgresLocation
    let group: MultiThreadedEventLoopGroup
    private let configuration: PostgresConnection.Configuration
    private let free = Mutex<[PostgresConnection]>([])
    private let nextID = Atomic<Int>(1)
    private let closed = Atomic<Bool>(false)
    /// The longest a query may take before the store calls the database unreachable.
    let timeout: TimeAmount
    static let logger = Logger(label: "tokenvault.postgres", factory: { _ in SwiftLogNoOpLogHandler() })

    init(location: PostgresLocation, timeout: TimeAmount = .seconds(10)) throws {
        self.location = location
        self.timeout = timeout
        let password: String?
        do { password = try location.password() } catch let p as PostgresLocation.Problem {
            throw StoreError.io(path: location.description, detail: p.description)
        }
        var configuration: PostgresConnection.Configuration
        if let socket = location.socketPath {
            configuration = .init(unixSocketPath: socket, username: location.user, password: password, database: location.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch location.tls {
            case .disable:
                tls = .disable
            case .verifyFull:
                var config = TLSConfiguration.makeClientConfiguration()
                config.certificateVerification = .fullVerification
                if let root = location.rootCertificate { config.trustRoots = .file(root) }
                do { tls = .require(try NIOSSLContext(configuration: config)) } catch {
                    throw StoreError.io(path: location.description, detail: "cannot set up TLS: \(error)")
                }
            }
            configuration = .init(host: location.host ?? "localhost", port: location.port, username: location.user,
                                  password: password, database: location.database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.additionalStartupParameters = [("application_name", "tokenvault")]
        self.configuration = configuration
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// A connection from the free list, or a new one.
    func checkout() throws -> PostgresConnection {
        guard !closed.load(ordering: .relaxed) else { throw StoreError.unavailable(store: location.description, detail: "the store was closed") }
        while let c = free.withLock({ $0.popLast() }) {
            if c.isClosed { continue }
            return c
        }
        return try connect()
    }

    /// A new connection, for the caller alone (the change listener, the rotation lock).
    func connect() throws -> PostgresConnection {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let future = PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: Self.logger)
        do {
            return try wait(future, what: "connecting")
        } catch {
            // A connection that arrives after we gave up on it is closed, never left open.
            future.whenSuccess { Self.discard($0) }
            throw error
        }
    }

    /// Returns a connection to the free list (kept only when it is healthy and no transaction is open).
    func checkin(_ connection: PostgresConnection, healthy: Bool) {
        if healthy, !connection.isClosed, !closed.load(ordering: .relaxed) {
            let kept: Bool = free.withLock {
                guard $0.count < 8 else { return false }
                $0.append(connection)
                return true
            }
            if kept { return }
        }
        Connections.discard(connection)
    }

    /// Closes a connection without waiting; it is kept alive until it is closed (postgres-nio requires it).
    static func discard(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    func close() {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        let all = free.withLock { list -> [PostgresConnection] in defer { list.removeAll() }; return list }
        // Never block on the connections' own loop (a close from a callback there would wait on itself).
        let onLoop = group.next().inEventLoop
        for c in all {
            if onLoop { Self.discard(c) } else { _ = try? wait(c.close(), what: "closing") }
        }
        group.shutdownGracefully(queue: .global()) { _ in }
    }

    // MARK: - blocking

    private final class Slot<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
        let done = DispatchSemaphore(value: 0)
    }

    /// Blocks until `future` completes or `timeout` passes. Not `EventLoopFuture.wait()`: that refuses to
    /// run on any event loop, and the daemon calls in from its own.
    func wait<T>(_ future: EventLoopFuture<T>, what: String) throws -> T {
        // On the connections' own loop a wait would wait on itself: a bug, refused loudly rather than hung.
        guard !future.eventLoop.inEventLoop else {
            assertionFailure("a blocking store call on the store's own event loop")
            throw StoreError.unavailable(store: location.description, detail: "a blocking call was made on the store's own event loop")
        }
        let slot = Slot<T>()
        future.whenComplete { result in
            slot.result = result
            slot.done.signal()
        }
        let nanos = max(0, timeout.nanoseconds)
        if slot.done.wait(timeout: .now() + .nanoseconds(Int(nanos))) == .timedOut {
            throw StoreError.unavailable(store: location.description, detail: "no answer while \(what) within \(nanos / 1_000_000_000) s")
        }
        switch slot.result! {
        case .success(let value): return value
        case .failure(let error): throw translate(error)
        }
    }

    /// Runs one statement and returns its rows.
    func query(_ query: PostgresQuery, on connection: PostgresConnection) throws -> PostgresQueryResult {
        do {
            return try wait(connection.query(query, logger: Self.logger), what: "querying")
        } catch let e as StoreError {
            if case .unavailable = e { Connections.discard(connection) }  // a late answer must not land on a reused connection
            throw e
        }
    }

    /// PostgreSQL failures as the seam's errors, each saying what to do.
    func translate(_ error: any Error) -> any Error {
        if error is StoreError { return error }
        guard let e = error as? PSQLError else {
            return StoreError.unavailable(store: location.description, detail: "\(error)")
        }
        switch e.code {
        case .server:
            let state = e.serverInfo?[.sqlState] ?? ""
            let message = e.serverInfo?[.message] ?? "server error"
            switch state {
            case "53100": return StoreError.diskFull(path: location.description)
            case "40001", "40P01", "55P03": return StoreError.busy(path: location.description)
            case "57P01", "57P02", "57P03", "08000", "08003", "08006": return StoreError.unavailable(store: location.description, detail: message)
            case "28P01", "28000":
                return StoreError.io(path: location.description, detail: "the server refused the login (\(message)); check the user and the password file")
            case let s where s.hasPrefix("23"): return StoreError.rejected(store: location.description, detail: message)
            case "3D000": return StoreError.io(path: location.description, detail: "\(message); create it with `createdb` first")
            default: return StoreError.io(path: location.description, detail: "\(message) (SQLSTATE \(state))")
            }
        case .sslUnsupported:
            return StoreError.io(path: location.description, detail: "the server does not offer TLS; enable ssl on it, or connect over its Unix socket")
        case .authMechanismRequiresPassword:
            return StoreError.io(path: location.description, detail: "the server asks for a password and none was found: name a file with --store-password-file, or set PGPASSFILE")
        default:
            return StoreError.unavailable(store: location.description, detail: "\(e.code)\(e.underlying.map { ": \($0)" } ?? "")")
        }
    }
}
