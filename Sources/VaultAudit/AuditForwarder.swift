import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The second sink: every durable record, also sent to the system journal (native protocol) or to
/// syslog (`/dev/log`), **best effort**. The log on disk is the record of truth and is written first; this
/// copy is for a SIEM or an admin's `journalctl`, and it must never slow or fail a read. So the flusher
/// only hands over each written batch (one lock, no system call), a thread of its own sends the records
/// with non-blocking sends, and whatever cannot be sent at once — no socket, a full socket, a queue that
/// is already long — is dropped and counted (`tokenvault status` shows the count). A vault that blocks
/// reads while its log socket is stuck is the failure this avoids.
///
/// As a witness (`audit.witness_journal`), it also sends each witness statement as an entry of its own,
/// `MESSAGE` being the statement and `TOKENVAULT_WITNESS=1`, so that
/// `journalctl -o cat TOKENVAULT_WITNESS=1` (on the host that collects the journal) is a witness file.
public final class AuditForwarder: AuditWitnessSink, @unchecked Sendable {
    public enum Kind: Sendable, Equatable {
        /// systemd-journald's native protocol: one datagram of `FIELD=value` lines per record.
        case journal
        /// RFC 3164 syslog on a datagram socket (`/dev/log`): `<PRI>tokenvault[pid]: record`.
        case syslog
    }

    public static let journalSocket = "/run/systemd/journal/socket"
    public static let syslogSocket = "/dev/log"

    /// The journal where it is present, else `/dev/log`.
    public static func systemDefault() -> (path: String, kind: Kind) {
        access(journalSocket, W_OK) == 0 ? (journalSocket, .journal) : (syslogSocket, .syslog)
    }

    public let path: String
    public let kind: Kind
    /// Records waiting beyond this are dropped rather than queued.
    private let maxQueued: Int

    private let state = Mutex(State())
    private var wake = pthread_cond_t()
    private var wakeMutex = pthread_mutex_t()
    private struct State {
        var batches: [[UInt8]] = []
        var statements: [String] = []
        var queued = 0
        var stopping = false
    }
    private let sentCount = Atomic<Int>(0)
    private let droppedCount = Atomic<Int>(0)

    // The sender thread's own.
    private var fd: Int32 = -1
    private var lastConnectAttempt = 0.0
    private var congested = false
    private let identifier = Array("tokenvault".utf8)

    public init(path: String, kind: Kind, maxQueued: Int = 65_536) {
        self.path = path
        self.kind = kind
        self.maxQueued = maxQueued
        pthread_mutex_init(&wakeMutex, nil)
        pthread_cond_init(&wake, nil)
        let t = Thread { self.senderLoop() }
        t.name = "tokenvault-audit-forward"
        t.start()
    }

    /// Records sent, and records dropped (never sent), so far.
    public var counters: (sent: Int, dropped: Int) { (sentCount.load(ordering: .relaxed), droppedCount.load(ordering: .relaxed)) }

