import VaultCore
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import VaultCrypto

/// A **witness statement**: the vault's signature over one record's chain hash, kept somewhere root on
/// this host cannot rewrite (a remote journal, another machine, a ticket). Root holding the audit key can
/// re-chain and re-sign a whole log, but cannot change what was already sent away: a record that no longer
/// matches its statement is a rewrite. One JSON object per line:
///
///     {"witness":"tokenvault-audit-v1","host":"ads-worker-3","seq":1042,"time":"2026-12-03T08:10:00.123456Z",
///      "hash":"…64 hex…","sig":"…128 hex…"}
///
/// `sig` is the Ed25519 signature the record itself carries (over `"tokenvault-audit-v1\0" ‖ hash`), so
/// anyone with the exported public key can check a statement without the keyring.
public struct AuditWitnessStatement: Codable, Sendable, Equatable {
    public var witness = "tokenvault-audit-v1"
    public var host: String
    public var seq: Int64
    public var time: String
    public var hash: String
    public var sig: String

    public init(host: String, seq: Int64, time: String, hash: String, sig: String) {
        self.host = host
        self.seq = seq
        self.time = time
        self.hash = hash
        self.sig = sig
    }

    /// The statement as one line of JSON, fields in the order above.
    public var line: String {
        var out: [UInt8] = []
        out.append(contentsOf: "{\"witness\":\"tokenvault-audit-v1\",\"host\":".utf8)
        AuditRecordFormat.appendString(host, to: &out)
        out.append(contentsOf: ",\"seq\":\(seq),\"time\":\"\(time)\",\"hash\":\"\(hash)\",\"sig\":\"\(sig)\"}".utf8)
        return String(decoding: out, as: UTF8.self)
    }
}

/// Where the writer sends a statement each time it signs a record. `offer` is called on the flusher
/// right after the signed record is durable: it must only hand the statement over, never wait.
public protocol AuditWitnessSink: Sendable {
    func offer(_ statement: AuditWitnessStatement)
}

/// `audit.witness_command`: `/bin/sh -c COMMAND` with one statement (and a newline) on stdin, like the
/// notifier. One runs at a time; statements that arrive meanwhile are coalesced to the newest (a later
/// signature vouches for every record before it). A failure (exit status, 10 s timeout) is counted and the
/// next statement tries again.
public final class AuditWitnessCommand: AuditWitnessSink, @unchecked Sendable {
    public let command: String
    private let queue = DispatchQueue(label: "tokenvault-audit-witness")
    private let state = Mutex<(pending: AuditWitnessStatement?, running: Bool)>((nil, false))
    private let sentCount = Atomic<Int>(0)
    private let failedCount = Atomic<Int>(0)
    private let lastError = Mutex<String?>(nil)
    public var timeout: TimeInterval = 10

    public init(command: String) { self.command = command }

    /// Statements delivered, deliveries that failed, and the last failure's reason.
    public var counters: (sent: Int, failed: Int, lastError: String?) {
        (sentCount.load(ordering: .relaxed), failedCount.load(ordering: .relaxed), lastError.withLock { $0 })
    }

    public func offer(_ statement: AuditWitnessStatement) {
        let start = state.withLock { s -> Bool in
            s.pending = statement
            guard !s.running else { return false }
            s.running = true
            return true
        }
        if start { queue.async { self.drain() } }
    }

    /// Waits until every statement offered so far has been tried (for a clean stop, and tests).
    public func flush() {
        while state.withLock({ $0.running }) { usleep(10_000) }
    }

    private func drain() {
        while let next = state.withLock({ s -> AuditWitnessStatement? in
            let n = s.pending
            s.pending = nil
            if n == nil { s.running = false }
            return n
        }) {
            if let failure = run(next.line) {
                failedCount.add(1, ordering: .relaxed)
                lastError.withLock { $0 = failure }
            } else {
                sentCount.add(1, ordering: .relaxed)
            }
        }
    }

    /// The statement on the command's stdin (from memory: ``AdminCommand``).
    private func run(_ line: String) -> String? {
        AdminCommand.run(command, input: line, timeout: timeout, what: "the witness command")
    }
}

/// Checks a log against collected witness statements.
public enum AuditWitnessCheck {
    public struct Result: Sendable {
        /// Statements read and checked against the log.
        public var statements = 0
        /// The highest seq a matching statement vouches for.
        public var matchedThrough: Int64 = 0
        /// Statements about records since pruned (``AuditPrune``): nothing left to compare them with.
        public var pruned = 0
        public var problem: AuditVerifier.Problem?
        public var ok: Bool { problem == nil }
    }

