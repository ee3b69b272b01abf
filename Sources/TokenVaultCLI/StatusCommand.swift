import ArgumentParser
import Foundation
import MetaLifecycle
import Synchronization
import VaultAudit
import VaultCore
import VaultDaemon
import VaultMetrics
#if canImport(Glibc)
import Glibc
#endif

/// What a running daemon says of itself on `<home>/admin.sock` (built on the admin socket's own loop).
/// Never a token, a key or a secret: counts, times, ids and names of files.
final class DaemonStatus: Sendable {
    struct Parts: Sendable {
        let vault: Vault
        let processor: RequestProcessor
        let server: VaultServer
        let audit: AuditLog
        let sweeps: SweepLog
        let warnDays: Int
        let checkInterval: Int
        let metrics: String?
        /// Metrics may name tokens (each one's expiry) only when the admin says so.
        let tokenNames: Bool
    }

    let parts: Parts
    let startedAt = Date()
    /// (time, granted, refused) once a second, the last 11 samples: rates over the last 10 s.
    private let samples = Mutex<[(Double, Int, Int)]>([])
    /// The token summary and when it was counted (see ``tokens()``).
    private let tokenSummary = Mutex<(at: Double, value: [String: Int])?>(nil)
    /// Whether a count is running (on `countQueue`).
    private let counting = Mutex<Bool>(false)
    private static let countQueue = DispatchQueue(label: "tokenvault-status-count", qos: .utility)

    init(_ parts: Parts) { self.parts = parts }

    func sample() {
        let t = parts.processor.counters.totals
        let now = Date().timeIntervalSince1970
        samples.withLock { s in
            s.append((now, t.granted, t.refused))
            if s.count > 11 { s.removeFirst(s.count - 11) }
        }
    }

    private func rates() -> (granted: Double, refused: Double) {
        samples.withLock { s in
            guard let first = s.first, let last = s.last, last.0 > first.0 else { return (0, 0) }
            let span = last.0 - first.0
            return (Double(last.1 - first.1) / span, Double(last.2 - first.2) / span)
        }
    }

    /// The gauges read at scrape time (metric names in Docs/OPERATIONS.md).
    func recordGauges() {
        let a = parts.audit.status
        recordGauge("tokenvault_uptime_seconds", Date().timeIntervalSince(startedAt))
        recordGauge("tokenvault_connections", Double(parts.server.connectionCount))
        recordGauge("tokenvault_policy_rules", Double(parts.processor.policy.rules.count))
        recordGauge("tokenvault_audit_seq", Double(a.seq))
        recordGauge("tokenvault_audit_checkpoint_lag", Double(max(0, a.seq - a.vouchedSeq)))
        if let n = a.forwardDropped { recordGauge("tokenvault_audit_syslog_dropped", Double(n)) }
        recordGauge("tokenvault_master_keys", Double((try? parts.vault.masterKeys().count) ?? 0))
        for (state, count) in tokens() { recordGauge("tokenvault_tokens", Double(count), [("state", state)]) }
        if let s = parts.sweeps.lastSweep { recordGauge("tokenvault_meta_last_sweep_timestamp_seconds", Double(s.endedAt)) }
        if parts.tokenNames, let records = try? parts.vault.list() {
            for r in records {
                if let e = r.expiresAt, e > 0 { recordGauge("tokenvault_token_expiry_timestamp_seconds", Double(e), [("token", r.name)]) }
            }
        }
    }

    /// The token summary, at most a minute old. Counting reads every row's metadata (seconds for a vault of a
    /// million tokens), so it runs off the admin loop: a status asked for while a new count runs gets the last
    /// one, and only the first count is waited for (at most 3 s, inside the CLI's 5; then the fields are
    /// absent until it is done, or `count_failed` when it ended without a count).
    private func tokens() -> [String: Int] {
        let now = Date().timeIntervalSince1970
        let cached = tokenSummary.withLock { $0 }
        if let cached, now - cached.at < 60 { return cached.value }
        startCounting()
        if let cached { return cached.value }
        for _ in 0..<60 {
            if let first = tokenSummary.withLock({ $0 }) { return first.value }
            // Done without a count: the store could not be read (the next status tries again).
            if !counting.withLock({ $0 }) { return ["count_failed": 1] }
            usleep(50_000)
        }
        return [:]
    }

    private func startCounting() {
        let start = counting.withLock { running -> Bool in
            if running { return false }
            running = true
            return true
        }
        guard start else { return }
        Self.countQueue.async {
            // After a failed count (the store unreadable) the last good one, if any, is kept but marked old,
            // so the next status counts again.
            let value = self.countTokens()
            self.tokenSummary.withLock { $0 = value.map { (Date().timeIntervalSince1970, $0) } ?? $0.map { (0, $0.value) } }
            self.counting.withLock { $0 = false }
        }
    }

