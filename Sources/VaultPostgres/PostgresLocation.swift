import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL database, named as libpq names it:
///
///     postgres://USER@HOST[:PORT]/DB?sslmode=verify-full&sslrootcert=FILE
///     postgres:///DB?host=/run/postgresql&user=USER          (a Unix socket directory)
///
/// A URL that holds a password is refused: the password comes from `--store-password-file` or the
/// standard `PGPASSFILE` (else `~/.pgpass`), so it is never on a command line, in a unit file or in `ps`.
public struct PostgresLocation: Sendable, Equatable {
    public enum TLSMode: String, Sendable {
        /// No TLS: allowed only over a Unix socket or to a loopback address.
        case disable
        /// TLS, the server's certificate checked against `sslrootcert` (or the system's CAs) and its name.
        case verifyFull = "verify-full"
    }

    public var user: String
    public var database: String
    /// A TCP host, or nil for a Unix socket.
    public var host: String?
    public var port: Int
    /// The directory holding the server's socket (`.s.PGSQL.PORT`), for a Unix-socket connection.
    public var socketDirectory: String?
    public var tls: TLSMode
    public var rootCertificate: String?
    /// The password file: `--store-password-file` (the password alone), else pgpass format.
    public var passwordFile: String?

    /// The socket file itself, for a Unix-socket connection.
    public var socketPath: String? { socketDirectory.map { "\($0)/.s.PGSQL.\(port)" } }

    /// The URL without any secret: what messages and the audit name.
    public var description: String {
        if let socketDirectory { return "postgres:///\(database)?host=\(socketDirectory)&user=\(user)" + (port == 5432 ? "" : "&port=\(port)") }
        return "postgres://\(user)@\(host ?? "")\(port == 5432 ? "" : ":\(port)")/\(database)?sslmode=\(tls.rawValue)"
            + (rootCertificate.map { "&sslrootcert=\($0)" } ?? "")
    }

