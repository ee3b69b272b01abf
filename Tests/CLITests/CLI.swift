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
