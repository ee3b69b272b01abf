import Foundation
import Testing
@testable import MetaLifecycle

/// The notify command is the admin's: it may ignore its input, fail noisily, or hang.
@Suite("The notify command")
struct NotifierTests {
    /// 4 MiB: far more than a pipe holds. A command that exits without reading it must neither raise
    /// SIGPIPE in this process (the test process would die) nor block the sender.
    let big = "{\"summary\":\"" + String(repeating: "x", count: 4 << 20) + "\"}"

    @Test func aCommandThatNeverReadsItsInputIsDeliveredWithoutSIGPIPE() {
        guard case .success = Notifier.run("exit 0", big, timeout: 10) else {
            Issue.record("exit 0 is delivered")
            return
        }
        guard case .success = Notifier.run("head -c 10 > /dev/null", big, timeout: 10) else {
            Issue.record("a command that reads a little is delivered")
            return
        }
    }

    @Test func theInputArrivesWholeAndAFailureSaysWhy() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { unlink(out) }
        guard case .success = Notifier.run("cat > '\(out)'", big, timeout: 10) else {
            Issue.record("cat delivers")
            return
        }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == big + "\n")
        // Megabytes on stderr cannot block the command on a pipe nobody reads; the reason keeps its start.
        guard case .failure(let f) = Notifier.run("echo 'webhook refused: 403' >&2; head -c 3000000 /dev/zero >&2; exit 3", "{}", timeout: 10) else {
            Issue.record("exit 3 is a failure")
            return
        }
        #expect(f.description.hasPrefix("the notify command exited 3: webhook refused: 403"), "\(f.description)")
        #expect(f.description.count < 400)
        guard case .failure(let slow) = Notifier.run("sleep 5", "{}", timeout: 0.3) else {
            Issue.record("a hung command times out")
            return
        }
        #expect(slow.description.contains("did not finish"))
    }
}
