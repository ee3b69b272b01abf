import Foundation
import TestSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A fake Graph API on a loopback port, answering with Meta's documented JSON shapes.
final class FakeGraph: Sendable {
    struct Request: Sendable {
        let path: String
        let query: [String: String]
    }

    typealias Handler = @Sendable (Request) -> (Int, String)

    final class State: Sendable {
        let requests = Mutex<[Request]>([])
        let handler: Mutex<Handler>
        /// Sent with every answer (Meta's usage headers, say).
        let headers = Mutex<[String: String]>([:])
        init(_ h: @escaping Handler) { handler = Mutex(h) }
    }

    let state: State
    private let channel: Channel
    let port: Int

    var url: String { "http://127.0.0.1:\(port)" }

    init(_ handler: @escaping Handler) async throws {
        let state = State(handler)
        self.state = state
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.pipeline.configureHTTPServerPipeline().flatMap {
                    ch.pipeline.addHandler(FakeGraphHandler(respond: { req in
                        state.requests.withLock { $0.append(req) }
                        return state.handler.withLock { $0 }(req)
                    }, headers: { state.headers.withLock { $0 } }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
    }

    func setHandler(_ h: @escaping Handler) { state.handler.withLock { $0 = h } }

    func setHeaders(_ h: [String: String]) { state.headers.withLock { $0 = h } }

    var requests: [Request] { state.requests.withLock { $0 } }

    func count(_ path: String) -> Int { requests.filter { $0.path.hasSuffix(path) }.count }

    func stop() async { try? await channel.close() }

    static func ok(_ json: String) -> (Int, String) { (200, json) }

    static func error(_ status: Int, code: Int, subcode: Int? = nil, message: String, type: String = "OAuthException") -> (Int, String) {
        let sub = subcode.map { ",\"error_subcode\":\($0)" } ?? ""
        return (status, #"{"error":{"message":"\#(message)","type":"\#(type)","code":\#(code)\#(sub),"fbtrace_id":"AbCdEf123"}}"#)
    }

    static func debug(valid: Bool, type: String = "USER", expiresAt: Int64 = 0, dataAccess: Int64 = 0, code: Int? = nil, subcode: Int? = nil,
                      appId: String = "138483919580948", scopes: [String] = ["ads_read", "ads_management"],
                      targets: [String] = ["act_101"]) -> (Int, String) {
        let error = code.map { c in #","error":{"code":\#(c),"message":"Error validating access token","subcode":\#(subcode.map(String.init) ?? "null")}"# } ?? ""
        let scopeList = scopes.map { "\"\($0)\"" }.joined(separator: ",")
        let granular = scopes.contains("ads_management")
            ? #"[{"scope":"ads_management","target_ids":[\#(targets.map { "\"\($0)\"" }.joined(separator: ","))]}]"# : "[]"
        return (200, #"{"data":{"app_id":"\#(appId)","type":"\#(type)","application":"Acme Ads Sync","data_access_expires_at":\#(dataAccess),"expires_at":\#(expiresAt),"is_valid":\#(valid),"issued_at":1570733000,"scopes":[\#(scopeList)],"granular_scopes":\#(granular),"user_id":"10215241773831025"\#(error)}}"#)
    }
}

private final class FakeGraphHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let respond: @Sendable (FakeGraph.Request) -> (Int, String)
    let extraHeaders: @Sendable () -> [String: String]
    private var uri = ""

    init(respond: @escaping @Sendable (FakeGraph.Request) -> (Int, String), headers: @escaping @Sendable () -> [String: String]) {
        self.respond = respond
        self.extraHeaders = headers
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): uri = head.uri
        case .body: break
        case .end:
            let c = URLComponents(string: "http://x" + uri)
            let query = Dictionary((c?.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
            let (status, body) = respond(FakeGraph.Request(path: c?.path ?? uri, query: query))
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            for (name, value) in extraHeaders() { headers.add(name: name, value: value) }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: status), headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
