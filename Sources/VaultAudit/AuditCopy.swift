import Foundation
import Synchronization
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The store's copy of every host's audit chain, behind an API this module owns (each store backend's
/// transaction implements it). Each host's chain stays local and durable before disclosure; the copy is
/// shipped after, so `audit query`, `report` and `verify` can cover every host from the store alone.
///
/// The copy is kept in chunks: consecutive records of one host, as its log holds them, one row a chunk
/// (a daemon ships one chunk a second, so the database does one insert a second, not one a record).
public protocol AuditCopyTransaction {
    /// Serialises copies of `host` until the transaction ends (shippers of one host take turns).
    func lockAuditCopy(host: String) throws
    /// The highest seq of `host` the store holds (0 when none).
    func lastCopiedSeq(host: String) throws -> Int64
    /// Stores a chunk of `host` (the caller has locked the host and trimmed it to follow the last seq).
    func insertAuditChunk(host: String, _ chunk: AuditCopyChunk) throws
    /// Chunks of `host` holding records after `seq`, in order, until about `limit` records.
    func auditChunks(host: String, after seq: Int64, limit: Int) throws -> [AuditCopyChunk]
    /// Every host with records in the store, sorted.
    func auditHosts() throws -> [String]
}

/// Consecutive records of one host: `firstSeq` … `firstSeq + count - 1`, each line as the host's log holds
/// it, each ending in a newline.
public struct AuditCopyChunk: Sendable, Equatable {
    public let firstSeq: Int64
    public let count: Int
    public let lines: String

    public init(firstSeq: Int64, count: Int, lines: String) {
        self.firstSeq = firstSeq
        self.count = count
        self.lines = lines
    }

    public var lastSeq: Int64 { firstSeq + Int64(count) - 1 }

    /// The records, one by one.
    public var records: [AuditCopyRecord] {
        lines.split(separator: "\n", omittingEmptySubsequences: true).enumerated().map {
            AuditCopyRecord(seq: firstSeq + Int64($0.offset), line: String($0.element))
        }
    }

    /// Records (in seq order) as chunks of at most `size` consecutive seqs: a jump starts a new chunk.
    public static func chunks(_ records: [AuditCopyRecord], size: Int = 5_000) -> [AuditCopyChunk] {
        var out: [AuditCopyChunk] = []
        var run: [AuditCopyRecord] = []
        func close() {
            if let first = run.first { out.append(AuditCopyChunk(firstSeq: first.seq, count: run.count, lines: run.map { $0.line + "\n" }.joined())) }
            run.removeAll(keepingCapacity: true)
        }
        for r in records {
            if let last = run.last, r.seq != last.seq + 1 || run.count >= size { close() }
            run.append(r)
        }
        close()
        return out
    }
}

/// One record as shipped: its seq and its line exactly as the host's log holds it (no newline).
public struct AuditCopyRecord: Sendable, Equatable {
    public let seq: Int64
    public let line: String

    public init(seq: Int64, line: String) {
        self.seq = seq
        self.line = line
    }
}

extension Vault {
    func auditCopy<T>(_ body: (any AuditCopyTransaction) throws -> T) throws -> T {
        try change { try body(try $0.state((any AuditCopyTransaction).self)) }
    }

    func readAuditCopy<T>(_ body: (any AuditCopyTransaction) throws -> T) throws -> T {
        try inspect { try body(try $0.state((any AuditCopyTransaction).self)) }
    }

    /// The last seq of this host's chain the shared store holds a copy of (0 for none).
    public func auditShippedThrough() throws -> Int64 {
        try readAuditCopy { try $0.lastCopiedSeq(host: hostID) }
    }
}

/// Ships this host's local chain to the store: every record after the last one the store holds, in
/// order, in batches, each batch one transaction. Idempotent by (host, seq), so a crash or an outage
/// mid-batch resumes with no gap and no duplicate; it asks the store where to resume each time.
public final class AuditShipper: Sendable {
    public struct Gap: Error, CustomStringConvertible {
        public let description: String
    }

    let vault: Vault
    let directory: String
    /// Where the last pass stopped (segment, byte offset, seq), so a pass does not re-read the log.
    private let cursor = Mutex<(segment: Int, offset: Int, seq: Int64)?>(nil)

    public init(vault: Vault, directory: String? = nil) {
        self.vault = vault
        self.directory = directory ?? vault.home.auditDirectory
    }

    /// Ships what the store lacks, up to `maxRecords`, as one chunk per transaction; returns how many
    /// records were shipped. Only records this host's checkpoint vouches for are shipped: they are durable
    /// (a line written but not yet synced may still be cut and its seq reused).
    @discardableResult
    public func shipOnce(maxRecords: Int = 20_000) throws -> Int {
        let host = vault.hostID
        let durable = try vault.auditCheckpoint()?.seq ?? 0
        let shipped = try vault.readAuditCopy { try $0.lastCopiedSeq(host: host) }
        guard durable > shipped else { return 0 }
        guard let (chunk, segment, offset) = try nextChunk(after: shipped, max: min(maxRecords, Int(durable - shipped))) else { return 0 }
        try vault.auditCopy { tx in
            try tx.lockAuditCopy(host: host)
            // Another shipper of this host may have gone first: keep only what follows the store's end.
            let last = try tx.lastCopiedSeq(host: host)
            guard last < chunk.lastSeq else { return }
            guard last >= chunk.firstSeq - 1 else {
                throw Gap(description: "the store's copy of host \(host) ends at seq \(last), this log's next record is \(chunk.firstSeq)")
            }
            let drop = Int(last - (chunk.firstSeq - 1))
            let kept = drop == 0 ? chunk
                : AuditCopyChunk(firstSeq: last + 1, count: chunk.count - drop,
                                 lines: chunk.lines.split(separator: "\n").dropFirst(drop).map { $0 + "\n" }.joined())
            try tx.insertAuditChunk(host: host, kept)
        }
        cursor.withLock { $0 = (segment, offset, chunk.lastSeq) }
        return chunk.count
    }

    /// The records after `seq` as one chunk (complete lines only, from one segment), and where it ends.
    /// Only the first and last line are parsed: seqs run on within a segment (the verifier checks each one).
    private func nextChunk(after seq: Int64, max: Int) throws -> (AuditCopyChunk, Int, Int)? {
        let start = cursor.withLock { c -> (segment: Int, offset: Int)? in
            guard let c, c.seq == seq else { return nil }
            return (c.segment, c.offset)
        }
        for segment in AuditSegments.list(directory) {
            if let s = start, segment < s.segment { continue }
            let base = start.flatMap { $0.segment == segment ? $0.offset : nil } ?? 0
            let bytes: [UInt8]
            if AuditSegments.isCompressed(directory, segment) {
                guard let file = AuditSegments.open(directory, segment) else { continue }
                bytes = withExtendedLifetime(file) { Array(file.bytes.dropFirst(base)) }
            } else {
                guard let handle = FileHandle(forReadingAtPath: AuditSegments.path(directory, segment)) else { continue }
                defer { try? handle.close() }
                // Only the part after the cursor is read: a busy segment grows by megabytes a second.
                guard (try? handle.seek(toOffset: UInt64(base))) != nil, let data = try? handle.readToEnd() else { continue }
                bytes = [UInt8](data)
            }
            var lineStarts: [Int] = []
            var position = 0, end = 0, firstSeq: Int64?
            while position < bytes.count, lineStarts.count < max {
                guard let nl = bytes[position...].firstIndex(of: 0x0a) else { break }  // a partial last line waits
                if firstSeq == nil {
                    // Skip what the store already holds (a log read from its start).
                    guard let parsed = AuditRecordFormat.parse(bytes[position..<nl]) else { position = nl + 1; continue }
                    if parsed.seq <= seq { position = nl + 1; continue }
                    guard parsed.seq == seq + 1 else {
                        throw Gap(description: "the local audit log jumps from seq \(seq) to \(parsed.seq): records are missing; run `tokenvault audit verify`")
                    }
                    firstSeq = parsed.seq
                }
                lineStarts.append(position)
                position = nl + 1
                end = position
            }
            guard let firstSeq, let lastStart = lineStarts.last else { continue }
            let lastLine = bytes[lastStart..<(end - 1)]
            guard let last = AuditRecordFormat.parse(lastLine), last.seq == firstSeq + Int64(lineStarts.count) - 1 else {
                throw Gap(description: "the local audit log's seqs do not run on in \(AuditSegments.path(directory, segment)); run `tokenvault audit verify`")
            }
            let text = String(decoding: bytes[lineStarts[0]..<end], as: UTF8.self)
            return (AuditCopyChunk(firstSeq: firstSeq, count: lineStarts.count, lines: text), segment, base + end)
        }
        return nil
    }
}

/// Reading the store's copies: every host's records, for query, report and verify.
public enum AuditStoreCopy {
    /// The hosts the store holds records of.
    public static func hosts(_ vault: Vault) throws -> [String] {
        try vault.readAuditCopy { try $0.auditHosts() }
    }

    /// Calls `body` with each record of `host`, in seq order, fetched `batch` at a time.
    public static func records(_ vault: Vault, host: String, batch: Int = 20_000, _ body: (AuditCopyRecord) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let page = try vault.readAuditCopy { try $0.auditChunks(host: host, after: after, limit: batch) }
            for chunk in page {
                for r in chunk.records where r.seq > after { try body(r) }
            }
            guard let last = page.last?.lastSeq, last > after else { return }
            after = last
        }
    }

    /// Writes `host`'s copy into `directory` as one segment, so the log verifier checks it exactly as it
    /// checks a local log. Returns the last seq written.
    @discardableResult
    public static func materialise(_ vault: Vault, host: String, into directory: String) throws -> Int64 {
        let path = AuditSegments.path(directory, 1)
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw VaultError.io(path: path, why: "cannot write the copy for verification")
        }
        defer { try? handle.close() }
        var last: Int64 = 0
        var buffer = Data()
        try records(vault, host: host) { r in
            buffer.append(contentsOf: Array(r.line.utf8))
            buffer.append(0x0a)
            last = r.seq
            if buffer.count > 1 << 20 {
                handle.write(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        handle.write(buffer)
        return last
    }
}

/// This host's local log, record by record (complete lines only), for copying it elsewhere.
public enum AuditLocalLog {
    public static func records(in directory: String, _ body: (AuditCopyRecord) throws -> Void) throws {
        for segment in AuditSegments.list(directory) {
            guard let file = AuditSegments.open(directory, segment) else { continue }
            let bytes = withExtendedLifetime(file) { [UInt8](file.bytes) }
            var position = 0
            while position < bytes.count, let nl = bytes[position...].firstIndex(of: 0x0a) {
                let line = bytes[position..<nl]
                position = nl + 1
                if let parsed = AuditRecordFormat.parse(line) {
                    try body(AuditCopyRecord(seq: parsed.seq, line: String(decoding: line, as: UTF8.self)))
                }
            }
        }
    }
}
