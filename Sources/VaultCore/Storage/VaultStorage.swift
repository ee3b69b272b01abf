import Foundation

/// The storage seam: what the vault needs from a store, whatever engine is behind it.
///
/// A store holds only sealed values, wrapped keys, metadata and the audit checkpoint — never a key or a
/// plaintext token — so the vault checks everything it reads (seals open, metadata MACs hold) and a
/// store needs no trust beyond availability. Each backend lives in its own module (`VaultSQLite`,
/// `VaultPostgres`) and is the only code that speaks its engine's language; `VaultStores` opens one from
/// a `--store` URL.
///
/// Modules with state of their own (the Meta lifecycle, the shipped audit copy) own a transaction
/// protocol of their own; a backend's transaction conforms to it and ``VaultChange/state(_:)`` hands it
/// out, so that state commits in the same transaction as the token change it goes with.
public protocol VaultStorage: AnyObject, Sendable {
    /// The store as messages name it: a path, or a URL without its password.
    var location: String { get }

    /// Whether several hosts share the store (each host then has a checkpoint and an anchor of its own).
    var isShared: Bool { get }

    /// Runs `body` in one write transaction: everything in it lands, or nothing does. Transactions of
    /// one store never nest.
    func write<T>(_ body: (any StorageTransaction) throws -> T) throws -> T

    /// A write transaction for bulk re-sealing, where the caller guarantees the keys it writes exist
    /// (a backend may skip per-row reference checks).
    func writeBulk<T>(_ body: (any StorageTransaction) throws -> T) throws -> T

    /// Runs `body` on a consistent read-only snapshot.
    func read<T>(_ body: (any StorageTransaction) throws -> T) throws -> T

    /// One token's row, on the fast read path.
    func token(named name: String) throws -> TokenRecord?

    /// One app's id, sealed secret and data key, on the fast read path.
    func appSeal(named name: String) throws -> AppSeal?

    /// Every token name, sorted.
    func tokenNames() throws -> [String]

    /// A reader for one thread (an event loop) that may remember rows across lookups; see
    /// ``HeldTokenReader``.
    func makeHeldReader() -> any HeldTokenReader

    /// Runs `body` holding the store's rotation lock: exclusive among every process, on every host, that
    /// uses this store. `holder` says who holds it (shown to a second caller); with `wait` false a held
    /// lock throws ``StoreError/locked(what:holder:)`` at once.
    func withRotationLock<T>(holder: String, wait: Bool, _ body: () throws -> T) throws -> T

    /// Takes the lock `name` without waiting, for work that one process of all that share the store must do
    /// at a time (the Meta re-check sweep): a lease to release, or nil while another process — on any host
    /// of a shared store — holds it. A crashed holder's lease ends with its process (or its session).
    func tryLease(_ name: String, holder: String) throws -> (any StoreLease)?

    /// Closes connections and stops background work; later calls fail.
    func close()
}

/// A lock held until ``release()`` (see ``VaultStorage/tryLease(_:holder:)``).
public protocol StoreLease: AnyObject, Sendable {
    func release()
}

extension StorageTransaction {
    public func insertTokens(_ records: [TokenRecord]) throws {
        for r in records { try saveToken(r, replace: false) }
    }
}

extension VaultStorage {
    public func close() {}
    public var isShared: Bool { false }
}

/// A reader that one thread alone uses (the daemon keeps one per event loop). It may remember the rows it
/// has read for as long as its backend can prove them current (SQLite: `data_version` unchanged since the
/// burst began; PostgreSQL: no change notification since the row was read, on a live notification
/// connection). The owner calls ``release()`` at the end of each burst of lookups.
public protocol HeldTokenReader: AnyObject {
    func token(named name: String) throws -> TokenRecord?
    /// Whether the remembered row of `name` was checked since it was read from the store.
    func isChecked(_ name: String) -> Bool
    /// Notes that the vault checked the remembered row of `name` (its metadata MAC): until the reader
    /// forgets the row, the same bytes need no second check.
    func markChecked(_ name: String)
    /// Ends the burst (a read transaction, if one is held).
    func release()
    /// Rows remembered now (for tests).
    var rememberedCount: Int { get }
}

