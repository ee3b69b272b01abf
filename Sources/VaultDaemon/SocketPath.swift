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

/// Checks the socket path and places the socket there so that nobody else ever gets a say in it.
///
/// The directory must be owned by root or by the daemon's user and writable by nobody else (like ssh's
/// StrictModes): whoever can write it could replace the socket, or unlink it later and bind an impostor.
/// The socket is bound inside a private 0700 directory made in the target directory, given its mode and
/// group there, where no other user can reach it, and only then renamed onto the path: it appears with
/// its final permissions, and no path-based `chmod`/`chown` ever runs where a symlink could be swapped in.
/// A live daemon on the path is never displaced; a stale socket file (nobody answering) is replaced.
enum SocketPath {
    /// Where a socket is being bound before it is published.
    struct Placement {
        let path: String
        let privateDirectory: String
        var stagingPath: String { privateDirectory + "/s" }
    }

    /// The whole path to the socket must be out of other users' reach: no symlink on it that another user
    /// owns, and every directory above the socket's own owned by root or `owner` and, if group- or
    /// world-writable, sticky (like /tmp: others cannot rename what is ours). Otherwise whoever controls a
    /// higher directory could swap the socket's directory for one of their own.
    static func checkPath(to directory: String, owner: uid_t = geteuid()) throws {
        var absolute = directory
        if !absolute.hasPrefix("/") {
            let cwd = FileManager.default.currentDirectoryPath
            absolute = cwd + (cwd.hasSuffix("/") ? "" : "/") + directory
        }
        var prefix = ""
        for component in absolute.split(separator: "/") {
            prefix += "/" + component
            var st = stat()
            if lstat(prefix, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK, st.st_uid != 0, st.st_uid != owner {
                throw ServeError("\(prefix), on the path to the socket, is a symbolic link owned by uid \(st.st_uid): its owner could point "
                    + "it elsewhere. Name the socket by a path without it")
            }
        }
        guard let resolved = realpath(absolute, nil) else {
            throw ServeError("socket directory \(directory) does not exist: create it (mode 0750 or 0755)")
        }
        let real = String(cString: resolved)
        free(resolved)
        try checkDirectory(real, owner: owner)
        var ancestor = (real as NSString).deletingLastPathComponent
        while !ancestor.isEmpty {
            var st = stat()
            guard stat(ancestor, &st) == 0 else { break }
            let mode = String(st.st_mode & 0o7777, radix: 8)
            if st.st_uid != 0 && st.st_uid != owner {
                throw ServeError("\(ancestor), above the socket directory, is owned by uid \(st.st_uid): its owner could replace the socket's "
                    + "directory. Use a directory under paths that only root or the daemon's user control, e.g. /run/tokenvault")
            }
            if st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0 {
                throw ServeError("\(ancestor), above the socket directory, can be written by others (mode \(mode)) and is not sticky: "
                    + "they could replace the socket's directory. Fix it with `chmod go-w \(ancestor)` or use another path")
            }
            if ancestor == "/" { break }
            ancestor = (ancestor as NSString).deletingLastPathComponent
        }
    }

    /// The socket's directory must be owned by root or `owner` and not writable by group or others.
    static func checkDirectory(_ directory: String, owner: uid_t = geteuid()) throws {
        var st = stat()
        guard stat(directory, &st) == 0 else {
            throw ServeError("socket directory \(directory) does not exist: create it (mode 0750 or 0755)")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw ServeError("\(directory) is not a directory") }
        let mode = String(st.st_mode & 0o7777, radix: 8)
        if st.st_uid != 0 && st.st_uid != owner {
            throw ServeError("socket directory \(directory) is owned by uid \(st.st_uid), not by root or the daemon's user (uid \(owner)); "
                + "its owner could replace the socket. Use a directory of the daemon's own, e.g. /run/tokenvault")
        }
        if st.st_mode & 0o002 != 0 {
            throw ServeError("socket directory \(directory) is world-writable (mode \(mode)); "
                + "anyone could replace the socket. Use a directory only the daemon can write, e.g. /run/tokenvault")
        }
        if st.st_mode & 0o020 != 0 {
            throw ServeError("socket directory \(directory) is group-writable (mode \(mode)); a member of its group could replace "
                + "the socket. Fix it with `chmod g-w \(directory)` (the socket's own group, --socket-group, is what lets services connect)")
        }
    }

    static func prepare(_ path: String) throws -> Placement {
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let staging = directory + "/.tokenvault-XXXXXX/s"
        guard path.utf8.count < 108, staging.utf8.count < 108 else {
            throw ServeError("socket path \(path) is too long: a Unix socket address holds 107 bytes, and the daemon needs "
                + "\(staging.utf8.count - path.utf8.count) more than the path while it binds. Use a shorter path")
        }
        try checkPath(to: directory)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw ServeError("\(path) exists and is not a socket; refusing to replace it")
            }
            if let pid = livePeer(path) {
                throw ServeError("a TokenVault daemon (pid \(pid)) is already serving on \(path); stop it first")
            }
        }
        var template = Array((directory + "/.tokenvault-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ServeError("cannot create a private directory in \(directory): \(String(cString: strerror(errno)))")
        }
        return Placement(path: path, privateDirectory: String(cString: made))
    }

    /// Gives the staged socket its mode (0660, or `mode`) and group inside the private directory, then renames
    /// it onto the path (atomically replacing a stale socket). Returns the published socket's identity.
    static func publish(_ placement: Placement, group: UInt32?, mode: mode_t = 0o660) throws -> (dev: UInt64, ino: UInt64) {
        defer { abandon(placement) }
        let staged = placement.stagingPath
        if let group, chown(staged, UInt32.max, group) != 0 {
            throw ServeError("cannot give \(placement.path) group \(group): \(String(cString: strerror(errno)))")
        }
        guard chmod(staged, mode) == 0 else {
            throw ServeError("cannot chmod \(String(mode, radix: 8)) \(placement.path): \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard lstat(staged, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ServeError("the socket being bound for \(placement.path) went missing")
        }
        guard rename(staged, placement.path) == 0 else {
            throw ServeError("cannot put the socket at \(placement.path): \(String(cString: strerror(errno)))")
        }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// Removes the private directory (and a socket still staged in it).
    static func abandon(_ placement: Placement) {
        unlink(placement.stagingPath)
        rmdir(placement.privateDirectory)
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
}
