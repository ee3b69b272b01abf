import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Metrics
import Prometheus
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Where the metrics endpoint listens: a Unix socket (mode 0600), or a loopback TCP port. Anything else is
/// refused: metrics say how many tokens are in which state and who is reading how much, so exposing them
/// beyond the host is a proxy's decision, with its own access control, not a default.
public enum MetricsListen: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case loopback(host: String, port: Int)

    public struct Problem: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String) throws -> MetricsListen {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/"), path.utf8.count < 108 else {
                throw Problem(description: "metrics.listen \"\(text)\": a Unix socket needs an absolute path (unix:/run/tokenvault/metrics.sock)")
            }
            return .unix(path: path)
        }
        var host = text, port = ""
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            port = String(text[text.index(after: close)...].dropFirst())
        } else if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            port = String(text[text.index(after: colon)...])
        }
        guard let p = Int(port), (1...65_535).contains(p) else {
            throw Problem(description: "metrics.listen \"\(text)\": give unix:PATH or HOST:PORT (127.0.0.1:9464)")
        }
        guard ["127.0.0.1", "::1", "localhost"].contains(host) else {
            throw Problem(description: "metrics.listen \"\(text)\": only a loopback address (127.0.0.1, [::1]) or a Unix socket; "
                          + "put a proxy with its own access control in front to expose metrics beyond this host")
        }
        return .loopback(host: host == "localhost" ? "127.0.0.1" : host, port: p)
    }

    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .loopback(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

/// Serves `GET /metrics` in Prometheus's text format from `registry`, calling `beforeScrape` first (to
/// set the gauges that are read, not counted). On an event loop of its own; off unless configured.
public final class MetricsServer: Service, Sendable {
    let listen: MetricsListen
    let registry: PrometheusCollectorRegistry
    let beforeScrape: @Sendable () -> Void
    let logger: Logger

    public init(listen: MetricsListen, registry: PrometheusCollectorRegistry, beforeScrape: @escaping @Sendable () -> Void = {}, logger: Logger) {
        self.listen = listen
        self.registry = registry
        self.beforeScrape = beforeScrape
        self.logger = logger
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let registry = self.registry, beforeScrape = self.beforeScrape
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(registry: registry, beforeScrape: beforeScrape))
                }
            }
        let channel: Channel
        do {
            switch listen {
            case .unix(let path):
                // A stale socket from a crash is replaced; the file is the owner's only (mode 0600).
                var st = stat()
                if lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
                let old = umask(0o177)
                defer { umask(old) }
                channel = try await bootstrap.bind(unixDomainSocketPath: path).get()
            case .loopback(let host, let port):
                channel = try await bootstrap.bind(host: host, port: port).get()
            }
        } catch {
            try? await group.shutdownGracefully()
            throw MetricsListen.Problem(description: "cannot listen for metrics on \(listen): \(error)")
        }
        logger.info("metrics", metadata: ["listen": "\(listen)"])
        try? await gracefulShutdown()
        try? await channel.close()
        if case .unix(let path) = listen { unlink(path) }
        try? await group.shutdownGracefully()
    }
}

/// One HTTP/1.1 connection of the metrics endpoint.
final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let beforeScrape: @Sendable () -> Void
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, beforeScrape: @escaping @Sendable () -> Void) {
        self.registry = registry
        self.beforeScrape = beforeScrape
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if head.method != .GET && head.method != .HEAD {
                respond(context, head, .methodNotAllowed, "only GET /metrics\n", type: "text/plain")
            } else if path == "/metrics" {
                beforeScrape()
                respond(context, head, .ok, registry.emitToString(), type: "text/plain; version=0.0.4; charset=utf-8")
            } else {
                respond(context, head, .notFound, "only GET /metrics\n", type: "text/plain")
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: String, type: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}

extension MetricsServer {
    /// Makes the Prometheus registry and bootstraps swift-metrics with it: call once, before anything that
    /// counts (the read path's counters and the audit log's timer pick their backend when they are made).
    public static func bootstrap(listen: MetricsListen, logger: Logger) -> (registry: PrometheusCollectorRegistry, make: (@escaping @Sendable () -> Void) -> MetricsServer) {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return (registry, { MetricsServer(listen: listen, registry: registry, beforeScrape: $0, logger: logger) })
    }
}

/// Sets a gauge that is read at scrape time (connections, audit seq, token states), through swift-metrics.
public func recordGauge(_ label: String, _ value: Double, _ dimensions: [(String, String)] = []) {
    Gauge(label: label, dimensions: dimensions).record(value)
}
