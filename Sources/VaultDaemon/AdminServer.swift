import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `<home>/admin.sock`: the owner's view of a running daemon, for `tokenvault status`.
///
/// Mode 0600, and only a peer with the daemon's own uid (or root) is answered: the kernel says who it is
/// (SO_PEERCRED), as on the main socket. A client sends one line naming what it wants (`status`) and gets one
/// JSON line back; then the connection closes. Nothing it answers holds a secret. It runs on an event loop
/// of its own, so a busy read path never delays it, and it never touches the read path's loops.
public final class AdminServer: Service, Sendable {
    public let socketPath: String
    let report: @Sendable () -> String
    let everySecond: @Sendable () -> Void
    let logger: Logger
    private let identity = Mutex<(dev: UInt64, ino: UInt64)?>(nil)

    /// `report` builds the status line (on the admin loop); `everySecond` runs once a second there (to
    /// sample counters into rates).
    public init(socketPath: String, report: @escaping @Sendable () -> String, everySecond: @escaping @Sendable () -> Void = {},
                logger: Logger) {
        self.socketPath = socketPath
        self.report = report
        self.everySecond = everySecond
        self.logger = logger
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel: Channel
        do {
            channel = try await bind(group: group)
        } catch {
            // The admin socket is for people: without it the daemon still serves, and says why once.
            logger.warning("no admin socket: `tokenvault status` will not reach this daemon", metadata: ["socket": "\(socketPath)", "error": "\(error)"])
            try? await group.shutdownGracefully()
            try? await gracefulShutdown()
            return
        }
        let tick = everySecond
        let sampler = group.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in tick() }
        try? await gracefulShutdown()
        sampler.cancel()
        try? await channel.close()
        var st = stat()
        if let ours = identity.withLock({ $0 }), lstat(socketPath, &st) == 0, UInt64(st.st_dev) == ours.dev, UInt64(st.st_ino) == ours.ino {
            unlink(socketPath)
        }
        try? await group.shutdownGracefully()
    }

    private func bind(group: EventLoopGroup) async throws -> Channel {
        let placement = try SocketPath.prepare(socketPath)
        let report = self.report
        let owner = geteuid()
        let channel: Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    PeerCredentials.of(channel: channel).flatMapThrowing { cred in
                        guard cred.uid == owner || cred.uid == 0 else {
                            channel.close(promise: nil)
                            return
                        }
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(report: report))
                    }
                }
                .bind(unixDomainSocketPath: placement.stagingPath, cleanupExistingSocketFile: false)
                .get()
        } catch {
            SocketPath.abandon(placement)
            throw error
        }
        do {
            let published = try SocketPath.publish(placement, group: nil, mode: 0o600)
            identity.withLock { $0 = published }
        } catch {
            try? await channel.close()
            throw error
        }
        return channel
    }
}

/// One admin connection: a request line in (at most 256 bytes), one JSON line out, then close.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maxRequest = 256
    private let report: @Sendable () -> String
    private var request = ByteBuffer()
    private var answered = false

    init(report: @escaping @Sendable () -> String) {
        self.report = report
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        var bytes = unwrapInboundIn(data)
        request.writeBuffer(&bytes)
        guard let newline = request.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if request.readableBytes > Self.maxRequest { answer(#"{"ok":false,"error":"request too large"}"#, context: context) }
            return
        }
        let line = String(decoding: request.readableBytesView[request.readerIndex..<newline], as: UTF8.self)
            .trimmingCharacters(in: .whitespaces)
        switch line {
        case "status": answer(report(), context: context)
        default: answer(#"{"ok":false,"error":"unknown request; the admin socket answers: status"}"#, context: context)
        }
    }

    private func answer(_ line: String, context: ChannelHandlerContext) {
        answered = true
        var out = context.channel.allocator.buffer(capacity: line.utf8.count + 1)
        out.writeString(line)
        out.writeString("\n")
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Reads and refusals the daemon answered, by outcome, for `status` (atomics: counted on the event loops),
/// and as `tokenvault_reads_total{outcome=…}` for metrics (a no-op unless a metrics backend is bootstrapped
/// before the daemon is made).
public final class ReadCounters: Sendable {
    private let granted = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)
    private let grantedMetric = Counter(label: "tokenvault_reads_total", dimensions: [("outcome", "granted")])
    private let refusedMetric = Counter(label: "tokenvault_reads_total", dimensions: [("outcome", "refused")])
    private let failedMetric = Counter(label: "tokenvault_reads_total", dimensions: [("outcome", "failed")])

    public init() {}

    func count(granted g: Bool = false, refused r: Bool = false, failed f: Bool = false) {
        if g { granted.add(1, ordering: .relaxed); grantedMetric.increment() }
        if r { refused.add(1, ordering: .relaxed); refusedMetric.increment() }
        if f { failed.add(1, ordering: .relaxed); failedMetric.increment() }
    }

    /// Totals since start: reads that disclosed a token, refusals (denied, not found, rate limited), failures.
    public var totals: (granted: Int, refused: Int, failed: Int) {
        (granted.load(ordering: .relaxed), refused.load(ordering: .relaxed), failed.load(ordering: .relaxed))
    }
}