    public struct Problem: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// Parses a `postgres://` or `postgresql://` URL. Every problem names the part at fault.
    public static func parse(_ text: String, passwordFile: String? = nil) throws -> PostgresLocation {
        func fail(_ why: String) -> Problem { Problem(description: "store URL \(redacted(text)): \(why)") }
        guard let components = URLComponents(string: text), let scheme = components.scheme,
              scheme == "postgres" || scheme == "postgresql" else {
            throw fail("not a postgres:// URL")
        }
        if components.password != nil {
            throw fail("it holds a password; remove it and put the password in a file named by --store-password-file (or PGPASSFILE), mode 0600")
        }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] {
            guard let value = item.value else { throw fail("parameter \(item.name) has no value") }
            if query[item.name] != nil { throw fail("parameter \(item.name) is given twice") }
            query[item.name] = value
        }
        if query["password"] != nil {
            throw fail("it holds a password; remove it and put the password in a file named by --store-password-file (or PGPASSFILE), mode 0600")
        }
        let known: Set<String> = ["host", "port", "user", "dbname", "sslmode", "sslrootcert"]
        if let unknown = query.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail("unknown parameter \(unknown) (known: \(known.sorted().joined(separator: ", ")))")
        }
        var path = components.path
        if path.hasPrefix("/") { path.removeFirst() }
        guard let database = query["dbname"] ?? (path.isEmpty ? nil : path), !database.contains("/") else {
            throw fail("it names no database (postgres://USER@HOST/DB)")
        }
        let hostParam = query["host"] ?? components.host.flatMap { $0.isEmpty ? nil : $0 }
        guard let hostParam else { throw fail("it names no host (HOST in postgres://USER@HOST/DB, or ?host=/run/postgresql for a socket)") }
        let portText = query["port"] ?? components.port.map(String.init) ?? "5432"
        guard let port = Int(portText), (1...65535).contains(port) else { throw fail("port \(portText) is not a port number") }
        guard let user = query["user"] ?? components.user.flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw fail("it names no user (postgres://USER@HOST/DB, or ?user=USER)")
        }
        var location = PostgresLocation(user: user, database: database, host: nil, port: port, socketDirectory: nil,
                                        tls: .verifyFull, rootCertificate: query["sslrootcert"], passwordFile: passwordFile)
        if hostParam.hasPrefix("/") {
            location.socketDirectory = hostParam
            location.tls = .disable
            if let mode = query["sslmode"], mode != "disable" {
                throw fail("sslmode=\(mode) over a Unix socket: a socket has no TLS (leave sslmode out)")
            }
        } else {
            location.host = hostParam
            switch query["sslmode"] ?? "verify-full" {
            case "verify-full": location.tls = .verifyFull
            case "disable":
                guard isLoopback(hostParam) else {
                    throw fail("sslmode=disable to \(hostParam) would send tokens' sealed values and the password in the clear; use sslmode=verify-full with sslrootcert=FILE")
                }
                location.tls = .disable
            case let other:
                throw fail("sslmode=\(other) does not check who the server is; use sslmode=verify-full (with sslrootcert=FILE for a private CA)")
            }
        }
        return location
    }

    /// `localhost`, `::1`, or an IPv4 address in 127.0.0.0/8 (parsed: `127.evil.example` is a name, not loopback).
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "[::1]" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "127" else { return false }
        return parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber) && Int(p)! <= 255 }
    }

    /// The URL as a message may show it: a password in the user part (up to the authority's last `@`)
    /// and every query value are masked, since any of them may be a password.
    public static func redacted(_ text: String) -> String {
        guard let scheme = text.range(of: "://") else { return text.contains("@") || text.contains("?") ? "(a store URL)" : text }
        let rest = text[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = String(rest[..<authorityEnd])
        if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
            authority = String(authority[..<colon]) + ":***" + String(authority[at...])
        }
        var tail = String(rest[authorityEnd...])
        if let q = tail.firstIndex(of: "?") {
            let query = tail[tail.index(after: q)...].split(separator: "&").map { item -> String in
                guard let eq = item.firstIndex(of: "=") else { return String(item) }
                return String(item[..<eq]) + "=***"
            }
            tail = String(tail[..<q]) + "?" + query.joined(separator: "&")
        }
        return String(text[..<scheme.upperBound]) + authority + tail
    }

    // MARK: - the password

    /// The password for this database, from `passwordFile` (the password alone, first line), else
    /// `$PGPASSFILE` or `~/.pgpass` (libpq's `host:port:db:user:password` lines, `*` matching anything).
    /// nil when no file has one (the server may not ask: peer or trust authentication). A password file
    /// that others can read is refused, as libpq and ssh refuse theirs.
    public func password(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String? {
        if let passwordFile {
            let text = try Self.readPrivate(passwordFile)
            let first = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !first.isEmpty else { throw Problem(description: "the password file \(passwordFile) is empty") }
            return first
        }
        let pgpass = environment["PGPASSFILE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["HOME"].map { $0 + "/.pgpass" }
        guard let pgpass, access(pgpass, F_OK) == 0 else { return nil }
        let text = try Self.readPrivate(pgpass)
        let hostField = socketDirectory ?? host ?? ""
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = Self.pgpassFields(String(line))
            guard fields.count == 5 else { continue }
            func matches(_ field: String, _ value: String) -> Bool { field == "*" || field == value }
            let hostMatches = matches(fields[0], hostField) || (socketDirectory != nil && fields[0] == "localhost")
            if hostMatches, matches(fields[1], String(port)), matches(fields[2], database), matches(fields[3], user) {
                return fields[4]
            }
        }
        return nil
    }

    /// Splits a pgpass line on unescaped `:`; `\:` and `\\` are a colon and a backslash.
    static func pgpassFields(_ line: String) -> [String] {
        var fields: [String] = [], current = "", escaped = false
        for c in line {
            if escaped { current.append(c); escaped = false } else if c == "\\" { escaped = true } else if c == ":" {
                fields.append(current); current = ""
            } else { current.append(c) }
        }
        fields.append(current)
        return fields
    }

    static func readPrivate(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw Problem(description: "cannot read the password file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw Problem(description: "the password file \(path) is not a regular file")
        }
        if st.st_mode & 0o077 != 0 {
            throw Problem(description: "the password file \(path) has mode \(String(st.st_mode & 0o777, radix: 8)): others may read it; fix it with `chmod 600 \(path)`")
        }
        var bytes = [UInt8](repeating: 0, count: Int(min(st.st_size, 1 << 20)))
        let n = read(fd, &bytes, bytes.count)
        guard n >= 0 else { throw Problem(description: "cannot read the password file \(path): \(String(cString: strerror(errno)))") }
        defer { for i in bytes.indices { bytes[i] = 0 } }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }
}
