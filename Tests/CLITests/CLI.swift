import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `tokenvault` binary, as an admin's script would.
struct CLI {
    typealias Result = ProcessResult

    static var binary: String { tokenvaultBinary }

    let home: String

    init(home: String) { self.home = home }

    @discardableResult
    func run(_ args: [String], stdin: String? = nil, env: [String: String] = [:]) throws -> Result {
        var environment = ProcessInfo.processInfo.environment
        environment["TOKENVAULT_HOME"] = home
        environment.removeValue(forKey: "TOKENVAULT_KEYS")
        environment.removeValue(forKey: "TOKENVAULT_PASSPHRASE_FILE")
        // Never the real Graph API from tests: a closed loopback port unless a test brings a fake one.
        environment["TOKENVAULT_GRAPH_URL"] = "http://127.0.0.1:9"
        for (k, v) in env { environment[k] = v }
        return try runProcess(Self.binary, args, environment: environment, stdin: stdin)
    }
}

/// The environment for a `tokenvault` child process of the tests.
func testEnvironment(home: String, _ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["TOKENVAULT_HOME"] = home
    env["TOKENVAULT_GRAPH_URL"] = "http://127.0.0.1:9"
    for (k, v) in extra { env[k] = v }
    return env
}

extension CLI {
    /// `tokenvault ARGS` as a process of its own, as an admin starts it (stderr to `stderr`, else nowhere).
    func launch(_ args: [String], stderr: String? = nil, env: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = args
        p.environment = testEnvironment(home: home, env)
        if let stderr { _ = FileManager.default.createFile(atPath: stderr, contents: nil) }
        p.standardError = FileHandle(forWritingAtPath: stderr ?? "/dev/null")
        try p.run()
        return p
    }

    /// `tokenvault serve ARGS`, returned once each of `paths` (default: the home's socket) exists, or 10 s.
    func serve(_ args: [String] = [], waitingFor paths: [String]? = nil, stderr: String? = nil) throws -> Process {
        let p = try launch(["serve"] + args, stderr: stderr)
        let wanted = paths ?? [home + "/tokenvault.sock"]
        for _ in 0..<200 where wanted.contains(where: { access($0, F_OK) != 0 }) { usleep(50_000) }
        return p
    }

    /// Stops a process and waits for it.
    static func stop(_ p: Process, signal: Int32 = SIGTERM) {
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
    }
}
