import Foundation
import GRDBSQLite
import Synchronization
import VaultCore

/// The daemon's read path: plain SQLite connections, each with its `SELECT … WHERE name = ?` prepared
/// once, handed out from a small free list so each event-loop thread reuses one.
///
/// GRDB's pool read costs a semaphore, a dispatch hop onto the connection's queue and a schema-version
/// query per call — most of a token read's CPU. These connections are read-only; each statement runs in
/// its own implicit read transaction on the WAL, so it sees the latest commit of any writer.
public final class TokenReaders: Sendable {
    private let path: String
    private let free = Mutex<[Reader]>([])

    public init(path: String) {
        self.path = path
    }

    /// Looks a token up on a pooled connection.
    public func token(named name: String) throws -> TokenRecord? {
        try withReader { try $0.token(named: name) }
    }

    /// An app's id, sealed secret and data key.
    public func app(named name: String) throws -> (appId: String, sealed: Data, dataKeyId: Int64)? {
        try withReader { try $0.app(named: name) }
    }

    /// Every token name, sorted.
    public func names() throws -> [String] {
        try withReader { try $0.names() }
    }

    /// A reader for one thread alone (an event loop) that keeps one read transaction open across the
    /// lookups of a burst, until ``HeldReader/release()``: SQLite's shared lock is then taken and dropped
    /// once per burst instead of once per lookup (two `fcntl`s and an `fstat` each time).
    public func makeHeldReader() -> HeldReader {
        HeldReader(path: path)
    }

    private func withReader<T>(_ body: (Reader) throws -> T) throws -> T {
        let reader = try free.withLock { $0.popLast() } ?? Reader(path: path)
        defer { free.withLock { $0.append(reader) } }
        return try body(reader)
    }

    /// See ``TokenReaders/makeHeldReader()``. Reads see the database as of the first lookup since the last
    /// `release()`; the owner must release at the end of each burst (the daemon: once per event-loop tick).
    ///
    /// It also remembers the rows it has read more than once (sealed values and metadata, never plaintext;
    /// see ``SecondSight``) for as long as the database is unchanged: each burst begins by reading SQLite's `data_version`, which moves on every
    /// commit by any connection or process, and a moved version drops every remembered row. A hot token is
    /// then one dictionary lookup instead of a statement step and fifteen column reads.
    public final class HeldReader: HeldTokenReader, @unchecked Sendable {
        /// The most rows remembered; past it the memory starts afresh.
        public static let maxRemembered = 4_096

        private let path: String
        private var reader: Reader?
        private var begin: OpaquePointer?
        private var commit: OpaquePointer?
        private var dataVersion: OpaquePointer?
        private var rows: [String: TokenRecord] = [:]
        /// Which rows are worth remembering: those asked for a second time (kept across commits: it holds
        /// name hashes only, so a hot row is remembered again at its first read after a commit).
        private var admission = SecondSight()
        /// Remembered rows whose metadata the vault has checked (see ``markChecked(_:)``); forgotten with them.
        private var checked: Set<String> = []
        private var rowsVersion: Int64 = -1
        public private(set) var isHolding = false

        init(path: String) {
            self.path = path
        }

        deinit {
            release()
            sqlite3_finalize(begin)
            sqlite3_finalize(commit)
            sqlite3_finalize(dataVersion)
        }

        /// Rows remembered now (for tests).
        public var rememberedCount: Int { rows.count }

        /// Whether the remembered row of `name` was checked since it was read from the database.
        public func isChecked(_ name: String) -> Bool { checked.contains(name) }

        /// Notes that the vault checked the remembered row of `name` (its metadata MAC): until any commit
        /// makes the reader forget its rows, the same bytes need no second check.
        public func markChecked(_ name: String) {
            if rows[name] != nil { checked.insert(name) }
        }

        public func token(named name: String) throws -> TokenRecord? {
            let r = try reader ?? open()
            if !isHolding { beginBurst() }
            if let row = rows[name] { return row }
            do {
                let row = try r.token(named: name)
                if let row, isHolding, admission.seenBefore(name) {
                    if rows.count >= Self.maxRemembered {
                        rows.removeAll(keepingCapacity: true)
                        checked.removeAll(keepingCapacity: true)
                    }
                    rows[name] = row
                }
                return row
            } catch {
                release()  // an error ends the burst: the next lookup starts afresh
                throw error
            }
        }

