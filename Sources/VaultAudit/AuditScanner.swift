import CSystemShims
import Foundation
import VaultWire

/// One record's fields, found in place in its line (``AuditRecordFormat``'s fixed field order): byte
/// ranges of the line, with string fields still JSON-escaped. Nothing is copied or decoded until a
/// record matches and is printed (``entry(_:)``).
struct AuditFields {
    var seq: Int64 = 0
    var time: Range<Int> = 0..<0
    var channel: Range<Int> = 0..<0
    var action: Range<Int> = 0..<0
    var token: Range<Int>?
    var outcome: Range<Int> = 0..<0
    var reason: Range<Int>?
    var requestId: Range<Int>?
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    var pid: Int32 = 0
    var exe: Range<Int>?
    var tokenHmac: Range<Int>?

    /// Reads the fields of `line` (no newline) in the writer's order; nil when the line is laid out any
    /// other way (the caller then falls back to a full JSON decode, so no record is ever skipped for it).
    static func parse(_ line: UnsafeRawBufferPointer) -> AuditFields? {
        var c = Cursor(line: line)
        var f = AuditFields()
        guard c.literal("{\"seq\":"), let seq = c.integer(), c.literal(",\"time\":"), let time = c.string(), let t = time,
              c.literal(",\"channel\":"), let channel = c.string(), let ch = channel,
              c.literal(",\"action\":"), let action = c.string(), let a = action,
              c.literal(",\"token\":"), let token = c.string(),
              c.literal(",\"outcome\":"), let outcome = c.string(), let o = outcome,
              c.literal(",\"reason\":"), let reason = c.string(),
              c.literal(",\"request_id\":"), let requestId = c.string(),
              c.literal(",\"uid\":"), let uid = c.integer(), c.literal(",\"gid\":"), let gid = c.integer(),
              c.literal(",\"pid\":"), let pid = c.integer(),
              c.literal(",\"exe\":"), let exe = c.string(),
              c.literal(",\"token_hmac\":"), let hmac = c.string(), c.literal(",\"hash\":\"")
        else { return nil }
        guard let u = UInt32(exactly: uid), let g = UInt32(exactly: gid), let p = Int32(exactly: pid) else { return nil }
        f.seq = seq; f.time = t; f.channel = ch; f.action = a; f.token = token; f.outcome = o; f.reason = reason
        f.requestId = requestId; f.uid = u; f.gid = g; f.pid = p; f.exe = exe; f.tokenHmac = hmac
        return f
    }

    /// The record as reviewers see it (strings unescaped).
    func entry(_ line: UnsafeRawBufferPointer) -> AuditEntry {
        func text(_ r: Range<Int>) -> String { JSONUnescape.string(UnsafeRawBufferPointer(rebasing: line[r])) }
        return AuditEntry(seq: seq, time: text(time), channel: text(channel), action: text(action), token: token.map(text),
                          outcome: text(outcome), reason: reason.map(text), requestId: requestId.map(text), uid: uid, gid: gid,
                          pid: pid, exe: exe.map(text), tokenHmac: tokenHmac.map(text))
    }

    private struct Cursor {
        let line: UnsafeRawBufferPointer
        var i = 0

        mutating func literal(_ s: StaticString) -> Bool {
            let n = s.utf8CodeUnitCount
            guard i + n <= line.count, memcmp(line.baseAddress! + i, s.utf8Start, n) == 0 else { return false }
            i += n
            return true
        }

        mutating func integer() -> Int64? {
            var v: Int64 = 0
            var digits = 0
            let negative = i < line.count && line[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            while i < line.count, line[i] &- 0x30 < 10, digits < 18 {
                v = v * 10 + Int64(line[i] &- 0x30)
                i += 1
                digits += 1
            }
            return digits > 0 ? (negative ? -v : v) : nil
        }

        /// A string's content range (escapes left in), `.some(nil)` for `null`, nil for anything else.
        mutating func string() -> Range<Int>?? {
            if literal("null") { return .some(nil) }
            guard i < line.count, line[i] == UInt8(ascii: "\"") else { return nil }
            let start = i + 1
            var from = start
            let base = line.baseAddress!
            // The next quote (memchr), unless an odd run of backslashes before it escapes it.
            while from < line.count, let q = memchr(base + from, 0x22, line.count - from) {
                let j = base.distance(to: UnsafeRawPointer(q))
                var slashes = 0
                while j - slashes - 1 >= start && line[j - slashes - 1] == UInt8(ascii: "\\") { slashes += 1 }
                if slashes % 2 == 0 { i = j + 1; return .some(start..<j) }
                from = j + 1
            }
            return nil
        }
    }
}

/// The inverse of ``JSONText``'s string escaping (and any other valid JSON escape), for printing.
enum JSONUnescape {
    static func string(_ raw: UnsafeRawBufferPointer) -> String {
        guard raw.contains(UInt8(ascii: "\\")) else { return String(decoding: raw, as: UTF8.self) }
        var quoted = [UInt8](repeating: UInt8(ascii: "\""), count: raw.count + 2)
        quoted.withUnsafeMutableBytes { ($0.baseAddress! + 1).copyMemory(from: raw.baseAddress!, byteCount: raw.count) }
        return (try? JSONDecoder().decode(String.self, from: Data(quoted))) ?? String(decoding: raw, as: UTF8.self)
    }
}

/// An ``AuditFilter`` compiled to the bytes the records hold, so a record is matched by comparing its
/// fields in place; and the literal (``needle``) every matching line must contain, so a scan jumps from
/// one candidate line to the next the way `grep` does instead of looking at every line.
struct AuditMatcher {
    let filter: AuditFilter
    private let token: [UInt8]?
    private let tokenPrefix: Bool
    private let action: [UInt8]?
    private let outcome: [UInt8]?
    private let tokenHmac: [UInt8]?
    private let since: [UInt8]?
    private let until: [UInt8]?
    /// A byte string every matching line contains, or nil when only a look at every line will do.
    let needle: [UInt8]?

