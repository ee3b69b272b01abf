import Foundation
import VaultCrypto
import CSystemShims

/// The index of one audit segment, `audit-000001.idx` beside `audit-000001.jsonl`: which lines hold each
/// token, uid, action and outcome, and the time range of every block of 1,024 records, so `audit query`
/// and `audit report` read only the lines that can match.
///
/// An index is a convenience, never evidence: `audit verify` does not read it, and a query uses it only
/// while the segment still holds, at the offset the index names, the very record (by its chain hash)
/// the index ended on; otherwise the segment is scanned in full. Every line an index points at is parsed
/// and filtered again, so a damaged index cannot make a query print a record that does not match; the
/// lines after the indexed part (the live segment's newest records) are always scanned.
///
/// Layout (little-endian): an 80-byte header (`TVAIDX01`; u64 bytes covered, u64 offset of the last record
/// covered, that record's 32-byte chain hash; u32 records, blocks, keys, postings, name bytes, and 0); `blockCount` blocks of 64 bytes (u64 offset of the block's
/// first line, the earliest and the latest `time` in it, 27 bytes each, 2 zero bytes); `keyCount` keys of
/// 16 bytes sorted by field then name (u8 field, u8 0, u16 name length, u32 name offset, u32 first
/// posting, u32 posting count); the names; `postingCount` u32 line offsets, ascending within each key.
/// Field 0 lists the lines that are not laid out as the writer writes records (a query always reads them).
public struct AuditIndex {
    static let magic = Array("TVAIDX01".utf8)
    static let headerSize = 80
    static let blockRecords = 1024
    static let blockSize = 64
    static let keySize = 16

    enum Field: UInt8 { case unindexed = 0, token = 1, uid = 2, action = 3, outcome = 4 }

    public static func path(_ directory: String, _ segment: Int) -> String {
        String(AuditSegments.path(directory, segment).dropLast(6)) + ".idx"
    }

    // MARK: - building