        private func open() throws -> Reader {
            let r = try Reader(path: path)
            reader = r
            sqlite3_prepare_v3(r.db, "BEGIN", -1, UInt32(SQLITE_PREPARE_PERSISTENT), &begin, nil)
            sqlite3_prepare_v3(r.db, "COMMIT", -1, UInt32(SQLITE_PREPARE_PERSISTENT), &commit, nil)
            sqlite3_prepare_v3(r.db, "PRAGMA data_version", -1, UInt32(SQLITE_PREPARE_PERSISTENT), &dataVersion, nil)
            return r
        }

        /// Opens the read transaction and drops the remembered rows if anything was committed since they
        /// were read. Without a transaction or a version, nothing is remembered and every lookup reads.
        private func beginBurst() {
            guard let begin, let dataVersion else { return forget() }
            let rc = sqlite3_step(begin)
            sqlite3_reset(begin)
            guard rc == SQLITE_DONE else { return forget() }
            isHolding = true
            let version: Int64? = sqlite3_step(dataVersion) == SQLITE_ROW ? sqlite3_column_int64(dataVersion, 0) : nil
            sqlite3_reset(dataVersion)  // before any COMMIT: no statement may still be running
            guard let version else {
                release()
                return forget()
            }
            if version != rowsVersion {
                rows.removeAll(keepingCapacity: true)
                checked.removeAll(keepingCapacity: true)
                rowsVersion = version
            }
        }

        private func forget() {
            rows.removeAll(keepingCapacity: true)
            checked.removeAll(keepingCapacity: true)
            rowsVersion = -1
        }

        /// Ends the read transaction, if one is open.
        public func release() {
            guard isHolding, let commit else { return }
            sqlite3_step(commit)
            sqlite3_reset(commit)
            isHolding = false
        }
    }

    final class Reader: @unchecked Sendable {
        fileprivate var db: OpaquePointer?
        private var statement: OpaquePointer?
        private let path: String

        init(path: String) throws {
            self.path = path
            guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nil) == SQLITE_OK else {
                let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
                sqlite3_close(db)
                throw StoreError.io(path: path, detail: message)
            }
            sqlite3_busy_timeout(db, 5000)
            // Reads of a large vault (a million tokens, read in no order) go through the OS's page cache
            // by memory map instead of a read() into SQLite's own cache per page: read-only, so a torn
            // write cannot reach the file through it. Up to 2 GiB (SQLite's own ceiling on Linux): a
            // million tokens make a file of about 370 MB, and pages past the map's end are read() again.
            sqlite3_exec(db, "PRAGMA mmap_size = 2147418112", nil, nil, nil)
            let sql = "SELECT \(TokenRecord.columns) FROM tokens WHERE name = ?"
            guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK else {
                let message = String(cString: sqlite3_errmsg(db))
                sqlite3_close(db)
                throw StoreError.io(path: path, detail: message)
            }
        }

        private var appStatement: OpaquePointer?
        private var namesStatement: OpaquePointer?

        deinit {
            sqlite3_finalize(statement)
            sqlite3_finalize(appStatement)
            sqlite3_finalize(namesStatement)
            sqlite3_close(db)
        }

