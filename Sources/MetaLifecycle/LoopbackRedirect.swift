import Foundation
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// The redirect target of `meta login`: a one-shot HTTP listener on 127.0.0.1 that waits for
/// `/callback?code=…&state=…`, refuses a request whose `state` is not ours, and returns the code.
public final class LoopbackRedirect: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let port: UInt16
    public let state: String
    private let fd: Int32

    public var redirectURI: String { "http://localhost:\(port)/callback" }

    /// Binds 127.0.0.1:`port` (0 picks a free port) and makes a random `state`.
    public init(port: UInt16 = 0) throws {
        state = hexString(randomBytes(16))
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 8) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot listen on 127.0.0.1:\(port): \(why)")
        }
        var actual = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        self.port = UInt16(bigEndian: actual.sin_port)
        self.fd = fd
    }

    deinit { close(fd) }

    /// Serves requests until one carries our `state` and a `code` (returned), or the user refused
    /// (`error=`), or `timeout` passes. A request with another state gets 400 and is otherwise ignored.
    public func waitForCode(timeout: TimeInterval, onRefused: (String) -> Void = { _ in }) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(max(1, min(1000, deadline.timeIntervalSinceNow * 1000)))) > 0 else { continue }
            let client = accept(fd, nil, nil)
            guard client >= 0 else { continue }
            defer { close(client) }
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            guard let target = Self.readRequestTarget(client), let url = URLComponents(string: "http://localhost" + target),
                  url.path == "/callback" else {
                Self.respond(client, 404, "Not found.")
                continue
            }
            let query = Dictionary((url.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { a, _ in a })
            guard let got = query["state"], constantTimeEqual(Array(got.utf8), Array(state.utf8)) else {
                Self.respond(client, 400, "This sign-in does not match the one TokenVault started (state mismatch). Nothing was stored.")
                onRefused("a redirect with a wrong state was refused")
                continue
            }
            if let error = query["error"] {
                Self.respond(client, 200, "Sign-in cancelled. You can close this window.")
                throw Failure(description: "the login was not granted: \(error) \(query["error_description"] ?? "")")
            }
            guard let code = query["code"], !code.isEmpty else {
                Self.respond(client, 400, "The redirect carries no code.")
                continue
            }
            Self.respond(client, 200, "TokenVault received the authorisation. You can close this window.")
            return code
        }
        throw Failure(description: "no login redirect arrived within \(Int(timeout)) s")
    }

    static func readRequestTarget(_ fd: Int32) -> String? {
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while data.count < 16384 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { break }
            data.append(contentsOf: chunk[0..<n])
            if data.firstIndex(of: 0x0a) != nil { break }
        }
        guard let line = String(decoding: data, as: UTF8.self).split(separator: "\r\n").first ?? nil else { return nil }
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0] == "GET" else { return nil }
        return String(parts[1])
    }

    static func respond(_ fd: Int32, _ status: Int, _ text: String) {
        let body = "<!DOCTYPE html><html><body><p>\(text)</p></body></html>"
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found"][status] ?? "OK"
        let response = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        _ = response.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }
}
