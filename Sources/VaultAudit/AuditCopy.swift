import Foundation
import Synchronization
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// The store's copy of every host's audit chain, behind an API this module owns (each store backend's
/// transaction implements it). Each host's chain stays local and durable before disclosure; the copy is
/// shipped after, so `audit query`, `report` and `verify` can cover every host from the store alone.
public protocol AuditCopyTransaction {
    /// The highest seq of `host` the store holds (0 when none).
    func lastCopiedSeq(host: String) throws -> Int64
    /// Adds records of `host`, in seq order; a (host, seq) the store already holds is left as it is.
    func insertAuditRecords(host: String, _ records: [AuditCopyRecord]) throws
    /// Up to `limit` records of `host` after `seq`, in seq order.
    func auditRecords(host: String, after seq: Int64, limit: Int) throws -> [AuditCopyRecord]
    /// Every host with records in the store, sorted.
    func auditHosts() throws -> [String]
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

    /// Ships what the store lacks, up to `maxRecords`; returns how many records were shipped.
    @discardableResult
    public func shipOnce(maxRecords: Int = 20_000, batch: Int = 1_000) throws -> Int {
        let host = vault.hostID
        var shipped = try vault.readAuditCopy { try $0.lastCopiedSeq(host: host) }
        var pending: [AuditCopyRecord] = []
        var total = 0
        func flush() throws {
            guard !pending.isEmpty else { return }
            let records = pending
            try vault.auditCopy { try $0.insertAuditRecords(host: host, records) }
            total += records.count
            pending.removeAll(keepingCapacity: true)
        }
        try scan(after: shipped) { record, segment, offset in
            guard record.seq == shipped + 1 else {
                throw Gap(description: "the local audit log jumps from seq \(shipped) to \(record.seq): records are missing; run `tokenvault audit verify`")
            }
            shipped = record.seq
            pending.append(record)
            cursor.withLock { $0 = (segment, offset, record.seq) }
            if pending.count >= batch { try flush() }
            return total + pending.count < maxRecords
        }
        try flush()
        return total
    }

    /// Calls `body` with each complete record after `seq`, its segment and the offset just past its line.
    private func scan(after seq: Int64, _ body: (AuditCopyRecord, Int, Int) throws -> Bool) throws {
        var start = cursor.withLock { c -> (segment: Int, offset: Int)? in
            guard let c, c.seq == seq else { return nil }
            return (c.segment, c.offset)
        }
        for segment in AuditSegments.list(directory) {
            if let s = start, segment < s.segment { continue }
            guard let data = FileManager.default.contents(atPath: AuditSegments.path(directory, segment)) else { continue }
            let bytes = [UInt8](data)
            var position = 0
            if let s = start, s.segment == segment { position = min(s.offset, bytes.count) }
            start = nil
            while position < bytes.count {
                guard let nl = bytes[position...].firstIndex(of: 0x0a) else { break }  // a partial last line waits
                let line = bytes[position..<nl]
                position = nl + 1
                guard let parsed = AuditRecordFormat.parse(line), parsed.seq > seq else { continue }
                let record = AuditCopyRecord(seq: parsed.seq, line: String(decoding: line, as: UTF8.self))
                guard try body(record, segment, position) else { return }
            }
        }
    }

    /// How many of this host's records the store lacks (the shipping lag).
    public func lag() throws -> Int64 {
        let copied = try vault.readAuditCopy { try $0.lastCopiedSeq(host: vault.hostID) }
        var last: Int64 = copied
        try scan(after: copied) { r, _, _ in last = r.seq; return true }
        return last - copied
    }
}

/// Reading the store's copies: every host's records, for query, report and verify.
public enum AuditStoreCopy {
    /// The hosts the store holds records of.
    public static func hosts(_ vault: Vault) throws -> [String] {
        try vault.readAuditCopy { try $0.auditHosts() }
    }

    /// Calls `body` with each record of `host`, in seq order, fetched `batch` at a time.
    public static func records(_ vault: Vault, host: String, batch: Int = 5_000, _ body: (AuditCopyRecord) throws -> Void) throws {
        var after: Int64 = 0
        while true {
            let page = try vault.readAuditCopy { try $0.auditRecords(host: host, after: after, limit: batch) }
            for r in page { try body(r) }
            guard let last = page.last, page.count == batch else { return }
            after = last.seq
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

    /// `host`'s checkpoint in the store.
    public static func checkpoint(_ vault: Vault, host: String) throws -> AuditCheckpointRecord? {
        try vault.auditCheckpoints().first { $0.host == host }
    }
}

/// This host's local log, record by record (complete lines only), for copying it elsewhere.
public enum AuditLocalLog {
    public static func records(in directory: String, _ body: (AuditCopyRecord) throws -> Void) throws {
        for segment in AuditSegments.list(directory) {
            guard let data = FileManager.default.contents(atPath: AuditSegments.path(directory, segment)) else { continue }
            let bytes = [UInt8](data)
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
