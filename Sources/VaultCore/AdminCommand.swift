import CSystemShims
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An admin's own command (`/bin/sh -c COMMAND`: sendmail, a webhook through curl, a copy to another
/// machine) given one document on stdin — the notifier's and the audit witness's. Its stdin and stderr
/// are files in memory (memfd), not pipes: a command that exits without reading cannot raise SIGPIPE in
/// the daemon, a large document cannot block the daemon before the command starts, and a command that
/// writes a lot to stderr cannot block itself on a pipe nobody reads.
public enum AdminCommand {
    /// Runs `command` with `input` on stdin; nil when it exited 0 within `timeout`, else why not, naming
    /// it as `what` ("the notify command") with the start of what it wrote to stderr.
    public static func run(_ command: String, input: String, timeout: TimeInterval, what: String) -> String? {
        let inFd = tv_memfd("tokenvault-command-input"), errFd = tv_memfd("tokenvault-command-stderr")
        defer {
            if inFd >= 0 { close(inFd) }
            if errFd >= 0 { close(errFd) }
        }
        guard inFd >= 0, errFd >= 0 else { return "cannot make \(what)'s input: \(String(cString: strerror(errno)))" }
        let bytes = Array((input + "\n").utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(inFd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return "cannot write \(what)'s input: \(String(cString: strerror(errno)))" }
            written += n
        }
        guard lseek(inFd, 0, SEEK_SET) == 0 else { return "cannot write \(what)'s input: \(String(cString: strerror(errno)))" }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.standardInput = FileHandle(fileDescriptor: inFd, closeOnDealloc: false)
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(fileDescriptor: errFd, closeOnDealloc: false)
        do { try p.run() } catch { return "cannot run \(what): \(error)" }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        if p.isRunning {
            p.terminate()
            return "\(what) did not finish within \(Int(timeout)) s"
        }
        guard p.terminationStatus == 0 else {
            var head = [UInt8](repeating: 0, count: 300)
            let n = head.withUnsafeMutableBytes { pread(errFd, $0.baseAddress!, $0.count, 0) }
            let stderr = String(decoding: head.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return "\(what) exited \(p.terminationStatus)" + (stderr.isEmpty ? "" : ": \(stderr)")
        }
        return nil
    }
}
