import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `tokenvault` binary, as an admin's script would.
struct CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        var all: String { stdout + stderr }
    }

    /// The binary sits beside the test bundle in the build folder (`swift test` builds it first).
    static let binary: String = {
        if let explicit = ProcessInfo.processInfo.environment["TOKENVAULT_BIN"] { return explicit }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("tokenvault").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/tokenvault").path
    }()

    let home: String

    init(home: String) { self.home = home }

    @discardableResult
    func run(_ args: [String], stdin: String? = nil, env: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = args
        var environment = ProcessInfo.processInfo.environment
        environment["TOKENVAULT_HOME"] = home
        environment.removeValue(forKey: "TOKENVAULT_KEYS")
        environment.removeValue(forKey: "TOKENVAULT_PASSPHRASE_FILE")
        // Never the real Graph API from tests: a closed loopback port unless a test brings a fake one.
        environment["TOKENVAULT_GRAPH_URL"] = "http://127.0.0.1:9"
        for (k, v) in env { environment[k] = v }
        process.environment = environment
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                      stderr: String(decoding: err, as: UTF8.self))
    }
}

final class TempDir: @unchecked Sendable {
    let path: String
    init() {
        var template = Array("/tmp/tokenvault-cli-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The environment for a `tokenvault` child process of the tests.
func testEnvironment(home: String, _ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env["TOKENVAULT_HOME"] = home
    env["TOKENVAULT_GRAPH_URL"] = "http://127.0.0.1:9"
    for (k, v) in extra { env[k] = v }
    return env
}
