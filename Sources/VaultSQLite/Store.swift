import CStoreShims
import Foundation
import GRDB
import VaultCore
#if canImport(Glibc)
import Glibc
#endif

/// Process-wide SQLite settings, made once before the first connection opens (see `CStoreShims.h`).
let sqliteConfigured: Void = { _ = tv_sqlite_disable_memstatus() }()

/// The vault's SQLite database (`vault.db`, the embedded default): WAL, `synchronous=FULL`, migrations
/// applied on open. It stores only sealed bytes and metadata; it never sees a key or a plaintext token.
public final class SQLiteStore: VaultStorage {
    public let path: String
    public var location: String { path }
    private let pool: DatabasePool
    /// Dedicated connections for the hot read of one token.
    private let readers: TokenReaders

    /// Opens `path`, creating it (mode 0600) when `create` is true, and applies pending migrations.
    public init(path: String, create: Bool) throws {
        _ = sqliteConfigured
        self.path = path
        // A vault another user owns (a home this user may not enter, or a file it may not read) is not a
        // missing vault: say so, and how to read through the daemon instead.
        if access(path, F_OK) != 0 && errno == EACCES || access(path, F_OK) == 0 && access(path, R_OK) != 0 && errno == EACCES {
            throw StoreError.permissionDenied(path: path)
        }
        if access(path, F_OK) != 0 {
            guard create else { throw StoreError.notInitialised(path: path) }
            // Create the file ourselves so it is 0600 from its first instant; SQLite gives the -wal and
            // -shm files the database file's mode.
            let fd = Glibc.open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw StoreError.io(path: path, detail: String(cString: strerror(errno)))
            }
            Glibc.close(fd)
        }
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.foreignKeysEnabled = true
        config.prepareDatabase { db in
            // Every committed write is on stable storage before the call returns.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // Freed pages are zeroed, so a deleted or replaced sealed row does not linger in the file.
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        readers = TokenReaders(path: path)
        do {
            pool = try DatabasePool(path: path, configuration: config)
            try Schema.migrator.migrate(pool)
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    /// Runs `body` in one write transaction: everything in it lands, or nothing does.
    public func write<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        do {
            return try pool.write { db in try body(SQLiteTransaction(db: db)) }
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    /// A write transaction without foreign-key enforcement, for bulk re-sealing: the caller guarantees
    /// the keys it writes exist (checking them per row triples the cost of a re-seal).
    public func writeBulk<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                // Bulk work: no per-row foreign-key checks, and a page cache of 16 MiB for its duration only
                // (the daemon's connections keep SQLite's default 2 MiB; resident memory is a target too).
                try db.execute(sql: "PRAGMA foreign_keys = OFF; PRAGMA cache_size = -16384")
                defer { try? db.execute(sql: "PRAGMA foreign_keys = ON; PRAGMA cache_size = -2000") }
                var result: T?
                try db.inTransaction {
                    result = try body(SQLiteTransaction(db: db))
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    /// One token's row, on the fast read path (see ``TokenReaders``).
    public func token(named name: String) throws -> TokenRecord? {
        try readers.token(named: name)
    }

    /// A reader for one thread that can hold a read transaction across a burst of lookups.
    public func makeHeldReader() -> any HeldTokenReader {
        readers.makeHeldReader()
    }

    /// One app's id, sealed secret and data key, on the fast read path.
    public func appSeal(named name: String) throws -> AppSeal? {
        try readers.app(named: name).map { AppSeal(appId: $0.appId, sealed: $0.sealed, dataKeyId: $0.dataKeyId) }
    }

    /// Every token name, sorted, on the fast read path.
    public func tokenNames() throws -> [String] {
        try readers.names()
    }

    /// Runs `body` on a read-only snapshot.
    public func read<T>(_ body: (any StorageTransaction) throws -> T) throws -> T {
        do {
            return try pool.read { db in try body(SQLiteTransaction(db: db)) }
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    /// Runs `body` holding an exclusive `flock` on `<vault.db>.rotation-lock`, so every process on this host
    /// that uses the file is excluded for its duration. The holder's name is written into the file for a
    /// second caller that will not wait.
    public func withRotationLock<T>(holder: String, wait: Bool, _ body: () throws -> T) throws -> T {
        let lockPath = path + ".rotation-lock"
        let fd = try openLockFile(lockPath)
        defer { Glibc.close(fd) }
        if flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
            let held = (try? String(contentsOfFile: lockPath, encoding: .utf8)).flatMap { $0.isEmpty ? nil : $0 } ?? "another process"
            throw StoreError.locked(what: "the key rotation lock of \(path)", holder: held)
        }
        _ = ftruncate(fd, 0)
        _ = holder.withCString { Glibc.write(fd, $0, strlen($0)) }
        defer { _ = ftruncate(fd, 0) }
        return try body()
    }

    /// Maps SQLite failures to errors that say what to do. Store errors pass through unchanged.
    static func translate(_ error: Error, path: String) -> Error {
        guard let e = error as? DatabaseError else { return error }
        switch e.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED: return StoreError.busy(path: path)
        case .SQLITE_FULL: return StoreError.diskFull(path: path)
        case .SQLITE_CONSTRAINT: return StoreError.rejected(store: path, detail: e.message ?? "constraint failed")
        case .SQLITE_CORRUPT, .SQLITE_NOTADB: return StoreError.damaged(path: path, detail: e.message ?? "\(e.resultCode)")
        case .SQLITE_CANTOPEN, .SQLITE_IOERR, .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_AUTH:
            return StoreError.io(path: path, detail: e.message ?? "\(e.resultCode)")
        default: return error
        }
    }
}

/// A lease on one host: an exclusive `flock` on `<vault.db>.NAME-lease`, released with its descriptor.
final class FileLease: StoreLease, @unchecked Sendable {
    private var fd: Int32
    private let lock = NSLock()

    init(fd: Int32) { self.fd = fd }

    func release() {
        lock.withLock {
            guard fd >= 0 else { return }
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit { release() }
}

extension SQLiteStore {
    /// A lock file beside `vault.db` (0600, never through a symlink), for `flock`.
    func openLockFile(_ lockPath: String) throws -> Int32 {
        let fd = Glibc.open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw StoreError.io(path: lockPath, detail: String(cString: strerror(errno))) }
        return fd
    }

    public func tryLease(_ name: String, holder: String) throws -> (any StoreLease)? {
        let fd = try openLockFile(path + ".\(name)-lease")
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            return nil
        }
        return FileLease(fd: fd)
    }
}

/// The operations of one transaction. SQL stays behind these methods.
public struct SQLiteTransaction: StorageTransaction {
    let db: Database

    // MARK: vault metadata

    public func meta(_ key: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT value FROM vault_meta WHERE key = ?", arguments: [key])
    }

    public func removeMeta(_ key: String) throws {
        try db.execute(sql: "DELETE FROM vault_meta WHERE key = ?", arguments: [key])
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO vault_meta(key, value) VALUES (?, ?)", arguments: [key, value])
    }

    // MARK: data keys

    public func currentDataKey() throws -> DataKeyRecord? {
        try DataKeyRecord.filter(Column("is_current") == true).fetchOne(db)
    }

    public func dataKey(id: Int64) throws -> DataKeyRecord? {
        try DataKeyRecord.fetchOne(db, key: id)
    }

    public func dataKeys() throws -> [DataKeyRecord] {
        try DataKeyRecord.order(Column("id")).fetchAll(db)
    }

    /// Inserts a data key; when it is current, the previous current key stops being current.
    public func insertDataKey(_ record: DataKeyRecord) throws -> DataKeyRecord {
        var record = record
        if record.isCurrent {
            try db.execute(sql: "UPDATE data_keys SET is_current = 0 WHERE is_current")
        }
        try record.insert(db)
        return record
    }

    // MARK: tokens

    public func token(named name: String) throws -> TokenRecord? {
        let statement = try db.cachedStatement(sql: "SELECT \(TokenRecord.columns) FROM tokens WHERE name = ?")
        return try Row.fetchOne(statement, arguments: [name]).map(TokenRecord.init(row:))
    }

    public func tokens() throws -> [TokenRecord] {
        try Row.fetchAll(db, sql: "SELECT \(TokenRecord.columns) FROM tokens ORDER BY name").map(TokenRecord.init(row:))
    }

    /// Stores a token. An existing token of that name is replaced only when `replace` is true; its
    /// creation time and check results are kept only if `keepMetadata` is true.
    public func saveToken(_ record: TokenRecord, replace: Bool) throws {
        let insert = try db.cachedStatement(
            sql: "INSERT INTO tokens (\(TokenRecord.columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO NOTHING")
        try insert.execute(arguments: record.arguments)
        if db.changesCount == 1 { return }
        guard replace else { throw StoreError.alreadyExists(what: "token", name: record.name) }
        try updateToken(record)
    }

    /// Rewrites an existing token's row, everything but its creation time.
    public func updateToken(_ record: TokenRecord) throws {
        let update = try db.cachedStatement(sql: """
            UPDATE tokens SET kind = ?, app = ?, sealed = ?, data_key_id = ?, token_type = ?, scopes = ?, granular_scopes = ?,
              expires_at = ?, data_access_expires_at = ?, valid = ?, checked_at = ?, last_error = ?, updated_at = ?, meta_mac = ? WHERE name = ?
            """)
        try update.execute(arguments: [record.kind, record.app, record.sealed, record.dataKeyId, record.tokenType, record.scopes,
                                       record.granularScopes, record.expiresAt, record.dataAccessExpiresAt, record.valid,
                                       record.checkedAt, record.lastError, record.updatedAt, record.metaMAC, record.name])
        guard db.changesCount == 1 else { throw StoreError.notFound(what: "token", name: record.name) }
    }

    // MARK: change events

    public func recordTokenChanges(_ changes: [TokenChange]) throws {
        guard !changes.isEmpty else { return }
        let insert = try db.cachedStatement(sql: "INSERT INTO token_changes (name, change) VALUES (?, ?)")
        for change in changes { try insert.execute(arguments: [change.name, change.kind.rawValue]) }
        try db.execute(sql: "DELETE FROM token_changes WHERE seq <= ?", arguments: [db.lastInsertedRowID - TokenChange.kept])
    }

    public func tokenChanges(after seq: Int64, limit: Int) throws -> [TokenChange] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT seq, name, change FROM token_changes WHERE seq > ? ORDER BY seq LIMIT ?"),
                         arguments: [seq, limit]).compactMap { row in
            TokenChange.Kind(rawValue: row[2]).map { TokenChange(seq: row[0], name: row[1], kind: $0) }
        }
    }

    public func lastTokenChange() throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'token_changes'") ?? 0
    }

    /// Deletes a token; false when there was none.
    public func deleteToken(named name: String) throws -> Bool {
        try TokenRecord.deleteOne(db, key: name)
    }

    // MARK: apps

    public func app(named name: String) throws -> AppRecord? {
        try AppRecord.fetchOne(db, key: name)
    }

    public func apps() throws -> [AppRecord] {
        try AppRecord.order(Column("name")).fetchAll(db)
    }

    public func deleteApp(named name: String) throws -> Bool {
        try AppRecord.deleteOne(db, key: name)
    }

    public func saveApp(_ record: AppRecord, replace: Bool) throws {
        if let existing = try app(named: record.name) {
            guard replace else { throw StoreError.alreadyExists(what: "app", name: record.name) }
            var updated = record
            updated.createdAt = existing.createdAt
            try updated.update(db)
        } else {
            try record.insert(db)
        }
    }

    /// How many tokens belong to each app.
    public func tokenCountsByApp() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT app, count(*) AS n FROM tokens WHERE app IS NOT NULL GROUP BY app") {
            out[row["app"]] = row["n"]
        }
        return out
    }
}

