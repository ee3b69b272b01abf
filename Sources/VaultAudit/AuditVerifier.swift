import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import VaultCrypto
import VaultStore

/// Checks an audit log end to end: every record's hash chain, its MAC (with the audit keys), its
/// Ed25519 signature (with the keys or just the exported public key), segment continuity, and the
/// checkpoint kept in vault.db. Stops at the first bad record and names it.
public enum AuditVerifier {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let seq: Int64?
        public let message: String

        public var description: String {
            "\(file):\(line)\(seq.map { " (seq \($0))" } ?? ""): \(message)"
        }
    }

    public struct Report: Sendable {
        public var records: Int64 = 0
        public var segments = 0
        public var lastSeq: Int64 = 0
        /// The highest seq whose record carries a valid signature.
        public var signedThrough: Int64 = 0
        public var checkedMACs = false
        public var checkedCheckpoint = false
        public var problem: Problem?

        public var ok: Bool { problem == nil }
    }

    /// Parses every line on every core; nil for a line that is not a record.
    static func parallelParse(_ ranges: [Range<Int>], _ bytes: [UInt8]) -> [AuditRecordFormat.Parsed?] {
        // A raw buffer, not a shared Array: each worker writes only its own indices, with no
        // exclusivity check or copy-on-write between them.
        struct Slots: @unchecked Sendable { let buffer: UnsafeMutableBufferPointer<AuditRecordFormat.Parsed?> }
        let slots = Slots(buffer: .allocate(capacity: ranges.count))
        slots.buffer.initialize(repeating: nil)
        defer {
            slots.buffer.deinitialize()
            slots.buffer.deallocate()
        }
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, ranges.count / 4096 + 1))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in (ranges.count * w / workers)..<(ranges.count * (w + 1) / workers) {
                slots.buffer[i] = AuditRecordFormat.parse(bytes[ranges[i]])
            }
        }
        return Array(slots.buffer)
    }

    /// A file's bytes with one copy (not Data, then an Array of it).
    static func readWhole(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        let size = Int(st.st_size)
        var failed = false
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buf, n in
            var done = 0
            while done < size {
                let r = read(fd, buf.baseAddress! + done, size - done)
                if r <= 0 { if r < 0 && errno == EINTR { continue }; failed = r < 0; break }
                done += r
            }
            n = done
        }
        return failed ? nil : bytes
    }

    /// Checks hashes, MACs and signatures of parsed records in parallel; returns the first failure.
    static func crypto(records: [(line: Range<Int>, parsed: AuditRecordFormat.Parsed)], bytes: [UInt8], previous: [UInt8],
                       keys: AuditKeys?, publicKey: [UInt8]?) -> (index: Int, message: String)? {
        final class First: @unchecked Sendable {
            let lock = NSLock()
            var value: (index: Int, message: String)?
            func offer(_ index: Int, _ message: String) {
                lock.withLock { if value == nil || index < value!.index { value = (index, message) } }
            }
        }
        let first = First()
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, records.count / 4096 + 1))
        struct Bytes: @unchecked Sendable { let raw: UnsafeRawBufferPointer }
        bytes.withUnsafeBytes { pointer in
            let shared = Bytes(raw: pointer)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let raw = shared.raw
                let range = (records.count * w / workers)..<(records.count * (w + 1) / workers)
                for i in range {
                    let r = records[i]
                    let prev = i == 0 ? previous : records[i - 1].parsed.hash
                    let prefix = UnsafeRawBufferPointer(rebasing: raw[r.line.lowerBound..<r.parsed.prefixEnd])
                    let computed = prev.withUnsafeBytes { SHA256.hash($0, prefix) }
                    guard constantTimeEqual(computed, r.parsed.hash) else {
                        first.offer(i, "the record does not match its hash: it was changed, or the chain before it was")
                        return
                    }
                    if let keys, !constantTimeEqual(keys.recordMAC(hash: r.parsed.hash), r.parsed.mac) {
                        first.offer(i, "the record's MAC does not verify: it was forged without the audit key")
                        return
                    }
                    if let signature = r.parsed.signature, let publicKey,
                       !SigningKey.verify(signature: signature, message: AuditKeys.signedMessage(hash: r.parsed.hash), publicKey: publicKey) {
                        first.offer(i, "the record's signature does not verify")
                        return
                    }
                }
            }
        }
        return first.value
    }

    /// `keys` checks MACs and the checkpoint; `publicKey` alone checks the chain and signatures.
    public static func verify(directory: String, keys: AuditKeys?, publicKey: [UInt8]?,
                              checkpoint: AuditCheckpointRecord?) -> Report {
        var report = Report()
        report.checkedMACs = keys != nil
        let publicKey = publicKey ?? keys?.publicKey
        let segments = AuditSegments.list(directory)
        var expectedSeq: Int64 = 1
        var prevHash = AuditRecordFormat.genesisHash
        var checkpointHash: [UInt8]?

        for (position, index) in segments.enumerated() {
            let path = AuditSegments.path(directory, index)
            if index != position + 1 {
                report.problem = Problem(file: AuditSegments.path(directory, position + 1), line: 0, seq: nil,
                                         message: "segment missing: the log jumps to \(path)")
                return report
            }
            report.segments += 1
            guard let bytes = readWhole(path) else {
                report.problem = Problem(file: path, line: 0, seq: nil, message: "cannot read the segment")
                return report
            }
            // Pass 1: find the lines, parse them on every core, then check seq continuity in order.
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(bytes.count / 400 + 1)
            var start = 0
            var truncatedTail = false
            bytes.withUnsafeBufferPointer { buf in
                while start < buf.count {
                    guard let nl = memchr(buf.baseAddress! + start, 0x0a, buf.count - start) else {
                        truncatedTail = true
                        break
                    }
                    let end = buf.baseAddress!.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                    ranges.append(start..<end)
                    start = end + 1
                }
            }
            let parsed = parallelParse(ranges, bytes)
            var records: [(line: Range<Int>, parsed: AuditRecordFormat.Parsed)] = []
            records.reserveCapacity(ranges.count)
            var orderProblem: (index: Int, problem: Problem)?
            for (i, candidate) in parsed.enumerated() {
                let lineNumber = i + 1
                guard let record = candidate else {
                    orderProblem = (records.count, Problem(file: path, line: lineNumber, seq: nil,
                                                          message: "not an audit record (changed or inserted text)"))
                    break
                }
                if record.seq != expectedSeq {
                    let message: String
                    if record.seq > expectedSeq {
                        if parsed[(i + 1)...].contains(where: { $0?.seq == expectedSeq }) {
                            message = "expected seq \(expectedSeq), which comes later: records were reordered"
                        } else {
                            message = (record.seq - 1 == expectedSeq ? "record \(expectedSeq) is" : "records \(expectedSeq)–\(record.seq - 1) are")
                                + " missing (deleted)"
                        }
                    } else {
                        message = "expected seq \(expectedSeq): a record was reordered or inserted"
                    }
                    orderProblem = (records.count, Problem(file: path, line: lineNumber, seq: record.seq, message: message))
                    break
                }
                records.append((ranges[i], record))
                expectedSeq += 1
            }
            if orderProblem == nil && truncatedTail {
                orderProblem = (records.count, Problem(file: path, line: ranges.count + 1, seq: nil,
                                                      message: "the last record is cut off mid-line (truncated)"))
            }
            // Pass 2, on every core: each record's hash, MAC and signature. Record i needs only record i-1's
            // stored hash, so the chain checks are independent once pass 1 has the stored values.
            let checked = crypto(records: records, bytes: bytes, previous: prevHash, keys: keys, publicKey: publicKey)
            var firstBad = checked
            if let o = orderProblem, firstBad == nil || o.index <= firstBad!.index { firstBad = (o.index, o.problem.message) }
            if let bad = firstBad {
                let good = records.prefix(bad.index)
                report.records += Int64(good.count)
                report.lastSeq = good.last?.parsed.seq ?? report.lastSeq
                report.signedThrough = max(report.signedThrough, good.last(where: { $0.parsed.signature != nil })?.parsed.seq ?? 0)
                if let o = orderProblem, o.index == bad.index, o.problem.message == bad.message {
                    report.problem = o.problem
                } else {
                    report.problem = Problem(file: path, line: bad.index + 1, seq: records[bad.index].parsed.seq, message: bad.message)
                }
                return report
            }
            for r in records {
                if let checkpoint, r.parsed.seq == checkpoint.seq { checkpointHash = r.parsed.hash }
                if r.parsed.signature != nil { report.signedThrough = r.parsed.seq }
            }
            report.records += Int64(records.count)
            if let last = records.last {
                report.lastSeq = last.parsed.seq
                prevHash = last.parsed.hash
            }
        }
        if let checkpoint, let keys {
            report.checkedCheckpoint = true
            let cpHash = decodeHex(checkpoint.hash) ?? []
            let last = segments.last.map { AuditSegments.path(directory, $0) } ?? directory
            guard constantTimeEqual(keys.checkpointMAC(seq: checkpoint.seq, hash: cpHash), decodeHex(checkpoint.mac) ?? []) else {
                report.problem = Problem(file: "vault.db", line: 0, seq: checkpoint.seq, message: "the audit checkpoint in vault.db was altered")
                return report
            }
            guard report.lastSeq >= checkpoint.seq else {
                report.problem = Problem(file: last, line: 0, seq: report.lastSeq + 1,
                                         message: "the log ends at seq \(report.lastSeq) but vault.db's checkpoint vouches for seq \(checkpoint.seq): records were cut off (truncated)")
                return report
            }
            guard let seen = checkpointHash, constantTimeEqual(seen, cpHash) else {
                report.problem = Problem(file: last, line: 0, seq: checkpoint.seq,
                                         message: "record \(checkpoint.seq) differs from the one vault.db's checkpoint vouches for")
                return report
            }
        }
        return report
    }
}