    private func countTokens() -> [String: Int]? {
        let now = Date().timeIntervalSince1970
        var out = ["total": 0, "expiring": 0, "expired": 0, "invalid": 0, "unchecked": 0]
        guard let records = try? parts.vault.list() else { return nil }
        for r in records {
            out["total", default: 0] += 1
            if r.valid == false { out["invalid", default: 0] += 1 }
            switch TokenExpiry(r, now: Int64(now), warnDays: parts.warnDays) {
            case .expired?: out["expired", default: 0] += 1
            case .expiring?: out["expiring", default: 0] += 1
            case nil: break
            }
            if r.app != nil, r.checkedAt == nil { out["unchecked", default: 0] += 1 }
        }
        return out
    }

    func report() -> String {
        let a = parts.audit.status
        let totals = parts.processor.counters.totals
        let (grantedRate, refusedRate) = rates()
        let keys = (try? parts.vault.masterKeys()) ?? []
        let currentKey: Any = keys.first(where: \.isCurrent).map { $0.id as Any } ?? NSNull()
        var audit: [String: Any] = ["seq": a.seq, "checkpoint_seq": a.checkpointSeq, "checkpoint_lag": max(0, a.seq - a.vouchedSeq),
                                    "records": a.records, "flushes": a.batches]
        if let n = a.anchorSeq { audit["anchor_seq"] = n }
        if let p = a.flushP50 { audit["flush_p50_us"] = p }
        if let p = a.flushP99 { audit["flush_p99_us"] = p }
        if let p = a.flushMax { audit["flush_max_us"] = p }
        if let n = a.forwarded { audit["syslog_sent"] = n }
        if let n = a.forwardDropped { audit["syslog_dropped"] = n }
        if let w = a.witnessCommand {
            audit["witness_sent"] = w.sent
            audit["witness_failed"] = w.failed
            if let e = w.lastError { audit["witness_last_error"] = e }
        }
        var meta: [String: Any] = ["check_interval_s": parts.checkInterval]
        if let s = parts.sweeps.lastSweep {
            meta["last_sweep_at"] = s.endedAt
            meta["last_sweep_checked"] = s.checked
            meta["last_sweep_failed"] = s.failed
            meta["sweep_lease_elsewhere"] = s.leaseHeldElsewhere
            meta["last_sweep_refreshed"] = s.refreshed
            meta["last_sweep_refresh_failed"] = s.refreshFailed
            meta["stale_tokens"] = s.stale
        }
        if let p = parts.sweeps.paused, p.until > Int64(Date().timeIntervalSince1970) {
            meta["paused_until"] = p.until
            meta["paused_because"] = p.reason
        }
        var object: [String: Any] = [
            "ok": true,
            "version": TokenVault.configuration.version,
            "pid": Int(getpid()),
            "started_at": Int64(startedAt.timeIntervalSince1970),
            "uptime_s": Int(Date().timeIntervalSince(startedAt)),
            "home": parts.vault.home.root,
            "host_id": parts.vault.hostID,
            "store": parts.vault.storeIsShared ? "shared" : "sqlite",
            "socket": parts.server.configuration.socketPath,
            "connections": parts.server.connectionCount,
            "policy_rules": parts.processor.policy.rules.count,
            "reads": ["granted_total": totals.granted, "refused_total": totals.refused, "failed_total": totals.failed,
                      "granted_per_s": (grantedRate * 10).rounded() / 10, "refused_per_s": (refusedRate * 10).rounded() / 10],
            "audit": audit,
            "keys": ["master_keys": keys.count, "current": currentKey,
                     "missing": keys.filter { $0.source == nil }.count],
            "tokens": tokens(),
            "meta": meta,
        ]
        if let m = parts.metrics { object["metrics"] = m }
        return Output.jsonLine(object)
    }
}

