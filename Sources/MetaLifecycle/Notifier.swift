import Foundation

/// Runs the admin's notify command (`/bin/sh -c COMMAND`) with one JSON document on stdin. Exit status 0
/// means delivered. The command is the admin's own (sendmail, a chat webhook, a pager).
public struct Notifier: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let command: String
    public var timeout: TimeInterval = 30

    public init(command: String) {
        self.command = command
    }

    public func send(_ json: String) async -> Result<Void, Failure> {
        let command = self.command
        let timeout = self.timeout
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Self.run(command, json, timeout: timeout))
            }
        }
    }

    static func run(_ command: String, _ json: String, timeout: TimeInterval) -> Result<Void, Failure> {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        let input = Pipe()
        let errors = Pipe()
        p.standardInput = input
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = errors
        do { try p.run() } catch { return .failure(Failure(description: "cannot run the notify command: \(error)")) }
        input.fileHandleForWriting.write(Data((json + "\n").utf8))
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning {
            p.terminate()
            return .failure(Failure(description: "the notify command did not finish within \(Int(timeout)) s"))
        }
        let stderr = String(decoding: errors.fileHandleForReading.availableData.prefix(300), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard p.terminationStatus == 0 else {
            return .failure(Failure(description: "the notify command exited \(p.terminationStatus)" + (stderr.isEmpty ? "" : ": \(stderr)")))
        }
        return .success(())
    }
}
