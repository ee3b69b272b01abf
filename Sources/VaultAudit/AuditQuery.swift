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

/// Reads records back for review.
public enum AuditQuery {
    /// Calls `body` with every record that passes `filter`, oldest first, and its raw line.
    /// A line that is not a record is skipped (`audit verify` is the tool that reports it).
    public static func scan(directory: String, filter: AuditFilter, _ body: (AuditEntry, Substring) throws -> Void) rethrows {
        let decoder = JSONDecoder()
        for index in AuditSegments.list(directory) {
            guard let data = FileManager.default.contents(atPath: AuditSegments.path(directory, index)) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n") {
                guard let entry = try? decoder.decode(AuditEntry.self, from: Data(line.utf8)) else { continue }
                if filter.matches(entry) { try body(entry, line) }
            }
        }
    }

    public static func entries(directory: String, filter: AuditFilter = AuditFilter()) -> [AuditEntry] {
        var out: [AuditEntry] = []
        scan(directory: directory, filter: filter) { e, _ in out.append(e) }
        return out
    }
}