/// `tokenvault status`: asks the running daemon over `<home>/admin.sock`.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what the running daemon is doing: reads, audit, keys, tokens, Meta checks.",
        discussion: """
            Asks the daemon over its admin socket (<home>/admin.sock, mode 0600): run it as the daemon's \
            user (or root). Nothing it prints is a secret.

            Example:
              sudo -u tokenvault tokenvault status --home /var/lib/tokenvault
            """)

    @Option(help: ArgumentHelp("The vault home (default: $TOKENVAULT_HOME, else ./.tokenvault).", valueName: "dir"))
    var home: String?
    @Option(help: ArgumentHelp("The admin socket (default: <home>/admin.sock).", valueName: "path")) var adminSocket: String?
    @Flag(help: "Print the daemon's JSON object as it is.") var json = false

    func run() throws {
        let root = home ?? ProcessInfo.processInfo.environment["TOKENVAULT_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "./.tokenvault"
        let path = adminSocket ?? root + "/admin.sock"
        let line = try AdminClient.ask(path, "status")
        guard let data = line.data(using: .utf8), let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw CLIFailure(message: "error: the daemon's answer on \(path) is not JSON", exit: .failure)
        }
        guard o["ok"] as? Bool == true else {
            throw CLIFailure(message: "error: the daemon says: \(o["error"] as? String ?? "an error")", exit: .failure)
        }
        if json { print(line); return }
        func n(_ v: Any?) -> String { (v as? NSNumber).map { "\($0)" } ?? "-" }
        let reads = o["reads"] as? [String: Any] ?? [:]
        let audit = o["audit"] as? [String: Any] ?? [:]
        let keys = o["keys"] as? [String: Any] ?? [:]
        let tokens = o["tokens"] as? [String: Any] ?? [:]
        let meta = o["meta"] as? [String: Any] ?? [:]
        let sweep: String
        if let at = meta["last_sweep_at"] as? NSNumber {
            sweep = meta["sweep_lease_elsewhere"] as? Bool == true ? "another host sweeps (last looked \(Output.date(at.int64Value)))"
                : "\(Output.date(at.int64Value)): \(n(meta["last_sweep_checked"])) checked, \(n(meta["last_sweep_failed"])) failed"
        } else {
            sweep = "none yet"
        }
        var metaLine = sweep
        if let stale = meta["stale_tokens"] as? NSNumber, stale.intValue > 0 { metaLine += "; \(stale) tokens not checked for two intervals" }
        if let until = meta["paused_until"] as? NSNumber {
            metaLine += "; Meta calls paused until \(Output.date(until.int64Value)) (\(meta["paused_because"] as? String ?? "throttled"))"
        }
        let rows: [(String, String)] = [
            ("daemon", "pid \(n(o["pid"])), version \(o["version"] as? String ?? "?"), up \(Self.duration(n(o["uptime_s"])))"),
            ("host", "\(o["host_id"] as? String ?? "?") (store: \(o["store"] as? String ?? "?"))"),
            ("socket", "\(o["socket"] as? String ?? "?"), \(n(o["connections"])) connections, \(n(o["policy_rules"])) policy rules"),
            ("reads", "\(n(reads["granted_per_s"]))/s granted, \(n(reads["refused_per_s"]))/s refused (last 10 s); "
                + "\(n(reads["granted_total"])) granted, \(n(reads["refused_total"])) refused, \(n(reads["failed_total"])) failed since start"),
            ("audit", "seq \(n(audit["seq"])), "
                + (audit["anchor_seq"] == nil ? "checkpoint \(n(audit["checkpoint_seq"])) " : "anchor \(n(audit["anchor_seq"])), vault.db \(n(audit["checkpoint_seq"])) ")
                + "(\(n(audit["checkpoint_lag"])) behind); "
                + "flush p50 \(n(audit["flush_p50_us"])) µs, p99 \(n(audit["flush_p99_us"])) µs, max \(n(audit["flush_max_us"])) µs"
                + (audit["syslog_sent"] == nil ? "" : "; syslog \(n(audit["syslog_sent"])) sent, \(n(audit["syslog_dropped"])) dropped")
                + (audit["witness_sent"] == nil ? "" : "; witness \(n(audit["witness_sent"])) sent, \(n(audit["witness_failed"])) failed")),
            ("keys", "\(n(keys["master_keys"])) master keys, current \(keys["current"] as? String ?? "-"), \(n(keys["missing"])) missing"),
            ("tokens", tokens["count_failed"] != nil ? "could not be counted: the store cannot be read right now"
                : tokens["total"] == nil ? "still being counted (a large vault takes seconds; ask again)"
                : "\(n(tokens["total"])) stored: \(n(tokens["expiring"])) expiring soon, \(n(tokens["expired"])) expired, "
                + "\(n(tokens["invalid"])) invalid, \(n(tokens["unchecked"])) Meta tokens unchecked"),
            ("meta checks", metaLine),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        for (k, v) in rows { print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
    }

    static func duration(_ seconds: String) -> String {
        guard let s = Int(seconds) else { return seconds }
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        if s < 172_800 { return "\(s / 3600) h" }
        return "\(s / 86_400) days"
    }
}

/// One request line to an admin socket, one answer line back (5 s at most).
enum AdminClient {
    static func ask(_ path: String, _ request: String) throws -> String {
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CLIFailure(message: "error: no socket: \(String(cString: strerror(errno)))", exit: .failure) }
        defer { close(fd) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else { throw CLIFailure(message: "error: the path \(path) is too long for a socket", exit: .badInput) }
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if connected != 0 {
            switch errno {
            case ENOENT, ECONNREFUSED:
                throw CLIFailure(message: "error: no daemon answers on \(path): is `tokenvault serve` running for this home?", exit: .unavailable)
            case EACCES, EPERM:
                throw CLIFailure(message: "error: \(path) is the daemon owner's (mode 0600): run status as that user, or as root", exit: .denied)
            default:
                throw CLIFailure(message: "error: cannot connect to \(path): \(String(cString: strerror(errno)))", exit: .unavailable)
            }
        }
        let line = Array((request + "\n").utf8)
        _ = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_NOSIGNAL)) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while answer.count < 1 << 20 {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { answer.append(contentsOf: buffer[..<n]); continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw CLIFailure(message: "error: the daemon did not answer on \(path) within 5 s", exit: .unavailable) }
            break
        }
        guard !answer.isEmpty else {
            throw CLIFailure(message: "error: the daemon on \(path) closed the connection without answering (it answers its own user and root only)", exit: .denied)
        }
        return String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .newlines)
    }
}
