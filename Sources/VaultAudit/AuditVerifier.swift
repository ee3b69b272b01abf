import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import VaultCore
import VaultCrypto

/// Checks an audit log end to end: every record's hash chain, its MAC (with the audit keys), its
/// Ed25519 signature (with the keys or just the exported public key), segment continuity, and the
/// checkpoint kept in vault.db. Stops at the first bad record and names it.
public enum AuditVerifier {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let seq: Int64?
        public let message: String

        public init(file: String, line: Int, seq: Int64?, message: String) {
            self.file = file
            self.line = line
            self.seq = seq
            self.message = message
        }

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
        /// The seq the keyring's freshness anchor vouches for, when there is one (``AuditAnchor``).
        public var anchorSeq: Int64?
        /// The seq vault.db's checkpoint vouches for, when there is one.
        public var checkpointSeq: Int64?
        /// When old segments were pruned: the last seq removed, as the signed prune record states it.
        public var prunedThrough: Int64?
        /// Segments a prune record says were removed that are still present (the prune was cut short):
        /// passed over, since the record vouches for them; the next `audit prune` removes them.
        public var pruneLeftovers: ClosedRange<Int>?
        public var problem: Problem?

        /// The first seq the log still holds.
        public var firstSeq: Int64 { (prunedThrough ?? 0) + 1 }

        public var ok: Bool { problem == nil }

