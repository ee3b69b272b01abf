import CSystemShims
import Foundation
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// A client for the TokenVault daemon's socket (protocol v1), for Swift services.
///
///     let vault = TokenVaultClient()                       // $TOKENVAULT_SOCKET, else ./.tokenvault/tokenvault.sock
///     let token = try await vault.get("acme/ads")
///     let withProof = try await vault.get("acme/ads", proof: .timed)
///
/// Each call opens a connection, sends one request and reads one reply. The blocking socket work runs on
/// NIO's shared thread pool, never on the Swift concurrency pool.
public struct TokenVaultClient: Sendable {
    public enum Proof: String, Sendable { case timed, legacy }

    /// A token as the daemon hands it out.
    public struct Token: Sendable, Equatable {
        public let name: String
        public let token: String
        public let kind: String
        /// Unix seconds; nil for a token that never expires (or was never checked).
        public let expiresAt: Int64?
        public let scopes: [String]
        public let valid: Bool?
        public let checkedAt: Int64?
        public let appsecretProof: String?
        public let appsecretTime: Int64?

        public init(name: String, token: String, kind: String, expiresAt: Int64?, scopes: [String], valid: Bool?, checkedAt: Int64?,
                    appsecretProof: String? = nil, appsecretTime: Int64? = nil) {
            self.name = name
            self.token = token
            self.kind = kind
            self.expiresAt = expiresAt
            self.scopes = scopes
            self.valid = valid
            self.checkedAt = checkedAt
            self.appsecretProof = appsecretProof
            self.appsecretTime = appsecretTime
        }
    }

    public struct Identity: Sendable, Equatable {
        public let uid: UInt32
        public let gid: UInt32
        public let pid: Int32
    }

    /// Errors, one per code of the contract, plus the client's own.
    public enum Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        case badRequest(String), unknownOp(String), tooLarge(String), denied(String), notFound(String)
        case unavailable(String), rateLimited(String), `internal`(String)
        /// The daemon could not be reached.
        case connect(String)
        /// The reply was not what the contract promises.
        case protocolError(String)
        /// The process answering on the socket is not one this client trusts to be the daemon (see
        /// ``TokenVaultClient/expectedServerUID``); nothing was sent to it.
        case impostor(String)

        public var description: String {
            switch self {
            case .badRequest(let m), .unknownOp(let m), .tooLarge(let m), .denied(let m), .notFound(let m),
                 .unavailable(let m), .rateLimited(let m), .internal(let m), .connect(let m), .protocolError(let m), .impostor(let m):
                return m
            }
        }

