import Foundation

/// One audit record as reviewers see it.
public struct AuditEntry: Codable, Sendable, Equatable {
    public var seq: Int64
    public var time: String
    public var channel: String
    public var action: String
    public var token: String?
    public var outcome: String
    public var reason: String?
    public var requestId: String?
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public var exe: String?
    public var tokenHmac: String?

    enum CodingKeys: String, CodingKey {
        case seq, time, channel, action, token, outcome, reason, uid, gid, pid, exe
        case requestId = "request_id", tokenHmac = "token_hmac"
    }

    /// `YYYY-MM-DD` of the record's time.
    public var day: String { String(time.prefix(10)) }
}

/// Which records a reviewer wants.
public struct AuditFilter: Sendable {
    public var token: String?
    public var uid: UInt32?
    public var action: String?
    public var outcome: String?
    public var tokenHmac: String?
    /// Inclusive lower bound, in the records' own format (`2026-11-29T10:35:22.123456Z`).
    public var since: String?
    /// Exclusive upper bound.
    public var until: String?

    public init() {}

    public func matches(_ e: AuditEntry) -> Bool {
        if let token, e.token != token && !(token.hasSuffix("*") && (e.token ?? "").hasPrefix(token.dropLast())) { return false }
        if let uid, e.uid != uid { return false }
        if let action, e.action != action { return false }
        if let outcome, e.outcome != outcome { return false }
        if let tokenHmac, e.tokenHmac != tokenHmac.lowercased() { return false }
        if let since, e.time < since { return false }
        if let until, e.time >= until { return false }
        return true
    }

    /// Turns `2026-11-01`, `2026-11-01T10:00:00Z`, or a relative `30m`, `24h`, `7d` into the records' time format.
    public static func parseTime(_ text: String, now: Date = Date()) -> String? {
        if let last = text.last, let amount = Double(text.dropLast()), "smhd".contains(last) {
            let seconds = amount * ["s": 1, "m": 60, "h": 3600, "d": 86400][String(last)]!
            return AuditRecordFormat.formatTime(micros: Int64((now.timeIntervalSince1970 - seconds) * 1_000_000))
        }
        let day = #/^\d{4}-\d{2}-\d{2}$/#
        if text.wholeMatch(of: day) != nil { return text + "T00:00:00.000000Z" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        guard let date = formatter.date(from: text) ?? plain.date(from: text) else { return nil }
        return AuditRecordFormat.formatTime(micros: Int64(date.timeIntervalSince1970 * 1_000_000))
    }
}

/// One record a query matched. Its line is valid only inside the callback it is given to.
public struct AuditMatch {
    let fields: AuditFields?
    let decoded: AuditEntry?
    /// The record exactly as stored, without its newline.
    public let line: UnsafeRawBufferPointer

    /// The record's fields, decoded (only when asked: counting and `--json` never decode).
    public var entry: AuditEntry { decoded ?? fields!.entry(line) }
}

/// What a query read, for the note that says how to make the next one faster.
public struct AuditQueryStats: Sendable {
    public var segments = 0
    /// Segments read through their index (``AuditIndex``).
    public var indexed = 0
    /// Full segments (every one but the newest) read without an index: `tokenvault audit index` builds them.
    public var unindexedFull = 0
}

/// Reads records back for review.
public enum AuditQuery {
    /// Calls `body` with every record that passes `filter`, oldest first. Lines are matched in place
    /// (``AuditMatcher``), candidate lines found the way grep finds them, and segments with an index read
    /// only where it points (plus whatever follows the indexed part). A line that is not a record is
    /// skipped (`audit verify` is the tool that reports it). Results are identical with and without indexes.
    @discardableResult
    public static func each(directory: String, filter: AuditFilter, useIndex: Bool = true,
                            _ body: (AuditMatch) -> Void) -> AuditQueryStats {
        let m = AuditMatcher(filter)
        var stats = AuditQueryStats()
        let segments = AuditSegments.list(directory)
        for (n, index) in segments.enumerated() {
            guard let file = AuditSegments.open(directory, index, sequential: true) else { continue }
            defer { withExtendedLifetime(file) {} }  // mapped until the segment is done
            let bytes = file.bytes
            stats.segments += 1
            func emit(_ f: AuditFields?, _ e: AuditEntry?, _ line: UnsafeRawBufferPointer) {
                body(AuditMatch(fields: f, decoded: e, line: line))
            }
            guard useIndex, let idx = AuditIndex(directory: directory, segment: index, segmentBytes: bytes) else {
                if n < segments.count - 1 { stats.unindexedFull += 1 }
                AuditScan.scan(bytes, range: 0..<bytes.count, m, emit)
                continue
            }
            stats.indexed += 1
            let ranges = idx.ranges(for: m)
            // Lines not laid out as records are written have no entry but field 0's: always read them.
            let unindexed = idx.unindexed
            // Lines are read in order and each at most once, whatever the index says (a damaged one may
            // list a line twice, or point into the middle of one already read).
            var readUpTo = 0
            func visit(_ offset: UInt32) {
                let at = Int(offset)
                guard at < idx.covered, at >= readUpTo else { return }
                let end = AuditScan.lineEnd(bytes, from: at, limit: idx.covered)
                readUpTo = end + 1
                AuditScan.visit(bytes, at..<end, m, emit)
            }
            if let candidates = idx.candidates(for: m) {
                var kept: [UInt32] = []
                var r = 0
                for offset in candidates {
                    while r < ranges.count, ranges[r].upperBound <= Int(offset) { r += 1 }
                    if r < ranges.count, ranges[r].contains(Int(offset)) { kept.append(offset) }
                }
                for offset in AuditIndex.mergeSorted(kept, unindexed) { visit(offset) }
            } else {
                var u = 0
                for range in ranges {
                    while u < unindexed.count, Int(unindexed[u]) < range.lowerBound { visit(unindexed[u]); u += 1 }
                    let from = max(range.lowerBound, readUpTo)
                    if from < range.upperBound { AuditScan.scan(bytes, range: from..<range.upperBound, m, emit) }
                    readUpTo = max(readUpTo, range.upperBound)
                    while u < unindexed.count, range.contains(Int(unindexed[u])) { u += 1 }
                }
                while u < unindexed.count { visit(unindexed[u]); u += 1 }
            }
            AuditScan.scan(bytes, range: idx.covered..<bytes.count, m, emit)
        }
        return stats
    }

    /// ``each(directory:filter:useIndex:_:)`` with every record decoded, and its line as text.
    public static func scan(directory: String, filter: AuditFilter, _ body: (AuditEntry, Substring) -> Void) {
        each(directory: directory, filter: filter) { match in
            body(match.entry, Substring(String(decoding: match.line, as: UTF8.self)))
        }
    }

    public static func entries(directory: String, filter: AuditFilter = AuditFilter()) -> [AuditEntry] {
        var out: [AuditEntry] = []
        each(directory: directory, filter: filter) { out.append($0.entry) }
        return out
    }
}
