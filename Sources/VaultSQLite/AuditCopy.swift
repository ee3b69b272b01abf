import GRDB
import VaultAudit
import VaultCore

/// The store's copy of audit chains in SQLite: the `audit_records` table.
extension SQLiteTransaction: AuditCopyTransaction {
    public func lastCopiedSeq(host: String) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT COALESCE(max(seq), 0) FROM audit_records WHERE host = ?", arguments: [host]) ?? 0
    }

    public func insertAuditRecords(host: String, _ records: [AuditCopyRecord]) throws {
        let insert = try db.cachedStatement(sql: "INSERT INTO audit_records(host, seq, line) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
        for r in records { try insert.execute(arguments: [host, r.seq, r.line]) }
    }

    public func auditRecords(host: String, after seq: Int64, limit: Int) throws -> [AuditCopyRecord] {
        try Row.fetchAll(db, sql: "SELECT seq, line FROM audit_records WHERE host = ? AND seq > ? ORDER BY seq LIMIT ?",
                         arguments: [host, seq, limit]).map { AuditCopyRecord(seq: $0[0], line: $0[1]) }
    }

    public func auditHosts() throws -> [String] {
        try String.fetchAll(db, sql: "SELECT DISTINCT host FROM audit_records ORDER BY host")
    }
}
