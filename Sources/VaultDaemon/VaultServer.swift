import Foundation
import Logging
import NIOCore
import VaultWire
import NIOPosix
import ServiceLifecycle
import Synchronization
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault serve`: protocol v1 on a Unix domain socket, run as a swift-service-lifecycle `Service`.
///
/// On graceful shutdown (SIGTERM/SIGINT through the `ServiceGroup`) it stops accepting, lets every
/// connection finish the requests it has in flight, closes them, and removes the socket file.
public final class VaultServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var socketPath: String
        /// Group given to the socket (mode 0660), so that non-root services can connect.
        public var socketGroup: UInt32?
        /// Connections idle this long are closed.
        public var idleTimeout: TimeAmount = .seconds(60)
        /// Beyond this many open connections, new ones are closed at once (and logged).
        public var maxConnections = 4096
        /// Beyond this many open connections from one uid, that uid's new ones are closed at once: one
        /// caller holding connections open cannot lock the others out of `maxConnections`.
        public var maxConnectionsPerUID = 1024
        /// Unanswered pipelined requests per connection before it stops reading.
        public var maxInFlight = 256
        /// How long a graceful shutdown waits for in-flight requests.
        public var drainTimeout: TimeAmount = .seconds(10)
        /// Event-loop threads: one per core but one, which the audit flusher keeps busy under load. On
        /// two cores one loop served as many reads as two, with a third of the p99 (Docs/BENCHMARKS.md).
        public var threads = max(1, System.coreCount - 1)
        /// A listening socket the service manager bound (socket activation): served as it is, and left in
        /// place at shutdown, since its owner made it. `socketPath` then only names it in logs.
        public var listeningDescriptor: CInt?
        /// The CPU each event loop is kept on (``ThreadPlacement``), in order; empty: where the kernel puts them.
        public var loopCPUs: [Int32] = []

        public init(socketPath: String) {
            self.socketPath = socketPath
        }
    }

    public let configuration: Configuration
    let processor: RequestProcessor
    let logger: Logger
    private let connections = ConnectionRegistry()
    private let bound = Mutex<(Channel, EventLoopGroup)?>(nil)
    private let ready = Mutex<[CheckedContinuation<Void, Error>]>([])
    private let state = Mutex<State>(.starting)
    /// Device and inode of the socket this server published.
    private let socketIdentity = Mutex<(dev: UInt64, ino: UInt64)?>(nil)

    private enum State { case starting, serving, failed(String), stopped }

    public init(configuration: Configuration, processor: RequestProcessor, logger: Logger) {
        self.configuration = configuration
        self.processor = processor
        self.logger = logger
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        for (index, loop) in group.makeIterator().enumerated() where index < configuration.loopCPUs.count {
            let cpu = configuration.loopCPUs[index]
            do {
                try await loop.submit { try ThreadPlacement.pinCurrentThread(to: cpu) }.get()
            } catch {
                logger.warning("event loop left where the kernel puts it", metadata: ["error": "\(error)"])
            }
        }
        let channel: Channel
        do {
            channel = try await bind(group: group)
        } catch {
            state.withLock { $0 = .failed("\(error)") }
            resumeWaiters(with: error)
            try? await group.shutdownGracefully()
            throw error
        }
        bound.withLock { $0 = (channel, group) }
        state.withLock { $0 = .serving }
        resumeWaiters(with: nil)
        logger.info("serving", metadata: ["socket": "\(configuration.socketPath)", "threads": "\(configuration.threads)"])
        // Refusals past their budget are counted; one record a second says how many (see RefusalBudget).
        let processor = self.processor
        let summaries = group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            processor.recordSuppressedRefusals()
        }

        // Runs until the service group asks for a graceful shutdown (or is cancelled).
        try? await gracefulShutdown()

        logger.info("shutting down: draining in-flight requests", metadata: ["connections": "\(connections.count)"])
        try? await channel.close()
        await connections.drain(timeout: configuration.drainTimeout)
        summaries.cancel()
        processor.watches.stop()
        processor.recordSuppressedRefusals()
        removeSocketFile()
        try? await group.shutdownGracefully()
        state.withLock { $0 = .stopped }
        logger.info("stopped")
    }

    /// Returns once the socket is accepting connections (or throws why it never will).
    public func waitUntilServing() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            let now: Result<Void, Error>? = state.withLock { s in
                switch s {
                case .serving: return .success(())
                case .failed(let why): return .failure(ServeError(why))
                case .stopped: return .failure(ServeError("stopped"))
                case .starting:
                    ready.withLock { $0.append(c) }
                    return nil
                }
            }
            if let now { c.resume(with: now) }
        }
    }

    private func resumeWaiters(with error: Error?) {
        let waiters = ready.withLock { w -> [CheckedContinuation<Void, Error>] in defer { w = [] }; return w }
        for w in waiters {
            if let error { w.resume(throwing: error) } else { w.resume() }
        }
    }

    private func bind(group: EventLoopGroup) async throws -> Channel {
        let config = configuration
        let processor = self.processor
        let connections = self.connections
        let logger = self.logger
        // One held reader per event loop, made before any connection can use it.
        var reads: [ObjectIdentifier: LoopReads] = [:]
        for loop in group.makeIterator() {
            reads[ObjectIdentifier(loop)] = LoopReads(loop: loop, vault: processor.vault)
        }
        let loopReads = reads
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.autoRead, value: true)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                PeerCredentials.of(channel: channel).flatMapThrowing { cred in
                    guard connections.admit(channel, uid: cred.uid, limit: config.maxConnections,
                                            perUID: config.maxConnectionsPerUID) else {
                        connections.noteRefused(uid: cred.uid, config: config, logger: logger)
                        channel.close(promise: nil)
                        return
                    }
                    let caller = Caller.resolve(uid: cred.uid, gid: cred.gid, pid: cred.pid)
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(processor: processor, caller: caller, maxInFlight: config.maxInFlight,
                                          reads: loopReads[ObjectIdentifier(channel.eventLoop)], idleTimeout: config.idleTimeout))
                }.flatMapErrorThrowing { error in
                    logger.warning("could not identify a connecting peer; closing it", metadata: ["error": "\(error)"])
                    channel.close(promise: nil)
                    throw error
                }
            }
        if let descriptor = config.listeningDescriptor {
            // Socket activation: systemd bound the socket and set its owner and mode (the socket unit's
            // SocketUser/SocketGroup/SocketMode); nothing is published or removed here.
            return try await bootstrap.withBoundSocket(descriptor).get()
        }
        let placement = try SocketPath.prepare(config.socketPath)
        let channel: Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: placement.stagingPath, cleanupExistingSocketFile: false).get()
        } catch {
            SocketPath.abandon(placement)
            throw error
        }
        do {
            let published = try SocketPath.publish(placement, group: config.socketGroup)
            socketIdentity.withLock { $0 = published }
        } catch {
            try? await channel.close()
            throw error
        }
        return channel
    }

    /// Removes the socket at shutdown, only if it is still the one this server published.
    private func removeSocketFile() {
        var st = stat()
        guard let ours = socketIdentity.withLock({ $0 }), lstat(configuration.socketPath, &st) == 0,
              (st.st_mode & S_IFMT) == S_IFSOCK, UInt64(st.st_dev) == ours.dev, UInt64(st.st_ino) == ours.ino else { return }
        unlink(configuration.socketPath)
    }

    /// How many connections are watching now.
    public var watcherCount: Int { processor.watches.count }

    /// How many connections are open now.
    public var connectionCount: Int { connections.count }
}

/// The open connections, for the connection caps (global and per uid) and for draining at shutdown.
final class ConnectionRegistry: Sendable {
    private struct Open {
        var channels: [ObjectIdentifier: Channel] = [:]
        var perUID: [UInt32: Int] = [:]
    }
    private let open = Mutex(Open())
    private let lastRefusalLog = Mutex<UInt64>(0)

    var count: Int { open.withLock { $0.channels.count } }

    func count(uid: UInt32) -> Int { open.withLock { $0.perUID[uid] ?? 0 } }

    func admit(_ channel: Channel, uid: UInt32, limit: Int, perUID: Int) -> Bool {
        let admitted = open.withLock { all -> Bool in
            let mine = all.perUID[uid] ?? 0
            guard all.channels.count < limit, mine < perUID else { return false }
            all.channels[ObjectIdentifier(channel)] = channel
            all.perUID[uid] = mine + 1
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { [weak self] _ in
                self?.open.withLock { all in
                    guard all.channels.removeValue(forKey: ObjectIdentifier(channel)) != nil else { return }
                    let left = (all.perUID[uid] ?? 1) - 1
                    all.perUID[uid] = left > 0 ? left : nil
                }
            }
        }
        return admitted
    }

    /// Logs a refused connection, at most once a second.
    func noteRefused(uid: UInt32, config: VaultServer.Configuration, logger: Logger) {
        let now = DispatchTime.now().uptimeNanoseconds
        let log = lastRefusalLog.withLock { last -> Bool in
            guard now &- last > 1_000_000_000 else { return false }
            last = now
            return true
        }
        if log {
            logger.warning("connection limit reached: refusing new connections", metadata: [
                "uid": "\(uid)", "uid_connections": "\(count(uid: uid))", "max_connections_per_uid": "\(config.maxConnectionsPerUID)",
                "connections": "\(count)", "max_connections": "\(config.maxConnections)"])
        }
    }

    func drain(timeout: TimeAmount) async {
        let channels = open.withLock { Array($0.channels.values) }
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(DrainEvent()) }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, timeout.nanoseconds))
        while count > 0 && DispatchTime.now().uptimeNanoseconds < deadline {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        for channel in open.withLock({ Array($0.channels.values) }) { try? await channel.close() }
    }
}