extension SQLiteTransaction {
    public func updateDataKey(_ record: DataKeyRecord) throws {
        try record.update(db)
    }
}

extension SQLiteTransaction {
    /// The audit log's key (wrapped), if one was made.
    public func auditKey() throws -> DataKeyRecord? {
        try DataKeyRecord.filter(Column("purpose") == "audit").fetchOne(db)
    }

    /// A SQLite store serves one host: its single checkpoint row is that host's, whatever it is called.
    public func auditCheckpoint(host: String) throws -> AuditCheckpointRecord? {
        try Row.fetchOne(db, sql: "SELECT seq, hash, mac, updated_at FROM audit_checkpoint WHERE id = 1")
            .map { AuditCheckpointRecord(row: $0, host: host) }
    }

    public func auditCheckpoints() throws -> [AuditCheckpointRecord] {
        try auditCheckpoint(host: AuditCheckpointRecord.localHost).map { [$0] } ?? []
    }

    public func saveAuditCheckpoint(_ record: AuditCheckpointRecord) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO audit_checkpoint(id, seq, hash, mac, updated_at) VALUES (1, ?, ?, ?, ?)",
                       arguments: [record.seq, record.hash, record.mac, record.updatedAt])
    }
}

// MARK: - key rotation

extension SQLiteTransaction {
    /// Every app secret not sealed under data key `current` (apps are few).
    public func pendingAppSeals(notUnder current: Int64) throws -> [PendingSeal] {
        try Row.fetchAll(db, sql: "SELECT name, sealed_secret, data_key_id FROM apps WHERE data_key_id <> ?", arguments: [current])
            .map { PendingSeal(kind: .app, name: $0[0], sealed: $0[1], dataKeyId: $0[2]) }
    }