    /// Indexes the complete lines of a segment and writes the index atomically (a temporary file renamed
    /// over the old one). Returns how many lines it covers. Segments of 4 GiB or more are not indexed.
    @discardableResult
    public static func build(directory: String, segment: Int) throws -> Int {
        let source = AuditSegments.file(directory, segment)
        guard let file = AuditSegments.open(directory, segment, sequential: true) else {
            throw AuditWriteError(description: "cannot read \(source): \(String(cString: strerror(errno)))")
        }
        defer { withExtendedLifetime(file) {} }  // mapped until the index is written
        let bytes = file.bytes
        guard bytes.count < Int(UInt32.max) else { throw AuditWriteError(description: "\(source) is too large to index (4 GiB or more)") }
        // token, uid, action, outcome: each value's lines. A null token is "\0", which no escaped name can be.
        // Token names are hashed as whole byte strings (`IndexKey`), not byte by byte; uids are keyed by
        // their number, and the few actions and outcomes found by a scan: no allocation per record for those.
        var tokens: [IndexKey: [UInt32]] = [:]
        var uids: [UInt32: [UInt32]] = [:]
        var small = [SmallField](repeating: SmallField(), count: 2)  // action, outcome
        let nullName: [UInt8] = [0]
        var unindexed: [UInt32] = []
        var blocks: [(offset: Int, min: [UInt8], max: [UInt8])] = []
        var records = 0
        var lastLine = -1
        var start = 0
        while start < bytes.count, let nl = memchr(bytes.baseAddress! + start, 0x0a, bytes.count - start) {
            let end = bytes.baseAddress!.distance(to: UnsafeRawPointer(nl))
            defer { start = end + 1 }
            let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            let offset = UInt32(start)
            lastLine = start
            guard let f = AuditFields.parse(line), f.time.count == 27 else {
                unindexed.append(offset)
                continue
            }
            if records % blockRecords == 0 { blocks.append((start, [], [])) }
            records += 1
            let time = UnsafeRawBufferPointer(rebasing: line[f.time])
            let b = blocks.count - 1
            if blocks[b].min.isEmpty || Self.precedes(time, blocks[b].min) { blocks[b].min = Array(time) }
            if blocks[b].max.isEmpty || Self.precedes(blocks[b].max, time) { blocks[b].max = Array(time) }
            tokens[IndexKey(f.token.map { Array(UnsafeRawBufferPointer(rebasing: line[$0])) } ?? nullName), default: []].append(offset)
            uids[f.uid, default: []].append(offset)
            small[0].add(UnsafeRawBufferPointer(rebasing: line[f.action]), offset)
            small[1].add(UnsafeRawBufferPointer(rebasing: line[f.outcome]), offset)
        }
        // The last line that is a whole record, found from the end: what the index vouches for.
        var last: (offset: Int, hash: AuditDigest)?
        while lastLine >= 0 {
            let end = lastLine + lineLength(bytes, at: lastLine)
            if let parsed = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: bytes[lastLine..<end])) {
                last = (lastLine, parsed.hash)
                break
            }
            guard lastLine > 0 else { break }
            // The line before starts after the newline before the one that ends it (or at the start).
            if let nl = tv_memrchr(bytes.baseAddress!, 0x0a, lastLine - 1) {
                lastLine = bytes.baseAddress!.distance(to: nl) + 1
            } else {
                lastLine = 0
            }
        }
        guard let last else {
            // Nothing to vouch for: no index (a query scans the segment, which is empty or all damage).
            unlink(path(directory, segment))
            return 0
        }
        let covered = last.offset + lineLength(bytes, at: last.offset) + 1

        var keys: [(field: Field, name: [UInt8], list: [UInt32])] = [(.unindexed, [], unindexed.filter { Int($0) < covered })]
        var tokenKeys = tokens.map { (field: Field.token, name: $0.key.bytes, list: $0.value.filter { Int($0) < covered }) }
        tokenKeys.sort { a, b in Self.precedes(a.name, b.name) }
        keys.append(contentsOf: tokenKeys)
        var uidKeys = uids.map { (field: Field.uid, name: Array(String($0.key).utf8), list: $0.value.filter { Int($0) < covered }) }
        uidKeys.sort { a, b in Self.precedes(a.name, b.name) }
        keys.append(contentsOf: uidKeys)
        for (i, field) in [Field.action, .outcome].enumerated() {
            var fieldKeys = small[i].values.indices.map { (field: field, name: small[i].values[$0], list: small[i].lists[$0].filter { Int($0) < covered }) }
            fieldKeys.sort { a, b in Self.precedes(a.name, b.name) }
            keys.append(contentsOf: fieldKeys)
        }

        var out: [UInt8] = magic
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { out.append(contentsOf: $0) } }
        let postingCount = keys.reduce(0) { $0 + $1.list.count }
        let namesBytes = keys.reduce(0) { $0 + $1.name.count }
        u64(covered)
        u64(last.offset)
        last.hash.withUnsafeBytes { out.append(contentsOf: $0) }
        u32(records); u32(blocks.count); u32(keys.count); u32(postingCount); u32(namesBytes); u32(0)
        precondition(out.count == headerSize)
        for b in blocks where b.offset < covered {
            u64(b.offset)
            out.append(contentsOf: b.min)
            out.append(contentsOf: b.max)
            out.append(contentsOf: [0, 0])
        }
        var nameOffset = 0, first = 0
        for k in keys {
            out.append(k.field.rawValue); out.append(0)
            withUnsafeBytes(of: UInt16(k.name.count).littleEndian) { out.append(contentsOf: $0) }
            u32(nameOffset); u32(first); u32(k.list.count)
            nameOffset += k.name.count
            first += k.list.count
        }
        for k in keys { out.append(contentsOf: k.name) }
        for k in keys { for p in k.list { withUnsafeBytes(of: p.littleEndian) { out.append(contentsOf: $0) } } }
        try writeAtomically(out, to: path(directory, segment))
        return records + unindexed.count
    }

    /// Byte-wise order (what `lexicographicallyPrecedes` gives), by `memcmp`.
    private static func precedes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        let n = min(a.count, b.count)
        let c = n == 0 ? 0 : memcmp(a.baseAddress!, b.baseAddress!, n)
        return c != 0 ? c < 0 : a.count < b.count
    }

    private static func precedes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBytes { x in b.withUnsafeBytes { y in precedes(x, y) } }
    }

    private static func precedes(_ a: UnsafeRawBufferPointer, _ b: [UInt8]) -> Bool {
        b.withUnsafeBytes { precedes(a, $0) }
    }

    private static func precedes(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
        a.withUnsafeBytes { precedes($0, b) }
    }

    /// A token name as a dictionary key, hashed in one call over its bytes.
    private struct IndexKey: Hashable {
        let bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
        static func == (a: IndexKey, b: IndexKey) -> Bool { a.bytes == b.bytes }
    }

    /// A field with few distinct values (action, outcome): each value and its lines, found by a scan.
    private struct SmallField {
        var values: [[UInt8]] = []
        var lists: [[UInt32]] = []
        private var lastHit = 0

        mutating func add(_ value: UnsafeRawBufferPointer, _ offset: UInt32) {
            if lastHit < values.count, Self.equal(values[lastHit], value) { return lists[lastHit].append(offset) }
            for i in values.indices where Self.equal(values[i], value) {
                lastHit = i
                return lists[i].append(offset)
            }
            values.append(Array(value))
            lists.append([offset])
            lastHit = values.count - 1
        }

        private static func equal(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
            a.count == b.count && a.withUnsafeBytes { $0.isEmpty || memcmp($0.baseAddress!, b.baseAddress!, b.count) == 0 }
        }
    }

    private static func lineLength(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int {
        AuditScan.lineEnd(bytes, from: offset, limit: bytes.count) - offset
    }

    private static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw AuditWriteError(description: "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return true
        }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp)
            throw AuditWriteError(description: "cannot write \(path): \(why)")
        }
    }

    // MARK: - reading

    private let file: MappedFile
    /// The bytes of the segment the index covers (whole lines, from the start).
    let covered: Int
    let records: Int
    private let blockCount: Int
    private let keyCount: Int
    private let namesAt: Int
    private let postingsAt: Int

    /// Opens a segment's index when it still describes `segment` (the record it ended on is where it
    /// says, unchanged); nil when it is missing, damaged or stale.
    init?(directory: String, segment: Int, segmentBytes: UnsafeRawBufferPointer) {
        guard let file = MappedFile(path: Self.path(directory, segment)) else { return nil }
        let b = file.bytes
        guard b.count >= Self.headerSize, memcmp(b.baseAddress!, Self.magic, 8) == 0 else { return nil }
        func u64(_ at: Int) -> Int { Int(truncatingIfNeeded: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))) }
        func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
        let covered = u64(8), lastOffset = u64(16)
        let (records, blocks, keys, postings, names) = (u32(56), u32(60), u32(64), u32(68), u32(72))
        let namesAt = Self.headerSize + blocks * Self.blockSize + keys * Self.keySize
        guard covered >= 0, lastOffset >= 0, covered <= segmentBytes.count, lastOffset < covered, namesAt + names + 4 * postings == b.count else { return nil }
        // The record the index ended on must still be there, with the same chain hash.
        let lineEnd = AuditScan.lineEnd(segmentBytes, from: lastOffset, limit: segmentBytes.count)
        guard lineEnd + 1 == covered,
              let parsed = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: segmentBytes[lastOffset..<lineEnd])),
              parsed.hash == AuditDigest(UnsafeRawBufferPointer(rebasing: b[24..<56])) else { return nil }
        self.file = file
        self.covered = covered
        self.records = records
        blockCount = blocks
        keyCount = keys
        self.namesAt = namesAt
        postingsAt = namesAt + names
    }

    /// Whether the segment has an index that still describes all of it.
    public static func isCurrent(directory: String, segment: Int) -> Bool {
        guard let file = AuditSegments.open(directory, segment),
              let idx = AuditIndex(directory: directory, segment: segment, segmentBytes: file.bytes) else { return false }
        return withExtendedLifetime(file) { idx.covered == file.bytes.count }
    }

    private func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: file.bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }

    /// The byte ranges of the blocks whose times overlap the matcher's range, merged (all, without one).
    func ranges(for m: AuditMatcher) -> [Range<Int>] {
        let b = file.bytes
        var out: [Range<Int>] = []
        for i in 0..<blockCount {
            let at = Self.headerSize + i * Self.blockSize
            let start = Int(truncatingIfNeeded: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
            let end = i + 1 < blockCount
                ? Int(truncatingIfNeeded: UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at + Self.blockSize, as: UInt64.self))) : covered
            // Blocks run on, in order, inside the covered part: anything else is a damaged index, and the
            // whole covered part is read.
            guard start <= end, end <= covered, start >= (out.last?.upperBound ?? 0) else { return [0..<covered] }
            let minTime = UnsafeRawBufferPointer(rebasing: b[(at + 8)..<(at + 35)])
            let maxTime = UnsafeRawBufferPointer(rebasing: b[(at + 35)..<(at + 62)])
            if let until = m.filter.until.map({ Array($0.utf8) }), AuditMatcher.compare(minTime, until) >= 0 { continue }
            if let since = m.filter.since.map({ Array($0.utf8) }), AuditMatcher.compare(maxTime, since) < 0 { continue }
            if let last = out.last, last.upperBound == start { out[out.count - 1] = last.lowerBound..<end } else { out.append(start..<end) }
        }
        return out
    }

    /// The offsets of the records that can match, ascending: the shortest posting list among the filter's
    /// token, uid, action and outcome; nil when the filter names none.
    func candidates(for m: AuditMatcher) -> [UInt32]? {
        var lists: [[UInt32]] = []
        let f = m.filter
        if let token = f.token {
            if token.hasSuffix("*") {
                let prefix = AuditMatcher.escapedContent(String(token.dropLast()))
                lists.append(merge(keys(.token, prefix: prefix).map(postings)))
            } else {
                lists.append(key(.token, AuditMatcher.escapedContent(token)).map(postings) ?? [])
            }
        }
        if let uid = f.uid { lists.append(key(.uid, Array(String(uid).utf8)).map(postings) ?? []) }
        if let action = f.action { lists.append(key(.action, AuditMatcher.escapedContent(action)).map(postings) ?? []) }
        if let outcome = f.outcome { lists.append(key(.outcome, AuditMatcher.escapedContent(outcome)).map(postings) ?? []) }
        return lists.min(by: { $0.count < $1.count })
    }

    /// The lines that are not laid out as the writer writes records, ascending.
    var unindexed: [UInt32] { key(.unindexed, []).map(postings) ?? [] }

    /// Two ascending lists as one, without duplicates.
    static func mergeSorted(_ a: [UInt32], _ b: [UInt32]) -> [UInt32] {
        guard !b.isEmpty else { return a }
        guard !a.isEmpty else { return b }
        var out: [UInt32] = []
        out.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i] < b[j]) { out.append(a[i]); i += 1 }
            else if i == a.count || b[j] < a[i] { out.append(b[j]); j += 1 }
            else { out.append(a[i]); i += 1; j += 1 }
        }
        return out
    }

    private func keyAt(_ i: Int) -> (field: UInt8, name: UnsafeRawBufferPointer, first: Int, count: Int) {
        let at = Self.headerSize + blockCount * Self.blockSize + i * Self.keySize
        let b = file.bytes
        let len = Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: at + 2, as: UInt16.self)))
        let nameAt = namesAt + u32(at + 4)
        let name = nameAt + len <= postingsAt ? UnsafeRawBufferPointer(rebasing: b[nameAt..<(nameAt + len)]) : UnsafeRawBufferPointer(rebasing: b[0..<0])
        return (b[at], name, u32(at + 8), u32(at + 12))
    }

    /// The first key not ordered before (field, name).
    private func lowerBound(_ field: Field, _ name: [UInt8]) -> Int {
        var lo = 0, hi = keyCount
        while lo < hi {
            let mid = (lo + hi) / 2
            let k = keyAt(mid)
            let before = k.field != field.rawValue ? k.field < field.rawValue : AuditMatcher.compare(k.name, name) < 0
            if before { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func key(_ field: Field, _ name: [UInt8]) -> Int? {
        let i = lowerBound(field, name)
        guard i < keyCount else { return nil }
        let k = keyAt(i)
        return k.field == field.rawValue && AuditMatcher.compare(k.name, name) == 0 ? i : nil
    }

    private func keys(_ field: Field, prefix: [UInt8]) -> [Int] {
        var i = lowerBound(field, prefix)
        var out: [Int] = []
        while i < keyCount {
            let k = keyAt(i)
            guard k.field == field.rawValue, k.name.count >= prefix.count,
                  prefix.isEmpty || prefix.withUnsafeBytes({ memcmp(k.name.baseAddress!, $0.baseAddress!, prefix.count) }) == 0 else { break }
            out.append(i)
            i += 1
        }
        return out
    }

    private func postings(_ i: Int) -> [UInt32] {
        let k = keyAt(i)
        let start = postingsAt + 4 * k.first
        guard start + 4 * k.count <= file.bytes.count else { return [] }
        return (0..<k.count).map { UInt32(littleEndian: file.bytes.loadUnaligned(fromByteOffset: start + 4 * $0, as: UInt32.self)) }
    }

    private func merge(_ lists: [[UInt32]]) -> [UInt32] {
        lists.reduce([]) { Self.mergeSorted($0, $1) }
    }
}
