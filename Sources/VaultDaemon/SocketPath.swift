import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why the daemon will not serve on a path.
public struct ServeError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Finds the daemon behind a socket.
public enum DaemonProbe {
    /// The pid of the process answering on `socketPath` (from SO_PEERCRED), or nil when none answers.
    public static func pid(socketPath: String) -> Int32? { SocketPath.livePeer(socketPath) }
}

/// Checks and clears the socket path before binding: the directory must not be world-writable, a live
/// daemon on the path is never displaced, and a stale socket file (nobody answering) is removed.
enum SocketPath {
    static func prepare(_ path: String) throws {
        guard path.utf8.count < 108 else {
            throw ServeError("socket path \(path) is longer than the 107 bytes a Unix socket address holds")
        }
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var st = stat()
        guard stat(directory, &st) == 0 else {
            throw ServeError("socket directory \(directory) does not exist: create it (mode 0750 or 0755)")
        }
        if st.st_mode & 0o002 != 0 {
            throw ServeError("socket directory \(directory) is world-writable (mode \(String(st.st_mode & 0o7777, radix: 8))); "
                + "anyone could replace the socket. Use a directory only the vault's users can write, e.g. /run/tokenvault")
        }
        guard lstat(path, &st) == 0 else { return }  // nothing there
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ServeError("\(path) exists and is not a socket; refusing to replace it")
        }
        if let pid = livePeer(path) {
            throw ServeError("a TokenVault daemon (pid \(pid)) is already serving on \(path); stop it first")
        }
        guard unlink(path) == 0 else {
            throw ServeError("cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The pid of whoever answers on the socket, or nil when nobody does.
    static func livePeer(_ path: String) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard connectUnix(fd, path) == 0 else { return nil }
        return PeerCredentials.of(fd: fd)?.pid ?? -1
    }

    static func connectUnix(_ fd: Int32, _ path: String) -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes.prefix(raw.count - 1))
        }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// Gives the socket its mode (0660) and, if asked, its group.
    static func finish(_ path: String, group: UInt32?) throws {
        if let group, chown(path, UInt32.max, group) != 0 {
            throw ServeError("cannot give \(path) group \(group): \(String(cString: strerror(errno)))")
        }
        guard chmod(path, 0o660) == 0 else {
            throw ServeError("cannot chmod 0660 \(path): \(String(cString: strerror(errno)))")
        }
    }
}