/// The operations of one transaction. Each backend keeps its query language behind these methods.
public protocol StorageTransaction {
    // vault metadata
    func meta(_ key: String) throws -> String?
    func setMeta(_ key: String, _ value: String) throws
    func removeMeta(_ key: String) throws

    // data keys
    func currentDataKey() throws -> DataKeyRecord?
    func dataKey(id: Int64) throws -> DataKeyRecord?
    func dataKeys() throws -> [DataKeyRecord]
    /// Inserts a data key (a new id unless the record names one); when it is current, the previous
    /// current key stops being current. Returns it with its id.
    func insertDataKey(_ record: DataKeyRecord) throws -> DataKeyRecord
    func updateDataKey(_ record: DataKeyRecord) throws
    /// Deletes token data keys that seal nothing any more (never the current one or the audit key).
    @discardableResult func deleteUnusedDataKeys() throws -> Int
    /// Per data key: how many tokens and apps it seals.
    func sealCountsByDataKey() throws -> [Int64: Int]
    /// The audit log's key (wrapped), if one was made.
    func auditKey() throws -> DataKeyRecord?

    // tokens
    func token(named name: String) throws -> TokenRecord?
    func tokens() throws -> [TokenRecord]
    /// Stores a token. An existing token of that name is replaced (all but its creation time) only when
    /// `replace` is true, else ``StoreError/alreadyExists(what:name:)``.
    func saveToken(_ record: TokenRecord, replace: Bool) throws
    /// Rewrites an existing token's row, everything but its creation time.
    func updateToken(_ record: TokenRecord) throws
    /// Deletes a token; false when there was none.
    func deleteToken(named name: String) throws -> Bool

    // apps
    func app(named name: String) throws -> AppRecord?
    func apps() throws -> [AppRecord]
    func saveApp(_ record: AppRecord, replace: Bool) throws
    /// Deletes an app; false when there was none. The caller checks that no token belongs to it.
    func deleteApp(named name: String) throws -> Bool
    /// How many tokens belong to each app.
    func tokenCountsByApp() throws -> [String: Int]

    // the audit checkpoint (one per host)
    func auditCheckpoint(host: String) throws -> AuditCheckpointRecord?
    func auditCheckpoints() throws -> [AuditCheckpointRecord]
    func saveAuditCheckpoint(_ record: AuditCheckpointRecord) throws

    // re-sealing
    /// Every app secret not sealed under data key `current` (apps are few).
    func pendingAppSeals(notUnder current: Int64) throws -> [PendingSeal]
    /// The next `limit` tokens after `after` in name order, keeping those not sealed under `current`.
    /// Returns them and the last name looked at (nil at the end), so one pass visits each row once.
    func pendingTokenSeals(notUnder current: Int64, after: String, limit: Int) throws -> ([PendingSeal], String?)
    /// How many tokens and app secrets are not sealed under `current`.
    func pendingSealCount(notUnder current: Int64) throws -> Int
    /// Replaces one sealed value, and for a token the metadata MAC that binds it (metadata untouched).
    func reseal(_ kind: PendingSeal.Kind, name: String, sealed: Data, dataKeyId: Int64, metaMAC: Data?) throws

    // change events (`watch`)
    /// Appends changes, numbered after every committed one (in commit order, also across hosts), and
    /// prunes all but the newest ``TokenChange/kept``.
    func recordTokenChanges(_ changes: [TokenChange]) throws
    /// The changes numbered after `seq`, oldest first, at most `limit`.
    func tokenChanges(after seq: Int64, limit: Int) throws -> [TokenChange]
    /// The newest change's number (0 when there is none).
    func lastTokenChange() throws -> Int64

    // copying a vault (`tokenvault migrate`)
    /// Inserts many new tokens (none of them stored yet); a backend may do it in few statements.
    func insertTokens(_ records: [TokenRecord]) throws
    /// Deletes everything the store holds: tokens, apps, data keys, checkpoints, metadata, and the state
    /// other modules keep in it. Only a migration that was told to replace its target calls it.
    func removeEverything() throws
}