        private func prepared(_ slot: inout OpaquePointer?, _ sql: String) throws -> OpaquePointer? {
            if slot == nil, sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &slot, nil) != SQLITE_OK {
                throw StoreError.io(path: path, detail: String(cString: sqlite3_errmsg(db)))
            }
            return slot
        }

        private func check(_ code: Int32) throws {
            if code == SQLITE_BUSY || code == SQLITE_LOCKED { throw StoreError.busy(path: path) }
            if code == SQLITE_CORRUPT || code == SQLITE_NOTADB { throw StoreError.damaged(path: path, detail: String(cString: sqlite3_errmsg(db))) }
            throw StoreError.io(path: path, detail: String(cString: sqlite3_errmsg(db)))
        }

        func app(named name: String) throws -> (appId: String, sealed: Data, dataKeyId: Int64)? {
            let s = try prepared(&appStatement, "SELECT app_id, sealed_secret, data_key_id FROM apps WHERE name = ?")
            defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
            _ = bindText(s, 1, name)
            let rc = sqlite3_step(s)
            if rc == SQLITE_DONE { return nil }
            guard rc == SQLITE_ROW else { try check(rc); return nil }
            let n = Int(sqlite3_column_bytes(s, 1))
            return (String(cString: sqlite3_column_text(s, 0)), n > 0 ? Data(bytes: sqlite3_column_blob(s, 1), count: n) : Data(),
                    sqlite3_column_int64(s, 2))
        }

        func names() throws -> [String] {
            let s = try prepared(&namesStatement, "SELECT name FROM tokens ORDER BY name")
            defer { sqlite3_reset(s) }
            var out: [String] = []
            while true {
                let rc = sqlite3_step(s)
                if rc == SQLITE_DONE { return out }
                guard rc == SQLITE_ROW else { try check(rc); return out }
                out.append(String(cString: sqlite3_column_text(s, 0)))
            }
        }

        func token(named name: String) throws -> TokenRecord? {
            let s = statement
            // The name's own bytes are bound without a copy (SQLITE_STATIC), for as long as the row is read:
            // the statement is reset and unbound before the bytes go.
            var key = name
            return try key.withUTF8 { utf8 in
                try utf8.withMemoryRebound(to: CChar.self) { chars in
                    defer {
                        sqlite3_reset(s)
                        sqlite3_clear_bindings(s)
                    }
                    // An empty string still needs a valid pointer: SQLite reads a NULL pointer as SQL NULL.
                    let bound = sqlite3_bind_text(s, 1, chars.baseAddress ?? emptyText, Int32(chars.count), nil)
                    guard bound == SQLITE_OK else { throw StoreError.io(path: path, detail: String(cString: sqlite3_errmsg(db))) }
                    let rc = sqlite3_step(s)
                    if rc == SQLITE_DONE { return nil }
                    guard rc == SQLITE_ROW else { try check(rc); return nil }
                    return Self.row(s, name: name)
                }
            }
        }

        /// The row the statement stands on, as a record (columns in ``TokenRecord/columns`` order).
        private static func row(_ s: OpaquePointer?, name: String) -> TokenRecord {
            func text(_ i: Int32) -> String? {
                sqlite3_column_type(s, i) == SQLITE_NULL ? nil : String(cString: sqlite3_column_text(s, i))
            }
            func int(_ i: Int32) -> Int64? {
                sqlite3_column_type(s, i) == SQLITE_NULL ? nil : sqlite3_column_int64(s, i)
            }
            let blobLength = Int(sqlite3_column_bytes(s, 3))
            let sealed = blobLength > 0 ? Data(bytes: sqlite3_column_blob(s, 3), count: blobLength) : Data()
            // The name is the one asked for: the key matched it byte for byte (BINARY collation).
            var r = TokenRecord(name: name, kind: text(1) ?? "other", app: text(2), sealed: sealed,
                                dataKeyId: int(4) ?? 0, now: int(13) ?? 0)
            r.tokenType = text(5)
            r.scopes = text(6) ?? "[]"
            r.granularScopes = text(7)
            r.expiresAt = int(8)
            r.dataAccessExpiresAt = int(9)
            r.valid = int(10).map { $0 != 0 }
            r.checkedAt = int(11)
            r.lastError = text(12)
            r.updatedAt = int(14) ?? r.createdAt
            let macLength = Int(sqlite3_column_bytes(s, 15))
            r.metaMAC = sqlite3_column_type(s, 15) == SQLITE_NULL ? nil
                : macLength > 0 ? Data(bytes: sqlite3_column_blob(s, 15), count: macLength) : Data()
            return r
        }
    }
}

/// Binds `text` with its exact byte length: a NUL inside it is part of the value, never its end (with a
/// length of -1, `acme/ads\0/../x` would be looked up as `acme/ads`).
private func bindText(_ statement: OpaquePointer?, _ index: Int32, _ text: String) -> Int32 {
    var text = text
    return text.withUTF8 { utf8 in
        utf8.withMemoryRebound(to: CChar.self) { chars in
            // An empty string still needs a valid pointer: SQLite reads a NULL pointer as SQL NULL.
            withUnsafePointer(to: CChar(0)) { empty in
                sqlite3_bind_text(statement, index, chars.baseAddress ?? empty, Int32(chars.count), SQLITE_TRANSIENT_)
            }
        }
    }
}

/// The bytes an empty name is bound to without a copy: valid for the life of the process, and never written.
nonisolated(unsafe) private let emptyText: UnsafePointer<CChar> = UnsafePointer(strdup("")!)

/// SQLITE_TRANSIENT: SQLite copies the bound text before the call returns.
private let SQLITE_TRANSIENT_ = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
