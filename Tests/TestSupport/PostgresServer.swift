import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The private PostgreSQL cluster `scripts/with-postgres.sh` starts for a test run (`make test` always
/// does). Each test makes a database of its own; `psql` plays the admin — or the attacker — on it.
public enum PostgresServer {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// Whether a cluster is there (tests that need one are enabled on this).
    public static var isAvailable: Bool { environment["TOKENVAULT_TEST_PG_SOCKET"] != nil }

    /// Whether the run promised one (`make test`): a missing cluster is then a failure, not a skip.
    public static var isRequired: Bool { environment["TOKENVAULT_REQUIRE_PG"] == "1" }

    public static var socketDirectory: String { environment["TOKENVAULT_TEST_PG_SOCKET"] ?? "/nonexistent" }

    private static let counter = Atomic<Int>(0)

    /// A new, empty database; returns its store URL.
    public static func freshDatabase() throws -> String {
        let name = "tv_\(getpid())_\(counter.wrappingAdd(1, ordering: .relaxed).oldValue)_\(UInt32.random(in: 0...UInt32.max))"
        try psql("postgres", "CREATE DATABASE \(name)")
        return url(database: name)
    }

    public static func url(database: String, user: String = "postgres") -> String {
        "postgres:///\(database)?host=\(socketDirectory)&user=\(user)"
    }

    /// The database named in a store URL.
    public static func database(of url: String) -> String {
        let afterScheme = url.dropFirst("postgres:///".count)
        return String(afterScheme.prefix { $0 != "?" })
    }

    /// Runs SQL as the superuser and returns what `psql -At` prints (unaligned, tuples only).
    @discardableResult
    public static func psql(_ database: String, _ sql: String) throws -> String {
        let bin = environment["TOKENVAULT_TEST_PG_BIN"].map { $0 + "/psql" } ?? "/usr/bin/psql"
        let psql = FileManager.default.isExecutableFile(atPath: bin) ? bin : "/usr/bin/psql"
        let r = try runProcess(psql, ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory, "-U", "postgres", "-d", database, "-c", sql])
        guard r.status == 0 else { throw Failure(description: "psql: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Stops the cluster (fast shutdown: every connection is cut), as an outage would.
    public static func stop() throws { try pgctl(["-m", "fast", "-w", "stop"]) }

    /// Starts it again on the same socket.
    public static func start() throws {
        let data = environment["TOKENVAULT_TEST_PG_DATA"] ?? ""
        try pgctl(["-l", data + "/../server.log", "-w", "-t", "60", "-o",
                   "-k \(socketDirectory) -c listen_addresses='' -c max_connections=300", "start"])
    }

    private static func pgctl(_ arguments: [String]) throws {
        let bin = (environment["TOKENVAULT_TEST_PG_BIN"] ?? "") + "/pg_ctl"
        let data = environment["TOKENVAULT_TEST_PG_DATA"] ?? ""
        let runAs = (environment["TOKENVAULT_TEST_PG_RUN_AS"] ?? "").split(separator: " ").map(String.init)
        let command = (runAs + [bin, "-D", data] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        // Through a shell with output to a file: the server pg_ctl starts would hold a pipe open for good.
        let log = (environment["TOKENVAULT_TEST_PG_DATA"] ?? "/tmp") + "/../pg_ctl.log"
        let status = spawnAndWait(["/bin/sh", "-c", command.joined(separator: " ") + " >>'\(log)' 2>&1 </dev/null"])
        guard status == 0 else {
            throw Failure(description: "pg_ctl \(arguments.last ?? "") failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }
}

/// posix_spawn and waitpid, no pipes: Foundation's `Process.waitUntilExit` was seen to hang here after
/// `pg_ctl start` (whose server lives on), so the cluster's control commands do without it.
func spawnAndWait(_ argv: [String]) -> Int32 {
    var pid: pid_t = 0
    var cArgs = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    guard posix_spawn(&pid, argv[0], nil, nil, &cArgs, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
}