    init(_ filter: AuditFilter) {
        self.filter = filter
        let escaped = Self.escapedContent
        var prefix = false
        if let t = filter.token, t.hasSuffix("*") {
            prefix = true
            token = escaped(String(t.dropLast()))
        } else {
            token = filter.token.map(escaped)
        }
        tokenPrefix = prefix
        action = filter.action.map(escaped)
        outcome = filter.outcome.map(escaped)
        tokenHmac = filter.tokenHmac.map { Array($0.lowercased().utf8) }
        since = filter.since.map { Array($0.utf8) }
        until = filter.until.map { Array($0.utf8) }
        // The rarest literal first: a token_hmac names one secret, a token one name, then a caller, an action.
        if let tokenHmac {
            needle = Array(",\"token_hmac\":\"".utf8) + tokenHmac + [UInt8(ascii: "\"")]
        } else if let token, !(prefix && token.isEmpty) {
            needle = Array(",\"token\":\"".utf8) + token + (prefix ? [] : [UInt8(ascii: "\"")])
        } else if let uid = filter.uid {
            needle = Array(",\"uid\":\(uid),".utf8)
        } else if let action {
            needle = Array(",\"action\":\"".utf8) + action + [UInt8(ascii: "\"")]
        } else if let outcome {
            needle = Array(",\"outcome\":\"".utf8) + outcome + [UInt8(ascii: "\"")]
        } else {
            needle = nil
        }
    }

    /// Whether `line` holds the literal every matching line holds (always, when there is none).
    func contains(needleIn line: UnsafeRawBufferPointer) -> Bool {
        guard let needle else { return true }
        guard let base = line.baseAddress else { return false }
        return needle.withUnsafeBytes { AuditScan.memmemBytes(base, line.count, $0.baseAddress!, $0.count) != nil }
    }

    /// `s` as a record holds it between its quotes (escaped as the writer escapes).
    static func escapedContent(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        JSONText.appendQuoted(s, to: &out)
        return Array(out.dropFirst().dropLast())
    }

    /// Whether a time (the record's own format) is inside the filter's range.
    func timeInRange(_ line: UnsafeRawBufferPointer, _ r: Range<Int>) -> Bool {
        let t = UnsafeRawBufferPointer(rebasing: line[r])
        if let since, Self.compare(t, since) < 0 { return false }
        if let until, Self.compare(t, until) >= 0 { return false }
        return true
    }

    func matches(_ f: AuditFields, _ line: UnsafeRawBufferPointer) -> Bool {
        if let token {
            // A record without a token matches only `*` (as an empty name would).
            guard let r = f.token else { return tokenPrefix && token.isEmpty ? matchesRest(f, line) : false }
            if tokenPrefix ? !Self.hasPrefix(line, r, token) : !Self.equal(line, r, token) { return false }
        }
        return matchesRest(f, line)
    }

    private func matchesRest(_ f: AuditFields, _ line: UnsafeRawBufferPointer) -> Bool {
        if let uid = filter.uid, f.uid != uid { return false }
        if let action, !Self.equal(line, f.action, action) { return false }
        if let outcome, !Self.equal(line, f.outcome, outcome) { return false }
        if let tokenHmac {
            guard let r = f.tokenHmac, Self.equal(line, r, tokenHmac) else { return false }
        }
        return since == nil && until == nil ? true : timeInRange(line, f.time)
    }

    static func equal(_ line: UnsafeRawBufferPointer, _ r: Range<Int>, _ bytes: [UInt8]) -> Bool {
        r.count == bytes.count && bytes.withUnsafeBytes { memcmp(line.baseAddress! + r.lowerBound, $0.baseAddress!, r.count) == 0 }
    }

