import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension TokenVaultClient {
    /// One `watch` event: a name this caller may read changed. It never carries the token: read it again
    /// with ``get(_:proof:)``.
    public struct Change: Sendable, Equatable {
        public enum Kind: String, Sendable {
            case replaced, removed, refreshed
        }
        public let name: String
        public let kind: Kind

        public init(name: String, kind: Kind) {
            self.name = name
            self.kind = kind
        }
    }

    /// The changes to the names matching `patterns` (exact names or `prefix*`), as they are committed:
    ///
    ///     for try await change in vault.watch(["acme/*"]) {
    ///         let fresh = try await vault.get(change.name)
    ///     }
    ///
    /// The sequence throws the daemon's refusal (`denied` for a pattern the policy does not let this caller
    /// read) and ends when the daemon closes the connection (it stopped, or this watcher fell too far
    /// behind): reconnect and `get` again, since changes made meanwhile are not replayed. Cancelling the
    /// task that iterates closes the connection.
    public func watch(_ patterns: [String]) -> AsyncThrowingStream<Change, Swift.Error> {
        let client = self
        return AsyncThrowingStream { continuation in
            let connection: WatchConnection
            do {
                connection = try WatchConnection(client: client, patterns: patterns)
            } catch {
                continuation.finish(throwing: error)
                return
            }
            let thread = Thread {
                do {
                    while let change = try connection.next() { continuation.yield(change) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: connection.isClosed ? nil : error)
                }
                connection.close()
            }
            thread.name = "tokenvault-client-watch"
            continuation.onTermination = { _ in connection.shutdown() }
            thread.start()
        }
    }
}

/// A `watch` connection read with blocking calls (what ``TokenVaultClient/watch(_:)`` runs on a thread of
/// its own, and what `tokenvault run --watch` polls): it is acknowledged when `init` returns.
public final class WatchConnection: Sendable {
    /// The socket, for `poll(2)`; ``next()`` reads from it.
    public let fileDescriptor: Int32
    private let client: TokenVaultClient
    private let buffered = Mutex(Data())
    private let closed = Atomic<Bool>(false)
    private let descriptorClosed = Atomic<Bool>(false)

    public init(client: TokenVaultClient, patterns: [String]) throws {
        let fd = try client.connectChecked()
        do {
            let request = try JSONSerialization.data(withJSONObject: ["op": "watch", "names": patterns] as [String: Any]) + Data("\n".utf8)
            try TokenVaultClient.sendAll(fd, request)
            var rest = Data()
            let line = try client.readLine(fd, &rest)
            guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                throw TokenVaultClient.Error.protocolError("the reply is not a JSON object")
            }
            _ = try TokenVaultClient.checked(object)
            // Events come whenever they come: no receive timeout from here on.
            var none = timeval(tv_sec: 0, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, socklen_t(MemoryLayout<timeval>.size))
            self.buffered.withLock { $0 = rest }
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.fileDescriptor = fd
        self.client = client
    }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// Whether an event is already read and waiting (then ``next()`` does not block).
    public var hasBuffered: Bool { buffered.withLock { $0.contains(0x0a) } }

    /// The next event, blocking until one comes; nil when the daemon closed the connection.
    public func next() throws -> TokenVaultClient.Change? {
        while true {
            var data = buffered.withLock { $0 }
            let line: Data
            do {
                line = try client.readLine(fileDescriptor, &data)
            } catch TokenVaultClient.Error.protocolError(let why) where why.contains("closed the connection") {
                return nil
            }
            buffered.withLock { $0 = data }
            guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                throw TokenVaultClient.Error.protocolError("an event that is not a JSON object")
            }
            // Unknown event types are skipped: the protocol may add some.
            guard object["event"] as? String == "changed", let name = object["name"] as? String else { continue }
            let kind = (object["change"] as? String).flatMap(TokenVaultClient.Change.Kind.init(rawValue:)) ?? .replaced
            return TokenVaultClient.Change(name: name, kind: kind)
        }
    }

    /// Wakes a blocked ``next()`` (which then ends) without closing the descriptor under it.
    public func shutdown() {
        closed.store(true, ordering: .releasing)
        Glibc.shutdown(fileDescriptor, Int32(SHUT_RDWR))
    }

    /// Closes the connection (once; later calls do nothing).
    public func close() {
        closed.store(true, ordering: .releasing)
        guard !descriptorClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.close(fileDescriptor)
    }

    deinit { close() }
}