        public init() {}
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
            bytes.withUnsafeBytes { raw in
                for i in (ranges.count * w / workers)..<(ranges.count * (w + 1) / workers) {
                    slots.buffer[i] = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: raw[ranges[i]]))
                }
            }
        }
        return Array(slots.buffer)
    }

    /// Opens a file for reading and gives `body` its descriptor and size; nil if it cannot be opened.
    static func withOpenFile<T>(_ path: String, _ body: (_ fd: Int32, _ size: Int) -> T?) -> T? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return body(fd, Int(st.st_size))
    }

    /// A file's bytes with one copy (not Data, then an Array of it).
    static func readWhole(_ path: String) -> [UInt8]? {
        let bytes = withOpenFile(path) { fd, size in readAll(fd, size) }
        guard path.hasSuffix(".gz") else { return bytes }
        return bytes.flatMap { b in try? b.withUnsafeBytes { try Gzip.decompress($0) } }
    }

    private static func readAll(_ fd: Int32, _ size: Int) -> [UInt8]? {
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
    static func crypto(records: [(line: Range<Int>, parsed: AuditRecordFormat.Parsed)], bytes: [UInt8], previous: AuditDigest,
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
                withMACKey(keys) { macKey in
                    let raw = shared.raw
                    let range = (records.count * w / workers)..<(records.count * (w + 1) / workers)
                    var signatures = SignatureSampler()
                    for i in range {
                        let r = records[i]
                        let prev = i == 0 ? previous : records[i - 1].parsed.hash
                        let prefix = UnsafeRawBufferPointer(rebasing: raw[r.line.lowerBound..<(r.line.lowerBound + r.parsed.prefixEnd)])
                        if let message = check(r.parsed, prefix: prefix, previous: prev, keys: keys, macKey: macKey, publicKey: publicKey,
                                               checkSignature: signatures.checkNow(r.parsed, index: i)) {
                            first.offer(i, message)
                            return
                        }
                    }
                    if let bad = signatures.finish(publicKey: publicKey) { first.offer(bad.index, bad.message) }
                }
            }
        }
        return first.value
    }

    /// Runs `body` with the MAC key's bytes (nil without keys). Each worker borrows them once for its whole
    /// run: retaining the one shared keys object per record made the cores contend on its reference count
    /// (about 14 % of a pass).
    static func withMACKey<R>(_ keys: AuditKeys?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard let keys else { return body(nil) }
        return keys.mac.withUnsafeBytes { body($0) }
    }

    /// Which signatures a pass checks. A signature vouches for the whole chain up to its record, so checking
    /// every one adds nothing but a place to name: a log at rest signs its last batch whenever nothing else
    /// waits, so a busy log carries a signature every few records, and an Ed25519 check per signature
    /// cost more than everything else `verify` does. A pass checks one signature in every `spacing`
    /// records, and always the last signed record of its run (so the log's last signature is checked,
    /// and `signedThrough` is always a checked one).
    struct SignatureSampler {
        static let spacing: Int64 = 4096
        private var lastChecked: Int64 = .min
        /// The run's latest signed record not checked yet, with its index.
        private(set) var unchecked: (index: Int, record: AuditRecordFormat.Parsed)?

        /// Whether to check `record`'s signature now; when not, it is remembered for ``finish``.
        mutating func checkNow(_ record: AuditRecordFormat.Parsed, index: Int) -> Bool {
            guard record.signature != nil else { return false }
            if record.seq &- lastChecked >= Self.spacing || lastChecked == .min {
                lastChecked = record.seq
                unchecked = nil
                return true
            }
            unchecked = (index, record)
            return false
        }

        /// Checks the run's last signed record if it was skipped: nil if it holds, else its index and why.
        func finish(publicKey: [UInt8]?) -> (index: Int, message: String)? {
            guard let (index, record) = unchecked, let publicKey, let signature = record.signature else { return nil }
            return SigningKey.verify(signature: signature, message: AuditKeys.signedMessage(hash: record.hash.bytes), publicKey: publicKey)
                ? nil : (index, "the record's signature does not verify")
        }
    }

    /// One record's hash (chain v2, else v1), MAC and, with `checkSignature`, signature; nil if they hold,
    /// else what is wrong. `macKey` is `keys.mac`'s bytes, borrowed by the caller (see ``withMACKey(_:_:)``).
    static func check(_ record: AuditRecordFormat.Parsed, prefix: UnsafeRawBufferPointer, previous: AuditDigest,
                      keys: AuditKeys?, macKey: UnsafeRawBufferPointer?, publicKey: [UInt8]?, checkSignature: Bool = true) -> String? {
        // Chain v2 first; a record that does not match it may be one written before v2.
        let chain: AuditRecordFormat.Chain
        if AuditRecordFormat.Chain.v2.digest(previous: previous, line: prefix) == record.hash {
            chain = .v2
        } else if AuditRecordFormat.Chain.v1.digest(previous: previous, line: prefix) == record.hash {
            chain = .v1
        } else {
            return "the record does not match its hash: it was changed, or the chain before it was"
        }
        if let macKey {
            // `keys`, shared by every worker, is touched only for a v1 record (see ``withMACKey(_:_:)``).
            let mac = chain == .v2 ? AuditRecordFormat.Chain.v2MAC(key: macKey, hash: record.hash) : keys.map { chain.mac($0, hash: record.hash) }
            guard mac?.constantTimeEquals(record.mac) == true else {
                return "the record's MAC does not verify: it was forged without the audit key"
            }
        }
        if checkSignature, let signature = record.signature, let publicKey,
           !SigningKey.verify(signature: signature, message: AuditKeys.signedMessage(hash: record.hash.bytes), publicKey: publicKey) {
            return "the record's signature does not verify"
        }
        return nil
    }

    /// What a segment that verified contributes to the report.
    struct SegmentSummary {
        var records: Int64 = 0
        var firstSeq: Int64 = 0
        var lastSeq: Int64 = 0
        var lastHash: AuditDigest
        var signedThrough: Int64 = 0
        var checkpointHash: AuditDigest?
    }

    /// The usual case, in one pass on every core over the mapped file: each worker takes a run of whole
    /// lines, parses them, checks their seqs run on, and checks each record against the hash stored in the
    /// line before it (for its first line, the last line of the run before). Returns nil at the first thing
    /// that is not right — the caller then runs the slower exact pass, which names the record and the fault.
    static func verifyFast(path: String, expectedSeq: Int64, previous: AuditDigest, keys: AuditKeys?,
                           publicKey: [UInt8]?, checkpointSeq: Int64?) -> SegmentSummary? {
        if path.hasSuffix(".gz") {
            guard let bytes = readWhole(path) else { return nil }
            return bytes.withUnsafeBytes { raw in
                verifyBytes(raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, size: raw.count, expectedSeq: expectedSeq, previous: previous,
                            keys: keys, publicKey: publicKey, checkpointSeq: checkpointSeq)
            }
        }
        return withOpenFile(path) { fd, size in
            verifyMapped(fd: fd, size: size, expectedSeq: expectedSeq, previous: previous, keys: keys,
                         publicKey: publicKey, checkpointSeq: checkpointSeq)
        }
    }

    private static func verifyMapped(fd: Int32, size: Int, expectedSeq: Int64, previous: AuditDigest, keys: AuditKeys?,
                                     publicKey: [UInt8]?, checkpointSeq: Int64?) -> SegmentSummary? {
        guard size > 0 else { return SegmentSummary(lastSeq: expectedSeq - 1, lastHash: previous) }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0), map != MAP_FAILED else { return nil }
        defer { munmap(map, size) }
        return verifyBytes(UnsafeRawPointer(map), size: size, expectedSeq: expectedSeq, previous: previous, keys: keys,
                           publicKey: publicKey, checkpointSeq: checkpointSeq)
    }

    /// ``verifyFast(path:expectedSeq:previous:keys:publicKey:checkpointSeq:)`` of bytes in memory (mapped, or
    /// a compressed segment decompressed).
    static func verifyBytes(_ map: UnsafeRawPointer, size: Int, expectedSeq: Int64, previous: AuditDigest, keys: AuditKeys?,
                            publicKey: [UInt8]?, checkpointSeq: Int64?) -> SegmentSummary? {
        guard size > 0 else { return SegmentSummary(lastSeq: expectedSeq - 1, lastHash: previous) }
        let raw = UnsafeRawBufferPointer(start: map, count: size)
        guard raw[size - 1] == 0x0a else { return nil }  // a cut-off last line

        // Runs of whole lines, one per worker.
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, size / (1 << 20) + 1))
        var starts = [0]
        for k in 1..<workers {
            let guess = max(starts.last!, size * k / workers)
            guard let nl = memchr(map + guess, 0x0a, size - guess) else { break }
            let next = map.distance(to: UnsafeRawPointer(nl)) + 1
            if next < size && next > starts.last! { starts.append(next) }
        }
        starts.append(size)
        let bounds = starts
        let runs = bounds.count - 1

        struct Slots: @unchecked Sendable { let buffer: UnsafeMutableBufferPointer<SegmentSummary?> }
        let slots = Slots(buffer: .allocate(capacity: runs))
        slots.buffer.initialize(repeating: nil)
        defer { slots.buffer.deinitialize(); slots.buffer.deallocate() }
        struct Bytes: @unchecked Sendable { let raw: UnsafeRawBufferPointer }
        let shared = Bytes(raw: raw)
        DispatchQueue.concurrentPerform(iterations: runs) { w in
            withMACKey(keys) { verifyRun(w, macKey: $0) }
        }
        @Sendable func verifyRun(_ w: Int, macKey: UnsafeRawBufferPointer?) {
            let raw = shared.raw
            var pos = bounds[w]
            let end = bounds[w + 1]
            var prev = previous
            if pos > 0 {
                // The last line of the run before: its stored hash is what this run's first record chains from.
                var lineStart = pos - 1
                while lineStart > 0 && raw[lineStart - 1] != 0x0a { lineStart -= 1 }
                guard let before = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: raw[lineStart..<(pos - 1)])) else { return }
                prev = before.hash
            }
            var summary = SegmentSummary(lastHash: prev)
            var signatures = SignatureSampler()
            while pos < end {
                guard let nl = memchr(raw.baseAddress! + pos, 0x0a, end - pos) else { return }
                let lineEnd = raw.baseAddress!.distance(to: UnsafeRawPointer(nl))
                let line = UnsafeRawBufferPointer(rebasing: raw[pos..<lineEnd])
                guard let record = AuditRecordFormat.parse(line) else { return }
                if summary.records == 0 {
                    summary.firstSeq = record.seq
                } else if record.seq != summary.lastSeq + 1 {
                    return
                }
                let prefix = UnsafeRawBufferPointer(rebasing: line[0..<record.prefixEnd])
                if check(record, prefix: prefix, previous: prev, keys: keys, macKey: macKey, publicKey: publicKey,
                         checkSignature: signatures.checkNow(record, index: Int(summary.records))) != nil { return }
                if record.signature != nil { summary.signedThrough = record.seq }
                if record.seq == checkpointSeq { summary.checkpointHash = record.hash }
                prev = record.hash
                summary.lastSeq = record.seq
                summary.lastHash = record.hash
                summary.records += 1
                pos = lineEnd + 1
            }
            if signatures.finish(publicKey: publicKey) != nil { return }
            slots.buffer[w] = summary
        }
        var total = SegmentSummary(firstSeq: expectedSeq, lastSeq: expectedSeq - 1, lastHash: previous)
        for w in 0..<runs {
            guard let run = slots.buffer[w], run.records > 0, run.firstSeq == total.lastSeq + 1 else { return nil }
            total.records += run.records
            total.lastSeq = run.lastSeq
            total.lastHash = run.lastHash
            total.signedThrough = max(total.signedThrough, run.signedThrough)
            total.checkpointHash = run.checkpointHash ?? total.checkpointHash
        }
        return total
    }

    /// `keys` checks MACs, the checkpoint and the keyring's anchor (`anchor`: the anchor file's bytes); a
    /// vault that has an audit key must have a checkpoint (`requireCheckpoint`). `publicKey` alone checks
    /// the chain and signatures, and then every record up to the end must be covered by a valid signature.
    /// ``verify(directory:keys:publicKey:checkpoint:anchor:requireCheckpoint:)`` on a thread of its own,
    /// while the caller reads the log for something else (the report): the answer, when it is done.
    public static func verifyConcurrently(directory: String, keys: AuditKeys?, publicKey: [UInt8]?, checkpoint: AuditCheckpointRecord?,
                                          anchor: [UInt8]? = nil, requireCheckpoint: Bool = false) -> () -> Report {
        let result = Mutex<Report?>(nil)
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            let r = verify(directory: directory, keys: keys, publicKey: publicKey, checkpoint: checkpoint, anchor: anchor,
                           requireCheckpoint: requireCheckpoint)
            result.withLock { $0 = r }
            done.signal()
        }
        t.name = "tokenvault-verify"
        t.start()
        return {
            done.wait()
            done.signal()  // a second call returns at once
            return result.withLock { $0! }
        }
    }

    public static func verify(directory: String, keys: AuditKeys?, publicKey: [UInt8]?,
                              checkpoint: AuditCheckpointRecord?, anchor: [UInt8]? = nil, requireCheckpoint: Bool = false) -> Report {
        var report = Report()
        report.checkedMACs = keys != nil
        let publicKey = publicKey ?? keys?.publicKey
        // What vouches for the log's end: vault.db's checkpoint and the keyring's anchor, the later of the two.
        var vouchProblem: Problem?
        var vouched: (seq: Int64, hash: [UInt8], source: String)?
        if let keys {
            if let checkpoint {
                let cpHash = decodeHex(checkpoint.hash) ?? []
                if cpHash.count == 32, constantTimeEqual(keys.checkpointMAC(seq: checkpoint.seq, hash: cpHash), decodeHex(checkpoint.mac) ?? []) {
                    vouched = (checkpoint.seq, cpHash, "vault.db's checkpoint")
                    report.checkpointSeq = checkpoint.seq
                } else {
                    vouchProblem = Problem(file: "vault.db", line: 0, seq: checkpoint.seq, message: "the audit checkpoint in vault.db was altered")
                }
            }
            if let anchor, vouchProblem == nil {
                do {
                    let a = try AuditAnchor.decode(anchor, keys: keys)
                    report.anchorSeq = a.seq
                    if checkpoint == nil {
                        vouchProblem = Problem(file: "vault.db", line: 0, seq: a.seq, message:
                            "vault.db holds no audit checkpoint, but the keyring's anchor vouches for seq \(a.seq): the checkpoint was deleted")
                    } else if a.seq >= (vouched?.seq ?? 0) {
                        vouched = (a.seq, a.hash, "the keyring's anchor")
                    }
                } catch {
                    vouchProblem = Problem(file: "audit.anchor", line: 0, seq: nil, message: "\(error)")
                }
            }
        }
        var segments = AuditSegments.list(directory)
        var expectedSeq: Int64 = 1
        var prevHash = AuditDigest(AuditRecordFormat.genesisHash)
        var checkpointHash: AuditDigest?
        // Old segments pruned: the chain carries on from the hash the signed prune record names (and the
        // first remaining record must chain from exactly it). Without such a record, a gap is a deletion.
        var firstSegment = 1
        if let first = segments.first, first > 1, let pruned = AuditPrune.covering(directory: directory, firstSegment: first),
           let hash = decodeHex(pruned.lastHash), hash.count == 32 {
            firstSegment = pruned.throughSegment + 1
            if pruned.throughSegment >= first {
                report.pruneLeftovers = first...pruned.throughSegment
                segments.removeAll { $0 <= pruned.throughSegment }
            }
            expectedSeq = pruned.lastSeq + 1
            prevHash = AuditDigest(hash)
            report.prunedThrough = pruned.lastSeq
        }

        for (position, index) in segments.enumerated() {
            let path = AuditSegments.file(directory, index)
            if index != firstSegment + position {
                report.problem = Problem(file: AuditSegments.path(directory, firstSegment + position), line: 0, seq: nil,
                                         message: "segment missing: the log jumps to \(path)" + (firstSegment == 1 && position == 0
                                            ? " (and no signed prune record accounts for the segments before it)" : ""))
                return report
            }
            report.segments += 1
            if let fast = verifyFast(path: path, expectedSeq: expectedSeq, previous: prevHash, keys: keys,
                                     publicKey: publicKey, checkpointSeq: vouched?.seq) {
                report.records += fast.records
                if fast.records > 0 {
                    report.lastSeq = fast.lastSeq
                    expectedSeq = fast.lastSeq + 1
                    prevHash = fast.lastHash
                }
                report.signedThrough = max(report.signedThrough, fast.signedThrough)
                checkpointHash = fast.checkpointHash ?? checkpointHash
                continue
            }
            // Something is wrong in this segment: the exact pass below finds the first bad record and says why.
            guard let bytes = readWhole(path) else {
                report.problem = Problem(file: path, line: 0, seq: nil, message: path.hasSuffix(".gz")
                    ? "cannot read the compressed segment: its gzip data is damaged or cut short" : "cannot read the segment")
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
                if let vouched, r.parsed.seq == vouched.seq { checkpointHash = r.parsed.hash }
                if r.parsed.signature != nil { report.signedThrough = r.parsed.seq }
            }
            report.records += Int64(records.count)
            if let last = records.last {
                report.lastSeq = last.parsed.seq
                prevHash = last.parsed.hash
            }
        }
        let last = segments.last.map { AuditSegments.file(directory, $0) } ?? directory
        if keys != nil {
            report.checkedCheckpoint = vouched != nil
            if let vouchProblem {
                report.problem = vouchProblem
                return report
            }
            guard let vouched else {
                if requireCheckpoint {
                    report.problem = Problem(file: "vault.db", line: 0, seq: nil, message: report.lastSeq > 0
                        ? "the log holds \(report.lastSeq) records but vault.db holds no audit checkpoint: it was deleted"
                        : "this vault has an audit key, so it has been audited, but vault.db holds no checkpoint and the log no record: both were deleted")
                }
                return report
            }
            guard report.lastSeq >= vouched.seq else {
                report.problem = Problem(file: last, line: 0, seq: report.lastSeq + 1,
                                         message: "the log ends at seq \(report.lastSeq) but \(vouched.source) vouches for seq \(vouched.seq): records were cut off (truncated)")
                return report
            }
            guard let seen = checkpointHash, seen == AuditDigest(vouched.hash) else {
                report.problem = Problem(file: last, line: 0, seq: vouched.seq,
                                         message: "record \(vouched.seq) differs from the one \(vouched.source) vouches for")
                return report
            }
        } else if publicKey != nil {
            guard report.lastSeq > 0 else {
                report.problem = Problem(file: directory, line: 0, seq: nil, message: "the log holds no record: there is no signature to verify")
                return report
            }
            guard report.signedThrough == report.lastSeq else {
                report.problem = Problem(file: last, line: 0, seq: report.signedThrough + 1, message:
                    "records after seq \(report.signedThrough) carry no valid signature, so nothing vouches for them "
                    + "(the writer signs its last record within a second; a copy taken mid-write can end unsigned: copy it again)")
                return report
            }
        }
        return report
    }
}