    static func hasPrefix(_ line: UnsafeRawBufferPointer, _ r: Range<Int>, _ bytes: [UInt8]) -> Bool {
        r.count >= bytes.count && (bytes.isEmpty || bytes.withUnsafeBytes { memcmp(line.baseAddress! + r.lowerBound, $0.baseAddress!, bytes.count) == 0 })
    }

    static func compare(_ a: UnsafeRawBufferPointer, _ b: [UInt8]) -> Int {
        let n = min(a.count, b.count)
        let c = n == 0 ? 0 : b.withUnsafeBytes { memcmp(a.baseAddress!, $0.baseAddress!, n) }
        return c != 0 ? Int(c) : a.count - b.count
    }
}

/// A read-only mapping of a whole file (an audit segment or its index), unmapped on deinit.
final class MappedFile {
    let bytes: UnsafeRawBufferPointer
    private let length: Int
    /// Memory of our own (a decompressed segment) rather than a mapping.
    private var owned = false

    /// Bytes held in memory, as if they were a mapped file (a decompressed segment).
    init(owning data: [UInt8]) {
        length = data.count
        owned = true
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, data.count), alignment: 16)
        data.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: data.count) } }
        bytes = UnsafeRawBufferPointer(start: p, count: data.count)
    }

    init?(path: String, sequential: Bool = false) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        length = Int(st.st_size)
        guard length > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else { return nil }
        if sequential { madvise(p, length, MADV_SEQUENTIAL) }
        bytes = UnsafeRawBufferPointer(start: p, count: length)
    }

    deinit {
        guard let p = bytes.baseAddress else { return }
        if owned { UnsafeMutableRawPointer(mutating: p).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: p), length) }
    }
}

/// Scans the bytes of a segment for the records a matcher accepts, oldest first.
enum AuditScan {
    /// Calls `body` with each matching record's fields and line, in `bytes[range]` (whole lines).
    /// Lines laid out other than the writer's way are decoded in full, so none is missed.
    static func scan(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, _ m: AuditMatcher,
                     _ body: (AuditFields?, AuditEntry?, UnsafeRawBufferPointer) -> Void) {
        guard !range.isEmpty, let base = bytes.baseAddress else { return }
        if let needle = m.needle {
            needle.withUnsafeBytes { n in
                var from = range.lowerBound
                while from < range.upperBound {
                    guard let hit = memmemBytes(base + from, range.upperBound - from, n.baseAddress!, n.count) else { return }
                    let at = base.distance(to: hit)
                    let start = lineStart(bytes, before: at, floor: range.lowerBound)
                    let end = lineEnd(bytes, from: at, limit: range.upperBound)
                    visit(bytes, start..<end, m, body)
                    from = end + 1
                }
            }
        } else {
            var start = range.lowerBound
            while start < range.upperBound {
                let end = lineEnd(bytes, from: start, limit: range.upperBound)
                visit(bytes, start..<end, m, body)
                start = end + 1
            }
        }
    }

    @inline(__always)
    static func visit(_ bytes: UnsafeRawBufferPointer, _ r: Range<Int>, _ m: AuditMatcher,
                      _ body: (AuditFields?, AuditEntry?, UnsafeRawBufferPointer) -> Void) {
        guard !r.isEmpty else { return }
        let line = UnsafeRawBufferPointer(rebasing: bytes[r])
        if let f = AuditFields.parse(line) {
            if m.matches(f, line) { body(f, nil, line) }
        } else if m.contains(needleIn: line), let e = try? JSONDecoder().decode(AuditEntry.self, from: Data(line)), m.filter.matches(e) {
            // A line in another layout (never the writer's, so never a record `verify` accepts) is read when
            // it holds the filter's literal, however it was reached: a scan and the index give the same lines.
            body(nil, e, line)
        }
    }

    static func lineEnd(_ bytes: UnsafeRawBufferPointer, from: Int, limit: Int) -> Int {
        guard from < limit, let p = memchr(bytes.baseAddress! + from, 0x0a, limit - from) else { return limit }
        return bytes.baseAddress!.distance(to: UnsafeRawPointer(p))
    }

    static func lineStart(_ bytes: UnsafeRawBufferPointer, before at: Int, floor: Int) -> Int {
        guard at > floor, let p = tv_memrchr(bytes.baseAddress! + floor, 0x0a, at - floor) else { return floor }
        return bytes.baseAddress!.distance(to: UnsafeRawPointer(p)) + 1
    }

    /// glibc's memmem (two-way search, vectorised), which Swift's Glibc module does not export.
    static func memmemBytes(_ haystack: UnsafeRawPointer, _ count: Int, _ needle: UnsafeRawPointer, _ needleCount: Int) -> UnsafeRawPointer? {
        tv_memmem(haystack, count, needle, needleCount).map { UnsafeRawPointer($0) }
    }
}