        public var code: String {
            switch self {
            case .badRequest: return "bad_request"
            case .unknownOp: return "unknown_op"
            case .tooLarge: return "too_large"
            case .denied: return "denied"
            case .notFound: return "not_found"
            case .unavailable: return "unavailable"
            case .rateLimited: return "rate_limited"
            case .internal: return "internal"
            case .connect: return "connect"
            case .protocolError: return "protocol_error"
            case .impostor: return "impostor"
            }
        }
    }

    public let socketPath: String
    /// Seconds to wait for the daemon's reply.
    public var timeout: Int
    /// The uid the daemon must run as (the kernel's `SO_PEERCRED` of the connection), checked before
    /// anything is sent. When nil (the default; `$TOKENVAULT_SERVER_UID` sets it too), the daemon must
    /// run as root, or as the user who owns both the socket's directory and the socket file: the daemon
    /// refuses to serve from a directory that another user or a group can write, so that holds for
    /// every genuine daemon and fails for an impostor that took over a directory it could write.
    public var expectedServerUID: UInt32?

    public init(socketPath: String? = nil, timeout: Int = 10, expectedServerUID: UInt32? = nil) {
        let env = ProcessInfo.processInfo.environment
        self.socketPath = socketPath ?? env["TOKENVAULT_SOCKET"]
            ?? ((env["TOKENVAULT_HOME"] ?? "./.tokenvault") + "/tokenvault.sock")
        self.timeout = timeout
        self.expectedServerUID = expectedServerUID ?? env["TOKENVAULT_SERVER_UID"].flatMap { UInt32($0) }
    }

    /// Throws ``Error/impostor(_:)`` unless the peer on `fd` is a server this client trusts.
    func checkServer(fd: Int32) throws {
        var peer = tv_peer_credentials()
        guard tv_get_peer_credentials(fd, &peer) == 0 else {
            throw Error.connect("cannot ask the kernel who serves \(socketPath): \(String(cString: strerror(errno)))")
        }
        if let expected = expectedServerUID {
            guard peer.uid == expected else {
                throw Error.impostor("the process answering on \(socketPath) (pid \(peer.pid)) runs as uid \(peer.uid), "
                    + "not the expected uid \(expected): refusing to talk to it")
            }
            return
        }
        if peer.uid == 0 { return }
        let hint = "If this daemon is genuine, name its uid with expectedServerUID or $TOKENVAULT_SERVER_UID"
        var directory = (socketPath as NSString).deletingLastPathComponent
        if directory.isEmpty { directory = "." }
        if !directory.hasPrefix("/") { directory = FileManager.default.currentDirectoryPath + "/" + directory }
        // No symlink on the path that another user owns.
        var prefix = ""
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            var st = stat()
            if lstat(prefix, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK, st.st_uid != 0, st.st_uid != peer.uid {
                throw Error.impostor("\(prefix), on the path to \(socketPath), is a symbolic link owned by uid \(st.st_uid): refusing to trust "
                    + "the server behind it. \(hint)")
            }
        }
        guard let resolved = realpath(directory, nil) else {
            throw Error.impostor("cannot resolve the directory of \(socketPath): \(String(cString: strerror(errno)))")
        }
        let real = String(cString: resolved)
        free(resolved)
        var dir = stat(), file = stat()
        guard stat(real, &dir) == 0, lstat(socketPath, &file) == 0 else {
            throw Error.impostor("cannot check the owner of \(socketPath): \(String(cString: strerror(errno)))")
        }
        guard dir.st_uid == peer.uid, file.st_uid == peer.uid else {
            throw Error.impostor("the process answering on \(socketPath) (pid \(peer.pid)) runs as uid \(peer.uid), but the "
                + "socket directory is owned by uid \(dir.st_uid) and the socket by uid \(file.st_uid): refusing to trust it. \(hint)")
        }
        // Above it, only root or the server, and nothing others can write unless it is sticky (like /tmp).
        var ancestor = (real as NSString).deletingLastPathComponent
        while !ancestor.isEmpty {
            var st = stat()
            guard stat(ancestor, &st) == 0 else { break }
            if (st.st_uid != 0 && st.st_uid != peer.uid) || (st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0) {
                throw Error.impostor("\(ancestor) (mode \(String(st.st_mode & 0o7777, radix: 8)), uid \(st.st_uid)), on the path to \(socketPath), "
                    + "could be written by someone other than the server, who could replace its directory: refusing to trust it. \(hint)")
            }
            if ancestor == "/" { break }
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
    }

    // MARK: - async API

    public func get(_ name: String, proof: Proof? = nil) async throws -> Token {
        let client = self
        return try await NIOThreadPool.singleton.runIfActive { try client.getBlocking(name, proof: proof) }
    }

    public func list() async throws -> [String] {
        let client = self
        return try await NIOThreadPool.singleton.runIfActive { try client.listBlocking() }
    }

    public func whoami() async throws -> Identity {
        let client = self
        return try await NIOThreadPool.singleton.runIfActive { try client.whoamiBlocking() }
    }

    public func ping() async throws {
        let client = self
        try await NIOThreadPool.singleton.runIfActive { _ = try client.call(["op": "ping"]) }
    }

    // MARK: - blocking API (scripts, the CLI)

    public func getBlocking(_ name: String, proof: Proof? = nil) throws -> Token {
        var request: [String: Any] = ["op": "get", "name": name]
        if let proof { request["proof"] = proof.rawValue }
        let r = try call(request)
        guard let n = r["name"] as? String, let t = r["token"] as? String, let kind = r["kind"] as? String else {
            throw Error.protocolError("a get reply without name, token or kind")
        }
        return Token(
            name: n, token: t, kind: kind, expiresAt: (r["expires_at"] as? NSNumber)?.int64Value,
            scopes: r["scopes"] as? [String] ?? [], valid: r["valid"] as? Bool,
            checkedAt: (r["checked_at"] as? NSNumber)?.int64Value,
            appsecretProof: r["appsecret_proof"] as? String, appsecretTime: (r["appsecret_time"] as? NSNumber)?.int64Value)
    }

    public func listBlocking() throws -> [String] {
        guard let names = try call(["op": "list"])["names"] as? [String] else { throw Error.protocolError("a list reply without names") }
        return names
    }

    public func whoamiBlocking() throws -> Identity {
        let r = try call(["op": "whoami"])
        guard let uid = (r["uid"] as? NSNumber)?.uint32Value, let gid = (r["gid"] as? NSNumber)?.uint32Value,
              let pid = (r["pid"] as? NSNumber)?.int32Value else { throw Error.protocolError("a whoami reply without uid, gid or pid") }
        return Identity(uid: uid, gid: gid, pid: pid)
    }

    /// Sends one request object and returns the reply object, or throws the contract's error.
    public func call(_ request: [String: Any]) throws -> [String: Any] {
        var request = request
        request["id"] = 1
        let line = try JSONSerialization.data(withJSONObject: request) + Data("\n".utf8)
        let reply = try exchange(line)
        guard let object = try? JSONSerialization.jsonObject(with: reply) as? [String: Any] else {
            throw Error.protocolError("the reply is not a JSON object")
        }
        return try Self.checked(object)
    }

    private func exchange(_ line: Data) throws -> Data {
        let fd = try connectChecked()
        defer { close(fd) }
        try Self.sendAll(fd, line)
        var buffered = Data()
        return try readLine(fd, &buffered)
    }

    /// A connected socket to a daemon this client trusts (see ``checkServer(fd:)``), with the timeout set.
    func connectChecked() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Error.connect("socket(): \(String(cString: strerror(errno)))") }
        var ok = false
        defer { if !ok { close(fd) } }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw Error.connect("socket path too long: \(socketPath)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            throw Error.connect("cannot connect to the TokenVault daemon at \(socketPath): \(String(cString: strerror(errno))) (is `tokenvault serve` running?)")
        }
        try checkServer(fd: fd)
        ok = true
        return fd
    }

    static func sendAll(_ fd: Int32, _ line: Data) throws {
        try line.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 { if errno == EINTR { continue }; throw Error.connect("send: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
    }

    /// Reads one line (without its newline) from `fd`, keeping what follows it in `buffered`.
    func readLine(_ fd: Int32, _ buffered: inout Data) throws -> Data {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let nl = buffered.firstIndex(of: 0x0a) {
                let line = buffered[buffered.startIndex..<nl]
                buffered = Data(buffered[(nl + 1)...])
                return Data(line)
            }
            if buffered.count > 1 << 20 { throw Error.protocolError("reply longer than 1 MiB") }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Error.connect(errno == EAGAIN ? "no reply within \(timeout) s" : "recv: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw Error.protocolError("the daemon closed the connection without a reply") }
            buffered.append(contentsOf: chunk[0..<n])
        }
    }

    /// Turns a reply object into the contract's error, or returns it.
    static func checked(_ object: [String: Any]) throws -> [String: Any] {
        if object["ok"] as? Bool == true { return object }
        let error = object["error"] as? [String: Any]
        let message = error?["message"] as? String ?? "no message"
        switch error?["code"] as? String {
        case "bad_request": throw Error.badRequest(message)
        case "unknown_op": throw Error.unknownOp(message)
        case "too_large": throw Error.tooLarge(message)
        case "denied": throw Error.denied(message)
        case "not_found": throw Error.notFound(message)
        case "unavailable": throw Error.unavailable(message)
        case "rate_limited": throw Error.rateLimited(message)
        case "internal": throw Error.internal(message)
        default: throw Error.protocolError("an error reply with an unknown code")
        }
    }
}