    /// The next `limit` tokens after `after` in name order, keeping those not sealed under `current`.
    /// Returns them and the last name looked at (nil at the end), so one pass visits each row once.
    public func pendingTokenSeals(notUnder current: Int64, after: String, limit: Int) throws -> ([PendingSeal], String?) {
        let statement = try db.cachedStatement(sql: "SELECT \(TokenRecord.columns) FROM tokens WHERE name > ? ORDER BY name LIMIT ?")
        let cursor = try Row.fetchCursor(statement, arguments: [after, limit])
        var out: [PendingSeal] = []
        var last: String?
        var seen = 0
        while let row = try cursor.next() {
            seen += 1
            let record = try TokenRecord(row: row)
            last = record.name
            if record.dataKeyId != current {
                out.append(PendingSeal(kind: .token, name: record.name, sealed: record.sealed, dataKeyId: record.dataKeyId, record: record))
            }
        }
        return (out, seen < limit ? nil : last)
    }

    /// How many tokens and app secrets are not sealed under `current`.
    public func pendingSealCount(notUnder current: Int64) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT (SELECT count(*) FROM tokens WHERE data_key_id <> ?1) + (SELECT count(*) FROM apps WHERE data_key_id <> ?1)",
                         arguments: [current]) ?? 0
    }

    /// Replaces one sealed value, and for a token the metadata MAC that binds it (metadata untouched).
    public func reseal(_ kind: PendingSeal.Kind, name: String, sealed: Data, dataKeyId: Int64, metaMAC: Data?) throws {
        if kind == .token {
            try db.cachedStatement(sql: "UPDATE tokens SET sealed = ?, data_key_id = ?, meta_mac = ? WHERE name = ?")
                .execute(arguments: [sealed, dataKeyId, metaMAC, name])
        } else {
            try db.cachedStatement(sql: "UPDATE apps SET sealed_secret = ?, data_key_id = ? WHERE name = ?")
                .execute(arguments: [sealed, dataKeyId, name])
        }
    }

    /// Deletes token data keys that seal nothing any more (never the current one or the audit key).
    @discardableResult
    public func deleteUnusedDataKeys() throws -> Int {
        try db.execute(sql: """
            DELETE FROM data_keys WHERE purpose = 'tokens' AND NOT is_current
              AND id NOT IN (SELECT data_key_id FROM tokens) AND id NOT IN (SELECT data_key_id FROM apps)
            """)
        return db.changesCount
    }

    /// Per data key: how many tokens and apps it seals.
    public func sealCountsByDataKey() throws -> [Int64: Int] {
        var out: [Int64: Int] = [:]
        for row in try Row.fetchAll(db, sql: """
            SELECT data_key_id AS id, count(*) AS n FROM (SELECT data_key_id FROM tokens UNION ALL SELECT data_key_id FROM apps)
            GROUP BY data_key_id
            """) {
            out[row["id"]] = row["n"]
        }
        return out
    }
}

extension SQLiteTransaction {
    public func removeEverything() throws {
        try db.execute(sql: """
            DELETE FROM token_changes; DELETE FROM meta_checks; DELETE FROM meta_state; DELETE FROM meta_pause; DELETE FROM tokens; DELETE FROM apps; DELETE FROM data_keys; DELETE FROM notifications;
            DELETE FROM audit_checkpoint; DELETE FROM audit_chunks; DELETE FROM vault_meta
            """)
    }
}