    /// Reads a witness file (one statement per line, from `{"witness":` on; other lines — say, other
    /// journal or syslog output — are skipped, but a statement whose signature does not verify is an error),
    /// then compares each statement, in seq order, with the record at its seq. The first statement the
    /// log no longer matches names the rewrite: the record at that seq differs (or is gone), and the first
    /// changed record lies after the last statement that still matches.
    public static func check(directory: String, witnessFile: String, publicKey: [UInt8], host: String? = nil) -> Result {
        var result = Result()
        guard let text = try? String(contentsOfFile: witnessFile, encoding: .utf8) else {
            result.problem = .init(file: witnessFile, line: 0, seq: nil, message: "cannot read the witness file")
            return result
        }
        var statements: [(line: Int, s: AuditWitnessStatement, hash: [UInt8])] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // From the statement on: a syslog file's lines carry a prefix (`… tokenvault[42]: {"witness":…`).
            guard let at = raw.range(of: "{\"witness\":") else { continue }
            let trimmed = raw[at.lowerBound...].trimmingCharacters(in: .whitespaces)
            guard let s = try? JSONDecoder().decode(AuditWitnessStatement.self, from: Data(trimmed.utf8)),
                  s.witness == "tokenvault-audit-v1" else { continue }
            if let host, s.host != host { continue }
            guard let hash = decodeHex(s.hash), hash.count == 32, let sig = decodeHex(s.sig),
                  SigningKey.verify(signature: sig, message: AuditKeys.signedMessage(hash: hash), publicKey: publicKey) else {
                result.problem = .init(file: witnessFile, line: n + 1, seq: s.seq,
                                       message: "the witness statement's signature does not verify with this vault's public key")
                return result
            }
            statements.append((n + 1, s, hash))
        }
        guard !statements.isEmpty else {
            result.problem = .init(file: witnessFile, line: 0, seq: nil, message: "no witness statements of this vault in the file")
            return result
        }
        statements.sort { $0.s.seq < $1.s.seq }
        let wanted = Dictionary(statements.map { ($0.s.seq, $0.hash) }, uniquingKeysWith: { a, _ in a })
        // The hash each witnessed seq has in the log now, in one pass over the segments.
        var found: [Int64: (hash: [UInt8], file: String, line: Int)] = [:]
        var lastSeq: Int64 = 0, firstSeq = Int64.max
        let segments = AuditSegments.list(directory)
        for index in segments {
            let path = AuditSegments.file(directory, index)
            guard let file = AuditSegments.open(directory, index, sequential: true) else { continue }
            withExtendedLifetime(file) {
                let bytes = file.bytes
                var start = 0, lineNumber = 0
                while start < bytes.count {
                    let end = AuditScan.lineEnd(bytes, from: start, limit: bytes.count)
                    lineNumber += 1
                    if let p = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) {
                        lastSeq = max(lastSeq, p.seq)
                        firstSeq = min(firstSeq, p.seq)
                        if wanted[p.seq] != nil { found[p.seq] = (p.hash.bytes, path, lineNumber) }
                    }
                    start = end + 1
                }
            }
        }
        var lastGood: Int64 = 0
        // Statements from before the first remaining record of a pruned log (verify has checked the prune).
        let prunedBelow = (segments.first ?? 1) > 1 ? firstSeq : 1
        for (_, s, hash) in statements {
            if s.seq < prunedBelow {
                result.pruned += 1
                continue
            }
            result.statements += 1
            let after = lastGood > 0 ? " (the last witnessed record that still matches is seq \(lastGood))" : ""
            guard let now = found[s.seq] else {
                let message = s.seq > lastSeq
                    ? "witnessed on \(s.time), but the log ends at seq \(lastSeq): records were cut" + after
                    : "witnessed on \(s.time), but no record with this seq is in the log" + after
                result.problem = .init(file: directory, line: 0, seq: s.seq, message: message)
                return result
            }
            guard constantTimeEqual(now.hash, hash) else {
                result.problem = .init(file: now.file, line: now.line, seq: s.seq,
                                       message: "this record no longer matches its witness statement of \(s.time): the log was rewritten "
                                           + "at or before this record" + (lastGood > 0 ? ", after seq \(lastGood)" : "") + after)
                return result
            }
            lastGood = s.seq
            result.matchedThrough = s.seq
        }
        if result.statements == 0 {
            result.problem = .init(file: witnessFile, line: 0, seq: nil, message: "every witnessed record (\(result.pruned)) is before the log's "
                + "first record: nothing is left to compare, so the witness file vouches for none of this log (a prune keeps its own "
                + "signed record, which is witnessed: a real prune leaves at least that statement)")
        }
        return result
    }
}
