import Foundation
import VaultCore
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Retention: whole old segments removed, after a signed record in the log says exactly what went.
///
/// The record is an ordinary audit record (action `audit_prune`) whose `reason` reads
///
///     removed segments 1–3: seq 1–187204, first hash <64 hex>, last hash <64 hex>
///
/// It is chained, MACed and signed like every other, so it cannot be edited or inserted without the audit
/// key. `audit verify` of a log whose first segment is not 1 looks for the prune record that covers the
/// segments before it and carries on the chain from its `last hash`: the first remaining record must chain
/// from exactly that hash, so a prune record that lies about what was removed fails too.
public struct AuditPruneRecord: Sendable, Equatable {
    public var fromSegment: Int
    public var throughSegment: Int
    public var firstSeq: Int64
    public var lastSeq: Int64
    public var firstHash: String
    public var lastHash: String

    public static let action = "audit_prune"

    public var reason: String {
        "removed segments \(fromSegment)–\(throughSegment): seq \(firstSeq)–\(lastSeq), first hash \(firstHash), last hash \(lastHash)"
    }

    public init(fromSegment: Int, throughSegment: Int, firstSeq: Int64, lastSeq: Int64, firstHash: String, lastHash: String) {
        self.fromSegment = fromSegment
        self.throughSegment = throughSegment
        self.firstSeq = firstSeq
        self.lastSeq = lastSeq
        self.firstHash = firstHash
        self.lastHash = lastHash
    }

    public init?(reason: String) {
        let pattern = #/^removed segments (\d+)–(\d+): seq (\d+)–(\d+), first hash ([0-9a-f]{64}), last hash ([0-9a-f]{64})$/#
        guard let m = reason.wholeMatch(of: pattern), let a = Int(m.1), let b = Int(m.2), let f = Int64(m.3), let l = Int64(m.4),
              a >= 1, a <= b, f >= 1, f <= l else { return nil }
        self.init(fromSegment: a, throughSegment: b, firstSeq: f, lastSeq: l, firstHash: String(m.5), lastHash: String(m.6))
    }
}

public enum AuditPrune {
    public struct PruneError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The first and last record of a segment: seq, chain hash and time.
    struct Ends {
        var first: (seq: Int64, hash: [UInt8])
        var last: (seq: Int64, hash: [UInt8], time: String)
    }

    static func ends(_ directory: String, _ index: Int) -> Ends? {
        guard let file = AuditSegments.open(directory, index) else { return nil }
        return withExtendedLifetime(file) {
            let b = file.bytes
            guard b.count > 0 else { return nil }
            let firstEnd = AuditScan.lineEnd(b, from: 0, limit: b.count)
            var lastEnd = b.count
            if b[b.count - 1] == 0x0a { lastEnd -= 1 }
            let lastStart = AuditScan.lineStart(b, before: lastEnd, floor: 0)
            let firstLine = UnsafeRawBufferPointer(rebasing: b[0..<firstEnd])
            let lastLine = UnsafeRawBufferPointer(rebasing: b[lastStart..<lastEnd])
            guard let first = AuditRecordFormat.parse(firstLine), let last = AuditRecordFormat.parse(lastLine),
                  let fields = AuditFields.parse(lastLine) else { return nil }
            let time = String(decoding: UnsafeRawBufferPointer(rebasing: lastLine[fields.time]), as: UTF8.self)
            return Ends(first: (first.seq, first.hash.bytes), last: (last.seq, last.hash.bytes, time))
        }
    }

    /// The time of a segment's last record (nil when it does not end with one).
    public static func lastTime(directory: String, segment: Int) -> String? {
        ends(directory, segment)?.last.time
    }

    /// What `prune --before` would remove: the oldest finished segments, in a row from the first one
    /// present, each of whose records is older than `before` (the newest segment is never removed).
    /// Nil when none qualifies.
    public static func plan(directory: String, before: String) throws -> AuditPruneRecord? {
        let segments = AuditSegments.list(directory)
        var chosen: [(index: Int, ends: Ends)] = []
        for (n, index) in segments.enumerated() where n < segments.count - 1 {
            guard chosen.isEmpty || chosen.last!.index == index - 1 else { break }
            guard let e = ends(directory, index) else {
                throw PruneError(description: "\(AuditSegments.file(directory, index)) does not begin and end with a record; run `tokenvault audit verify`")
            }
            guard e.last.time < before else { break }
            chosen.append((index, e))
        }
        guard let first = chosen.first, let last = chosen.last else { return nil }
        return AuditPruneRecord(fromSegment: first.index, throughSegment: last.index, firstSeq: first.ends.first.seq,
                                lastSeq: last.ends.last.seq, firstHash: hexString(first.ends.first.hash), lastHash: hexString(last.ends.last.hash))
    }

    /// Writes the prune record through `log` (durable, and signed: it is written alone) and then removes
    /// the segments it names, with their indexes. A crash before the record is durable leaves the log as it
    /// was; a crash after it leaves some of the segments behind, which `verify` passes over (the record
    /// vouches for them) and the next `prune` removes (``finishInterrupted(directory:)``).
    public static func prune(_ record: AuditPruneRecord, directory: String, log: AuditLog, actor: AuditActor) throws {
        let event = AuditEvent(action: AuditPruneRecord.action, channel: .cli, actor: actor, outcome: .granted, reason: record.reason)
        try log.appendAndWait(event, secret: nil)
        try remove(record.fromSegment...record.throughSegment, directory: directory)
    }

    static func remove(_ segments: ClosedRange<Int>, directory: String) throws {
        for index in segments {
            for path in [AuditSegments.path(directory, index), AuditSegments.compressedPath(directory, index), AuditIndex.path(directory, index)] where unlink(path) != 0 && errno != ENOENT {
                throw PruneError(description: "cannot remove \(path): \(String(cString: strerror(errno)))")
            }
        }
        AuditSegments.syncDirectory(directory)
    }

    /// A prune whose record was written but whose removals were cut short (a crash, a full disk): the
    /// record, and the segments it names that are still present.
    public static func interrupted(directory: String) -> (record: AuditPruneRecord, left: ClosedRange<Int>)? {
        guard let first = AuditSegments.list(directory).first, first > 1,
              let r = covering(directory: directory, firstSegment: first), r.throughSegment >= first else { return nil }
        return (r, first...r.throughSegment)
    }

    /// Removes what an interrupted prune left behind; nil when there was nothing to finish. The record
    /// already in the log says these segments went, so no new one is written.
    @discardableResult
    public static func finishInterrupted(directory: String) throws -> AuditPruneRecord? {
        guard let (record, left) = interrupted(directory: directory) else { return nil }
        try remove(left, directory: directory)
        return record
    }

    /// The prune record that accounts for the segments before `firstSegment`: the newest `audit_prune`
    /// record in the log that removed the segments up to it, or that was removing them when it was cut
    /// short (it names `firstSegment` itself, or later ones, among those it removes). Nil when there is none.
    static func covering(directory: String, firstSegment: Int) -> AuditPruneRecord? {
        var filter = AuditFilter()
        filter.action = AuditPruneRecord.action
        var found: AuditPruneRecord?
        AuditQuery.each(directory: directory, filter: filter, useIndex: false) { match in
            if let reason = match.entry.reason, let r = AuditPruneRecord(reason: reason),
               r.fromSegment < firstSegment, firstSegment <= r.throughSegment + 1 { found = r }
        }
        return found
    }
}
