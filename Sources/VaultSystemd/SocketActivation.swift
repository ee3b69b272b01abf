#if canImport(Glibc)
import Glibc
#endif

/// Sockets systemd opened for this process (`sd_listen_fds(3)`): `LISTEN_PID` names this process,
/// `LISTEN_FDS` counts descriptors from 3 up, and `LISTEN_FDNAMES` (colon-separated) names them after
/// each socket unit's `FileDescriptorName=` (default: the unit's name).
public struct SocketActivation: Sendable, Equatable {
    public struct Socket: Sendable, Equatable {
        public let descriptor: CInt
        public let name: String

        public init(descriptor: CInt, name: String) {
            self.descriptor = descriptor
            self.name = name
        }
    }

    public enum Problem: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case notAListeningUnixSocket(name: String, descriptor: CInt)

        public var description: String {
            switch self {
            case .malformed(let why): return "systemd socket activation: \(why)"
            case .notAListeningUnixSocket(let name, let fd):
                return "systemd passed descriptor \(fd) (\(name)), which is not a listening Unix stream socket: the socket unit needs ListenStream=/path"
            }
        }
    }

    /// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
    public static let firstDescriptor: CInt = 3

    public let sockets: [Socket]

    public init(sockets: [Socket]) {
        self.sockets = sockets
    }

    /// The sockets the environment passes to process `pid`; none when the variables are absent or name
    /// another process (a child that inherited them). Pure: it neither touches nor checks a descriptor.
    public static func parse(_ environment: [String: String], pid: pid_t) throws -> SocketActivation {
        guard let listenPID = environment["LISTEN_PID"], let count = environment["LISTEN_FDS"] else { return SocketActivation(sockets: []) }
        guard let owner = pid_t(listenPID), owner > 0 else { throw Problem.malformed("LISTEN_PID \"\(listenPID)\" is not a process id") }
        guard owner == pid else { return SocketActivation(sockets: []) }
        guard let n = Int(count), n >= 0, n <= 64 else { throw Problem.malformed("LISTEN_FDS \"\(count)\" is not a count of descriptors") }
        var names = environment["LISTEN_FDNAMES"].map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        if names.isEmpty { names = Array(repeating: "unknown", count: n) }
        guard names.count == n else {
            throw Problem.malformed("LISTEN_FDNAMES names \(names.count) descriptors, LISTEN_FDS says \(n)")
        }
        return SocketActivation(sockets: (0..<n).map { Socket(descriptor: firstDescriptor + CInt($0), name: names[$0]) })
    }

    /// Takes what systemd passed to this process: parses, then removes the variables so no child inherits
    /// them, and marks each descriptor close-on-exec.
    public static func take() throws -> SocketActivation {
        var environment: [String: String] = [:]
        for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            if let v = getenv(key) { environment[key] = String(cString: v) }
        }
        let activation = try parse(environment, pid: getpid())
        for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(key) }
        for s in activation.sockets {
            let flags = fcntl(s.descriptor, F_GETFD)
            if flags >= 0 { _ = fcntl(s.descriptor, F_SETFD, flags | FD_CLOEXEC) }
        }
        return activation
    }

    /// The socket named `name`, else the only socket passed when it has the default name: a listening
    /// Unix stream socket, or the problem with it.
    public func listener(named name: String) throws -> Socket? {
        let socket = sockets.first { $0.name == name } ?? (sockets.count == 1 && sockets[0].name == "unknown" ? sockets[0] : nil)
        guard let socket else { return nil }
        guard Self.isListeningUnixStream(socket.descriptor) else {
            throw Problem.notAListeningUnixSocket(name: socket.name, descriptor: socket.descriptor)
        }
        return socket
    }

    /// The path a Unix socket is bound to, when it has one.
    public static func boundPath(_ fd: CInt) -> String? {
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok, address.sun_family == sa_family_t(AF_UNIX) else { return nil }
        let path = withUnsafeBytes(of: &address.sun_path) { raw -> String in
            let bytes = raw.prefix(Int(length) - MemoryLayout<sa_family_t>.size)
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return path.isEmpty ? nil : path
    }

    static func isListeningUnixStream(_ fd: CInt) -> Bool {
        func option(_ name: CInt) -> CInt? {
            var value: CInt = 0
            var size = socklen_t(MemoryLayout<CInt>.size)
            return getsockopt(fd, SOL_SOCKET, name, &value, &size) == 0 ? value : nil
        }
        return option(SO_DOMAIN) == AF_UNIX && option(SO_TYPE) == CInt(SOCK_STREAM.rawValue) && option(SO_ACCEPTCONN) == 1
    }
}