    /// Hands over one written batch (whole lines). Never blocks on the socket.
    func submit(_ bytes: [UInt8], records: Int) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopping, s.queued + records <= maxQueued else { return false }
            s.batches.append(bytes)
            s.queued += records
            return true
        }
        guard accepted else {
            droppedCount.add(records, ordering: .relaxed)
            return
        }
        pthread_mutex_lock(&wakeMutex)
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&wakeMutex)
    }

    public func offer(_ statement: AuditWitnessStatement) {
        let accepted = state.withLock { s -> Bool in
            guard !s.stopping, s.statements.count < 1024 else { return false }
            s.statements.append(statement.line)
            return true
        }
        guard accepted else {
            droppedCount.add(1, ordering: .relaxed)
            return
        }
        pthread_mutex_lock(&wakeMutex)
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&wakeMutex)
    }

    /// Sends what is queued (best effort) and stops the sender.
    public func close() {
        state.withLock { $0.stopping = true }
        pthread_mutex_lock(&wakeMutex)
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&wakeMutex)
    }

    private func senderLoop() {
        while true {
            let (batches, statements, stop) = state.withLock { s -> ([[UInt8]], [String], Bool) in
                let b = s.batches, w = s.statements
                s.batches.removeAll(keepingCapacity: true)
                s.statements.removeAll(keepingCapacity: true)
                s.queued = 0
                return (b, w, s.stopping)
            }
            for batch in batches { send(batch) }
            for statement in statements { sendStatement(statement) }
            if stop { break }
            if batches.isEmpty && statements.isEmpty {
                pthread_mutex_lock(&wakeMutex)
                if state.withLock({ $0.batches.isEmpty && $0.statements.isEmpty && !$0.stopping }) {
                    var deadline = timespec()
                    clock_gettime(CLOCK_REALTIME, &deadline)
                    deadline.tv_sec += 1
                    pthread_cond_timedwait(&wake, &wakeMutex, &deadline)
                }
                pthread_mutex_unlock(&wakeMutex)
            }
        }
        if fd >= 0 { Glibc.close(fd) }
    }

    private func send(_ batch: [UInt8]) {
        batch.withUnsafeBytes { raw in
            var start = 0
            var message: [UInt8] = []
            while start < raw.count {
                let end = AuditScan.lineEnd(raw, from: start, limit: raw.count)
                defer { start = end + 1 }
                guard end > start else { continue }
                let line = UnsafeRawBufferPointer(rebasing: raw[start..<end])
                message.removeAll(keepingCapacity: true)
                frame(line, into: &message)
                if sendOne(message) { sentCount.add(1, ordering: .relaxed) } else { droppedCount.add(1, ordering: .relaxed) }
            }
        }
    }

    private func sendStatement(_ line: String) {
        var message: [UInt8]
        switch kind {
        case .journal: message = Array("MESSAGE=\(line)\nSYSLOG_IDENTIFIER=tokenvault\nSYSLOG_FACILITY=10\nPRIORITY=6\nTOKENVAULT_WITNESS=1\n".utf8)
        case .syslog: message = Array("<86>tokenvault[\(getpid())]: \(line)".utf8)
        }
        if sendOne(message) { sentCount.add(1, ordering: .relaxed) } else { droppedCount.add(1, ordering: .relaxed) }
        message.removeAll()
    }

    /// One record as the protocol wants it. A record has no raw newline (the writer escapes them), so the
    /// journal's simple `FIELD=value` form holds it.
    private func frame(_ line: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        let refused = !(memmemFind(line, ",\"outcome\":\"granted\""))
        switch kind {
        case .journal:
            out.append(contentsOf: "MESSAGE=".utf8)
            out.append(contentsOf: line)
            out.append(contentsOf: "\nSYSLOG_IDENTIFIER=tokenvault\nSYSLOG_FACILITY=10\nPRIORITY=".utf8)
            out.append(refused ? UInt8(ascii: "5") : UInt8(ascii: "6"))
            out.append(contentsOf: "\nTOKENVAULT_AUDIT=1\n".utf8)
            if let seq = AuditRecordFormat.recordSeq(line) {
                out.append(contentsOf: "TOKENVAULT_SEQ=\(seq)\n".utf8)
            }
        case .syslog:
            // authpriv (10) with notice (5) for refusals and failures, info (6) for the rest.
            out.append(contentsOf: "<\(10 * 8 + (refused ? 5 : 6))>tokenvault[\(getpid())]: ".utf8)
            out.append(contentsOf: line)
        }
    }

    private func memmemFind(_ line: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        AuditScan.memmemBytes(line.baseAddress!, line.count, literal.utf8Start, literal.utf8CodeUnitCount) != nil
    }

    /// A full socket gets one short wait (on this thread, never the flusher's) and then the record is
    /// dropped; while it stays full, records are tried once each and dropped, until one goes through.
    private func sendOne(_ message: [UInt8]) -> Bool {
        if fd < 0 && !connectSocket() { return false }
        func attempt() -> Int { message.withUnsafeBytes { Glibc.send(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) } }
        var n = attempt()
        if n < 0, errno == EAGAIN || errno == EWOULDBLOCK, !congested, !state.withLock({ $0.stopping }) {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 100)
            n = attempt()
            congested = n != message.count
        }
        if n == message.count {
            congested = false
            return true
        }
        // A gone reader (journald restarted) reconnects at the next record.
        if n < 0, errno != EAGAIN && errno != EWOULDBLOCK {
            Glibc.close(fd)
            fd = -1
        }
        return false
    }

    /// At most one attempt a second: with no socket there, each record is a counted drop, not a syscall storm.
    private func connectSocket() -> Bool {
        let now = Date().timeIntervalSince1970
        guard now - lastConnectAttempt >= 1 else { return false }
        lastConnectAttempt = now
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { return false }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { Glibc.close(s); return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard ok else { Glibc.close(s); return false }
        fd = s
        return true
    }
}
