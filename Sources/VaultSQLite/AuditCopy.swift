import GRDB
import VaultAudit
import VaultCore

/// The store's copy of audit chains in SQLite: the `audit_chunks` table.
extension SQLiteTransaction: AuditCopyTransaction {
    /// A SQLite write transaction already excludes every other writer.
    public func lockAuditCopy(host: String) throws {}

    public func lastCopiedSeq(host: String) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT COALESCE(max(last_seq), 0) FROM audit_chunks WHERE host = ?", arguments: [host]) ?? 0
    }

    public func insertAuditChunk(host: String, _ chunk: AuditCopyChunk) throws {
        try db.execute(sql: "INSERT INTO audit_chunks(host, first_seq, last_seq, lines) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       arguments: [host, chunk.firstSeq, chunk.lastSeq, chunk.lines])
    }

    public func auditChunks(host: String, after seq: Int64, limit: Int) throws -> [AuditCopyChunk] {
        var out: [AuditCopyChunk] = [], total = 0
        for row in try Row.fetchAll(db, sql: "SELECT first_seq, last_seq, lines FROM audit_chunks WHERE host = ? AND last_seq > ? ORDER BY first_seq LIMIT 64",
                                    arguments: [host, seq]) {
            let first: Int64 = row[0], last: Int64 = row[1]
            out.append(AuditCopyChunk(firstSeq: first, count: Int(last - first + 1), lines: row[2]))
            total += Int(last - first + 1)
            if total >= limit { break }
        }
        return out
    }

    public func auditHosts() throws -> [String] {
        try String.fetchAll(db, sql: "SELECT DISTINCT host FROM audit_chunks ORDER BY host")
    }
}
