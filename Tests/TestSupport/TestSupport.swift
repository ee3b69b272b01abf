import Foundation
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Helpers shared by the test targets (a target of its own, not shipped in any product).

/// A fresh directory under /tmp (mode 0755, so a test process under another uid can reach a socket in
/// it), removed when the value goes away.
public final class TempDir: @unchecked Sendable {
    public let path: String

    public init() {
        var template = Array("/tmp/tokenvault-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        chmod(path, 0o755)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A secret from a string literal (tests only: the `String` cannot be wiped).
public func secret(_ s: String) -> SecretBytes { SecretBytes(copying: Array(s.utf8)) }

/// What a child process did.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public var all: String { stdout + stderr }
}

/// Runs a program to completion, feeding `stdin` and collecting its output.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                       stdin: String? = nil) throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    if let environment { p.environment = environment }
    let input = Pipe(), output = Pipe(), errors = Pipe()
    p.standardInput = input
    p.standardOutput = output
    p.standardError = errors
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Drain stderr concurrently so a chatty child cannot block on a full pipe.
    nonisolated(unsafe) var err = Data()
    let drained = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        err = errors.fileHandleForReading.readDataToEndOfFile()
        drained.signal()
    }
    let out = output.fileHandleForReading.readDataToEndOfFile()
    drained.wait()
    p.waitUntilExit()
    return ProcessResult(status: p.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                         stderr: String(decoding: err, as: UTF8.self))
}

/// The `tokenvault` binary that `swift test` built beside the test bundle.
public let tokenvaultBinary: String = {
    if let explicit = ProcessInfo.processInfo.environment["TOKENVAULT_BIN"] { return explicit }
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent("tokenvault").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return ".build/debug/tokenvault"
}()

/// HMAC-SHA256 by Python's standard library: an implementation independent of libsodium.
public func pythonHMAC(key: String, message: String) -> String {
    let script = "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())"
    return ((try? runProcess("/usr/bin/python3", ["-c", script, key, message]).stdout) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Whether `python3` can import Meta's SDK (`.ci/run` pip-installs it), for the tests that use it.
public func pythonHasFacebookBusiness() -> Bool {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import facebook_business"]
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}
