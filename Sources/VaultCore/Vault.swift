import Foundation
import Synchronization
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Where one vault's files live: `vault.db`, `keys/` (unless `--keys`), `audit/`, `policy.toml`, the socket.
public struct VaultHome: Sendable, Equatable {
    public let root: String
    public let keysDirectory: String

    /// `keys` defaults to `<root>/keys`.
    public init(root: String, keys: String? = nil) {
        self.root = root
        self.keysDirectory = keys ?? root + "/keys"
    }

    public var databasePath: String { root + "/vault.db" }
    public var auditDirectory: String { root + "/audit" }
    public var policyPath: String { root + "/policy.toml" }
    public var socketPath: String { root + "/tokenvault.sock" }
}

/// A token opened for a caller: its metadata and its plaintext bytes (wiped when released).
public struct OpenedToken: Sendable {
    public let record: TokenRecord
    public let secret: SecretBytes
}

/// The vault: sealed tokens in the store, data keys wrapped by master keys in the keyring.
///
/// Master keys never seal tokens; they wrap data keys. Tokens are sealed under the current data key
/// with the token's name bound in (``SealContext/token(_:)``). Unwrapped data keys are cached in
/// secure memory for the life of the `Vault`.
public final class Vault: Sendable {
    public static let maxSecretBytes = 16 * 1024

    public let home: VaultHome
    public let keyring: Keyring
    /// This host's name in a shared store (its audit checkpoint and shipped records); see ``defaultHostID``.
    public let hostID: String
    let store: any VaultStorage
    let passphrase: PassphraseProvider?
    private let dataKeys = Mutex<[Int64: SecureKey]>([:])
    /// Data keys wrapped before metadata was authenticated (context `data-key`, not `data-key-v2`):
    /// the tokens they seal may lack a metadata MAC (see ``MetadataMAC``).
    let legacyDataKeys = Mutex<Set<Int64>>([])

    private init(home: VaultHome, store: any VaultStorage, passphrase: PassphraseProvider?, hostID: String) {
        self.home = home
        self.keyring = Keyring(directory: home.keysDirectory, anchorName: store.isShared ? "audit-\(hostID).anchor" : "audit.anchor")
        self.store = store
        self.passphrase = passphrase
        self.hostID = hostID
    }

    deinit { store.close() }

    /// The host's name unless `--host-id` gives another: its hostname (`local` if it has none).
    public static var defaultHostID: String {
        var name = [UInt8](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return AuditCheckpointRecord.localHost }
        let host = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
        return host.isEmpty ? AuditCheckpointRecord.localHost : host
    }

    /// The store, as messages name it (a path, or a URL without its password).
    public var storeLocation: String { store.location }

    /// Whether several hosts share the store (then each ships its audit records to it).
    public var storeIsShared: Bool { store.isShared }

    // MARK: - lifecycle

    /// Creates a vault: the home (0700), the keyring (0700), a new master key, `vault.db` (0600) and a
    /// first data key wrapped under the master key. With `passphrase`, the master key is derived from it
    /// (Argon2id) and only the salt and limits are written to the keyring.
    ///
    /// `openStore` opens (creating if need be) the store the vault goes in, once the home exists; a store
    /// that already holds a vault is refused.
    public static func create(
        home: VaultHome, passphrase: SecretBytes? = nil, strength: PassphraseKDF.Strength = .moderate,
        hostID: String = Vault.defaultHostID, openStore: (VaultHome) throws -> any VaultStorage
    ) throws -> Vault {
        if mkdir(home.root, 0o700) != 0 && errno != EEXIST {
            throw VaultError.io(path: home.root, why: "cannot create the vault home: \(String(cString: strerror(errno)))")
        }
        // An existing home keeps no loose mode: the vault's files are its owner's alone.
        var st = stat()
        if stat(home.root, &st) == 0, st.st_mode & 0o077 != 0 { _ = chmod(home.root, 0o700) }
        try checkHomeIsPrivate(home)
        let store = try openStore(home)
        if try store.read({ try $0.meta("format") }) != nil {
            store.close()
            throw VaultError.alreadyInitialised(home: store.location == home.databasePath ? home.root : store.location)
        }
        let keyring = Keyring(directory: home.keysDirectory)
        let (masterId, masterKey) = try passphrase.map { try keyring.createPassphraseKey(passphrase: $0, strength: strength) }
            ?? keyring.createRandomKey()
        let cached = passphrase.map { p in { @Sendable (_: String) in SecretBytes(copying: p.withUnsafeBytes { Array($0) }) } }
        let vault = Vault(home: home, store: store, passphrase: cached, hostID: hostID)
        try vault.addDataKey(under: masterId, masterKey: masterKey)
        try store.write { tx in
            try tx.setMeta("format", "1")
            try tx.setMeta("created_at", String(Self.now()))
        }
        return vault
    }

    /// Opens an existing vault in `store`. Keys are unlocked on first use, so `list` and `show` work
    /// without them.
    public static func open(home: VaultHome, passphrase: PassphraseProvider? = nil, hostID: String = Vault.defaultHostID,
                            store: any VaultStorage) throws -> Vault {
        var st = stat()
        if stat(home.root, &st) == 0, st.st_mode & 0o002 != 0 {
            store.close()
            throw VaultError.insecurePermissions(path: home.root, mode: st.st_mode & 0o7777, fix: "chmod 700 \(home.root)")
        }
        guard try store.read({ try $0.meta("format") }) != nil else {
            store.close()
            throw StoreError.notInitialised(path: store.location)
        }
        return Vault(home: home, store: store, passphrase: passphrase, hostID: hostID)
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    /// Refuses a home that another user owns, or that its group or others can enter (the daemon's check
    /// at start; `init` tightens an existing home to 0700 first).
    public static func checkHomeIsPrivate(_ home: VaultHome) throws {
        var st = stat()
        guard stat(home.root, &st) == 0 else { throw StoreError.notInitialised(path: home.databasePath) }
        guard st.st_uid == geteuid() || st.st_uid == 0 else {
            throw VaultError.badKeyFile(path: home.root, why: "the vault home is owned by uid \(st.st_uid), not by this user (uid \(geteuid())) or root; "
                + "fix it with `chown \(geteuid()) \(home.root)`")
        }
        if st.st_mode & 0o077 != 0 {
            throw VaultError.insecurePermissions(path: home.root, mode: st.st_mode & 0o7777, fix: "chmod 700 \(home.root)")
        }
    }

    // MARK: - keys

    /// Generates a data key, wraps it under `masterKey` and makes it current.
    @discardableResult
    func addDataKey(under masterId: String, masterKey: SecureKey) throws -> Int64 {
        let dataKey = SecureKey.random()
        let id: Int64 = try store.write { tx in
            // The wrap binds the data key's row id, so the id must be known first: insert, then seal.
            var record = try tx.insertDataKey(DataKeyRecord(
                masterKeyId: masterId, wrapped: Data(), createdAt: Self.now(), isCurrent: true))
            let wrapped = Sealer.seal(key: dataKey, under: masterKey, context: .dataKeyV2(record.id!))
            record.wrapped = Data(wrapped)
            try tx.updateDataKey(record)
            return record.id!
        }
        dataKeys.withLock { $0[id] = dataKey }
        return id
    }

    /// The unwrapped data key `id`, from the cache or unwrapped now under its master key.
    func dataKey(id: Int64) throws -> SecureKey {
        if let key = dataKeys.withLock({ $0[id] }) { return key }
        guard let record = try store.read({ try $0.dataKey(id: id) }) else {
            throw VaultError.integrity(what: "data key", name: String(id))
        }
        let key = try unwrap(record)
        dataKeys.withLock { $0[id] = key }
        return key
    }

    /// Data key `id` inside a transaction (the store is not re-entrant, so no nested read).
    func dataKey(id: Int64, in tx: any StorageTransaction) throws -> SecureKey {
        if let key = dataKeys.withLock({ $0[id] }) { return key }
        guard let record = try tx.dataKey(id: id) else { throw VaultError.integrity(what: "data key", name: String(id)) }
        let key = try unwrap(record)
        dataKeys.withLock { $0[id] = key }
        return key
    }

    /// Unwraps a data key: wrapped by this release (`data-key-v2`), else by an earlier one (then noted as
    /// legacy: its tokens may lack a metadata MAC).
    func unwrap(_ record: DataKeyRecord) throws -> SecureKey {
        let master = try keyring.load(id: record.masterKeyId, passphrase: passphrase)
        let wrapped = [UInt8](record.wrapped)
        if let key = try? Sealer.openKey(wrapped, under: master, context: .dataKeyV2(record.id!)) { return key }
        do {
            let key = try Sealer.openKey(wrapped, under: master, context: .dataKey(record.id!))
            legacyDataKeys.withLock { _ = $0.insert(record.id!) }
            return key
        } catch CryptoError.authenticationFailed {
            if try keyring.entry(id: record.masterKeyId)?.source == .passphrase {
                throw VaultError.wrongPassphrase(id: record.masterKeyId)
            }
            throw VaultError.wrongMasterKey(id: record.masterKeyId, path: keyring.path(record.masterKeyId))
        }
    }

    /// The audit log's key: made on first use, wrapped under the master key that wraps the current data
    /// key, so key rotation covers it like any data key.
    public func auditKey() throws -> SecureKey {
        if let record = try store.read({ try $0.auditKey() }) { return try dataKey(id: record.id!) }
        let fresh = SecureKey.random()
        let id: Int64 = try store.write { tx in
            if let existing = try tx.auditKey() { return existing.id! }  // another process won the race
            guard let current = try tx.currentDataKey() else { throw VaultError.integrity(what: "vault", name: store.location) }
            let master = try keyring.load(id: current.masterKeyId, passphrase: passphrase)
            var record = try tx.insertDataKey(DataKeyRecord(
                masterKeyId: current.masterKeyId, wrapped: Data(), createdAt: Self.now(), isCurrent: false, purpose: "audit"))
            record.wrapped = Data(Sealer.seal(key: fresh, under: master, context: .dataKeyV2(record.id!)))
            try tx.updateDataKey(record)
            return record.id!
        }
        return try dataKey(id: id)
    }

    /// The audit key if one was made (the vault has been audited), without making one.
    public func existingAuditKey() throws -> SecureKey? {
        guard let record = try store.read({ try $0.auditKey() }) else { return nil }
        return try dataKey(id: record.id!)
    }

    /// This host's audit checkpoint, kept in the store.
    public func auditCheckpoint() throws -> AuditCheckpointRecord? {
        try store.read { try $0.auditCheckpoint(host: hostID) }
    }

    /// Every host's checkpoint (a SQLite store has one).
    public func auditCheckpoints() throws -> [AuditCheckpointRecord] {
        try store.read { try $0.auditCheckpoints() }
    }

    /// Moves this host's checkpoint forward (never back: several processes append to one log).
    public func advanceAuditCheckpoint(seq: Int64, hash: [UInt8], mac: [UInt8]) throws {
        try store.write { tx in
            if let existing = try tx.auditCheckpoint(host: hostID), existing.seq >= seq { return }
            try tx.saveAuditCheckpoint(AuditCheckpointRecord(host: hostID, seq: seq, hash: hexString(hash), mac: hexString(mac),
                                                             updatedAt: Self.now()))
        }
    }

    /// Overwrites the checkpoint whatever it holds (tests play an attacker with it).
    public func saveAuditCheckpointUnchecked(_ record: AuditCheckpointRecord) throws {
        try store.write { try $0.saveAuditCheckpoint(record) }
    }

    /// Unlocks the keys a server needs (the current data key and the audit key), so a missing or
    /// wrong key stops it at start rather than failing reads later.
    public func unlock() throws {
        _ = try store.read { tx in try currentDataKey(tx) }
        _ = try auditKey()
    }

    /// The current data key and its id.
    func currentDataKey(_ tx: any StorageTransaction) throws -> (id: Int64, key: SecureKey) {
        guard let id = try tx.currentDataKey()?.id else {
            throw VaultError.integrity(what: "vault", name: store.location)
        }
        return (id, try dataKey(id: id, in: tx))
    }

    // MARK: - tokens

    /// Checks a secret before it is stored: non-empty, at most 16 KiB, UTF-8, no control characters.
    public static func validateSecret(_ secret: SecretBytes, what: String = "token") throws {
        guard secret.count > 0 else { throw VaultError.invalidSecret(why: "the \(what) is empty") }
        guard secret.count <= maxSecretBytes else {
            throw VaultError.invalidSecret(why: "the \(what) is \(secret.count) bytes; the limit is \(maxSecretBytes)")
        }
        guard secret.isValidUTF8 else { throw VaultError.invalidSecret(why: "the \(what) is not valid UTF-8") }
        guard !secret.containsControlCharacters else {
            throw VaultError.invalidSecret(why: "the \(what) contains control characters (a stray newline or NUL?)")
        }
    }

    /// Seals and stores a token. An existing token of that name is replaced only with `replace`.
    ///
    /// Every write takes `beforeCommit`: it runs inside the transaction, after every check passed and
    /// just before the commit, and if it throws nothing changes. The CLI makes the action's audit record
    /// durable there, so a change is never made without its record (a full audit disk changes nothing).
    public func put(name: String, secret: SecretBytes, kind: TokenKind = .other, app: String? = nil, replace: Bool = false,
                    beforeCommit: () throws -> Void = {}) throws {
        try put([ImportEntry(name: name, secret: secret, kind: kind, app: app)], replace: replace, beforeCommit: beforeCommit)
    }

    /// Seals and stores many tokens in one transaction: all of them land, or none does.
    @discardableResult
    public func put(_ entries: [ImportEntry], apps: [AppEntry] = [], replace: Bool, beforeCommit: () throws -> Void = {}) throws -> Int {
        for app in apps {
            try Self.validateApp(name: app.name, appId: app.appId, secret: app.secret)
        }
        for entry in entries {
            try Names.validate(entry.name)
            try Self.validateSecret(entry.secret)
            if let app = entry.app { try Names.validate(app, what: "app name") }
        }
        var seen = Set<String>()
        for entry in entries where !seen.insert(entry.name).inserted {
            throw VaultError.invalidName(entry.name, why: "the name appears twice in the input")
        }
        let now = Self.now()
        return try store.write { tx in
            let (keyId, key) = try currentDataKey(tx)
            for app in apps {
                let sealed = Sealer.seal(app.secret, key: key, context: .appSecret(app.name))
                try tx.saveApp(AppRecord(name: app.name, appId: app.appId, sealedSecret: Data(sealed), dataKeyId: keyId, now: now),
                               replace: replace)
            }
            for entry in entries {
                if let app = entry.app, try tx.app(named: app) == nil { throw VaultError.unknownApp(app) }
                let sealed = Sealer.seal(entry.secret, key: key, context: .token(entry.name))
                var record = TokenRecord(name: entry.name, kind: entry.kind.rawValue, app: entry.app,
                                         sealed: Data(sealed), dataKeyId: keyId, now: now)
                if let metadata = entry.metadata { metadata.apply(to: &record) }
                record.metaMAC = MetadataMAC.mac(record, key: key)
                try tx.saveToken(record, replace: replace)
            }
            try tx.recordTokenChanges(entries.map { TokenChange(name: $0.name, kind: .replaced) })
            try beforeCommit()
            return entries.count
        }
    }

    /// Opens a token. A changed or moved sealed value gives ``VaultError/integrity(what:name:)``.
    public func get(name: String, reader: (any HeldTokenReader)? = nil) throws -> OpenedToken {
        let found: TokenRecord?
        if let reader { found = try reader.token(named: name) } else { found = try store.token(named: name) }
        guard let record = found else {
            throw StoreError.notFound(what: "token", name: name)
        }
        // A held reader's remembered row whose metadata was checked since it was read needs no second check:
        // the reader forgets every row at the first tick after any commit.
        let checked = reader?.isChecked(name) ?? false
        let secret = try open(record, checkingMetadata: !checked)
        if !checked { reader?.markChecked(name) }
        return OpenedToken(record: record, secret: secret)
    }

    /// The committed token changes numbered after `seq`, oldest first (what `watch` connections are told).
    public func changes(after seq: Int64, limit: Int = 1000) throws -> [TokenChange] {
        try store.read { try $0.tokenChanges(after: seq, limit: limit) }
    }

    /// The newest committed change's number (0 when there is none): where a new watcher starts.
    public func lastChange() throws -> Int64 {
        try store.read { try $0.lastTokenChange() }
    }

    /// A reader for one thread that may remember rows across a burst of `get`s (see ``HeldTokenReader``):
    /// the daemon keeps one per event loop.
    public func makeHeldReader() -> any HeldTokenReader {
        store.makeHeldReader()
    }

    /// Opens every token (seal and metadata checked, then wiped), read in one snapshot: proof that a copy
    /// of the vault unlocks. Returns how many opened; the first that does not throws.
    public func openAll() throws -> Int {
        let records = try store.read { try $0.tokens() }
        for record in records { _ = try open(record) }
        return records.count
    }

    /// A token's row without opening it (the daemon's read path, no key needed).
    public func record(named name: String) throws -> TokenRecord? {
        try store.token(named: name)
    }

    /// Opens a token after checking that its metadata is the vault's own: the metadata MAC holds (or
    /// the row predates it, under a legacy data key), and its kind and scopes are typed values.
    func open(_ record: TokenRecord, checkingMetadata: Bool = true) throws -> SecretBytes {
        let key = try dataKey(id: record.dataKeyId)
        let secret: SecretBytes
        do {
            secret = try record.sealed.withUnsafeBytes { try Sealer.open($0, key: key, context: .token(record.name)) }
        } catch is CryptoError {
            throw VaultError.integrity(what: "token", name: record.name)
        }
        if checkingMetadata { try checkMetadata(record, key: key) }
        return secret
    }

    /// Throws unless the row's metadata is the vault's own: its MAC holds under `key` (the row's data key),
    /// or the row predates metadata MACs under a legacy data key; and its kind and scopes are typed values.
    func checkMetadata(_ record: TokenRecord, key: SecureKey) throws {
        guard MetadataMAC.isAuthentic(record, key: key, legacy: isLegacyDataKey(record.dataKeyId)) else {
            throw VaultError.integrity(what: "metadata of token", name: record.name)
        }
    }

    /// A token's scopes as stored (the vault wrote them; ``open(_:)`` has checked they parse).
    public static func scopes(of record: TokenRecord) -> [String] {
        ScopeList.parse(record.scopes) ?? []
    }

    /// Changes a stored token inside `tx`: the row as stored must pass its metadata check first, then the
    /// record as `change` makes it — computed here, never re-read — is written with its new MAC. So an
    /// edit made behind the vault's back is refused, never blessed by a later re-seal, check or extend,
    /// and a trigger that edits the row as it is written only makes the next read fail.
    func updateToken(named name: String, in tx: any StorageTransaction, _ change: (inout TokenRecord) throws -> Void) throws {
        guard var record = try tx.token(named: name) else { throw StoreError.notFound(what: "token", name: name) }
        try checkMetadata(record, key: try dataKey(id: record.dataKeyId, in: tx))
        try change(&record)
        record.metaMAC = MetadataMAC.mac(record, key: try dataKey(id: record.dataKeyId, in: tx))
        try tx.updateToken(record)  // the row exists: no insert attempt first
    }

    /// Whether data key `id` was wrapped before metadata was authenticated (after it was unwrapped).
    func isLegacyDataKey(_ id: Int64) -> Bool { legacyDataKeys.withLock { $0.contains(id) } }

    /// Metadata of every token, by name. Needs no key.
    public func list() throws -> [TokenRecord] {
        try store.read { try $0.tokens() }
    }

    /// Every token name, sorted. Needs no key.
    public func names() throws -> [String] {
        try store.tokenNames()
    }

    /// Metadata of one token. Needs no key.
    public func show(name: String) throws -> TokenRecord {
        guard let record = try store.read({ try $0.token(named: name) }) else {
            throw StoreError.notFound(what: "token", name: name)
        }
        return record
    }

    public func remove(name: String, beforeCommit: () throws -> Void = {}) throws {
        try store.write { tx in
            guard try tx.deleteToken(named: name) else { throw StoreError.notFound(what: "token", name: name) }
            try tx.recordTokenChanges([TokenChange(name: name, kind: .removed)])
            try beforeCommit()
        }
    }

    /// Replaces a token's value (an exchange for a long-lived token) in one transaction, keeping its kind,
    /// app and creation time, and setting its new expiry.
    public func replaceSecret(name: String, secret: SecretBytes, expiresAt: Int64?, beforeCommit: () throws -> Void = {}) throws {
        try Self.validateSecret(secret)
        try change { c in
            try c.replaceSecret(name: name, secret: secret, expiresAt: expiresAt)
            try beforeCommit()
        }
    }

    /// Seals `secret` under the current data key in place of `name`'s, in `tx` (a `refreshed` change).
    func replaceSecret(name: String, secret: SecretBytes, expiresAt: Int64?, in tx: any StorageTransaction) throws {
        try Self.validateSecret(secret)
        let (keyId, key) = try currentDataKey(tx)
        let sealed = Sealer.seal(secret, key: key, context: .token(name))
        let now = Self.now()
        try updateToken(named: name, in: tx) { r in
            r.sealed = Data(sealed)
            r.dataKeyId = keyId
            r.expiresAt = expiresAt
            r.updatedAt = now
        }
        try tx.recordTokenChanges([TokenChange(name: name, kind: .refreshed)])
    }

    /// Runs `body` in one write transaction, for a module that keeps state of its own beside the tokens
    /// (the Meta lifecycle): its token changes and its own state commit together, or not at all.
    public func change<T>(_ body: (VaultChange) throws -> T) throws -> T {
        try store.write { try body(VaultChange(vault: self, tx: $0)) }
    }

    /// Like ``change(_:)`` on a read-only snapshot.
    public func inspect<T>(_ body: (VaultChange) throws -> T) throws -> T {
        try store.read { try body(VaultChange(vault: self, tx: $0)) }
    }

    /// Who holds a lock this process takes, as another host is told.
    private var lockHolder: String { "`tokenvault` pid \(getpid()) on host \(hostID)" }

    /// Takes the lease `name` if no other process that shares the store holds it (see ``VaultStorage/tryLease(_:holder:)``).
    public func tryLease(_ name: String) throws -> (any StoreLease)? {
        try store.tryLease(name, holder: lockHolder)
    }

    /// Runs `body` holding the store's key-rotation lock (every process on every host that uses the store).
    public func withRotationLock<T>(wait: Bool, _ body: () throws -> T) throws -> T {
        try store.withRotationLock(holder: lockHolder, wait: wait, body)
    }

    // MARK: - apps

    public struct AppInfo: Sendable, Equatable {
        public let name: String
        public let appId: String
        public let tokens: Int
        public let createdAt: Int64
    }

    /// An app to store: the vault's name for it, Meta's app id and the app secret.
    public struct AppEntry: Sendable {
        public let name: String
        public let appId: String
        public let secret: SecretBytes
        public init(name: String, appId: String, secret: SecretBytes) {
            self.name = name
            self.appId = appId
            self.secret = secret
        }
    }

    static func validateApp(name: String, appId: String, secret: SecretBytes) throws {
        try Names.validate(name, what: "app name")
        guard !appId.isEmpty, appId.count <= 32, appId.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else {
            throw VaultError.invalidName(appId, why: "a Meta app id is all digits")
        }
        try validateSecret(secret, what: "app secret")
    }

    /// Stores a Meta app and its secret, sealed like a token.
    public func addApp(name: String, appId: String, secret: SecretBytes, replace: Bool = false, beforeCommit: () throws -> Void = {}) throws {
        try put([], apps: [AppEntry(name: name, appId: appId, secret: secret)], replace: replace, beforeCommit: beforeCommit)
    }

    /// Removes an app and its sealed secret; refused while a token belongs to it.
    public func removeApp(name: String, beforeCommit: () throws -> Void = {}) throws {
        try store.write { tx in
            guard try tx.app(named: name) != nil else { throw StoreError.notFound(what: "app", name: name) }
            if let n = try tx.tokenCountsByApp()[name], n > 0 {
                throw StoreError.inUse(what: "app", name: name, by: "\(n) token\(n == 1 ? "" : "s") (`tokenvault list` shows them; remove them or store them under another app first)")
            }
            guard try tx.deleteApp(named: name) else { throw StoreError.notFound(what: "app", name: name) }
            try beforeCommit()
        }
    }

    public func apps() throws -> [AppInfo] {
        try store.read { tx in
            let counts = try tx.tokenCountsByApp()
            return try tx.apps().map { AppInfo(name: $0.name, appId: $0.appId, tokens: counts[$0.name] ?? 0, createdAt: $0.createdAt) }
        }
    }

    /// An `appsecret_proof` for `token` under its app's secret: HMAC-SHA256 over `token|time` (timed,
    /// returning the time used) or over the token alone (legacy). The app secret never leaves the vault.
    public func appsecretProof(token: SecretBytes, app: String, timed: Bool) throws -> (hex: String, time: Int64?) {
        let secret = try appSecret(app: app).secret
        let time: Int64? = timed ? Self.now() : nil
        var message = token.withUnsafeBytes { Array($0) } + (time.map { Array("|\($0)".utf8) } ?? [])
        defer { wipe(&message) }
        let mac = secret.withUnsafeBytes { k in message.withUnsafeBytes { HMACSHA256.mac(key: k, message: $0) } }
        return (hexString(mac), time)
    }

    /// The app's id and its opened secret.
    public func appSecret(app name: String) throws -> (appId: String, secret: SecretBytes) {
        guard let record = try store.appSeal(named: name) else { throw VaultError.unknownApp(name) }
        let key = try dataKey(id: record.dataKeyId)
        do {
            return (record.appId, try record.sealed.withUnsafeBytes { try Sealer.open($0, key: key, context: .appSecret(name)) })
        } catch is CryptoError {
            throw VaultError.integrity(what: "app secret of", name: name)
        }
    }
}

/// One transaction on the vault's store, for a module with state of its own (see ``Vault/change(_:)``).
public struct VaultChange {
    let vault: Vault
    let tx: any StorageTransaction

    /// Changes a stored token, checked and MAC'd as ``Vault/updateToken(named:in:_:)`` does.
    public func updateToken(named name: String, _ change: (inout TokenRecord) throws -> Void) throws {
        try vault.updateToken(named: name, in: tx, change)
    }

    /// Replaces a token's secret (sealed under the current data key), as ``Vault/replaceSecret(name:secret:expiresAt:beforeCommit:)``.
    public func replaceSecret(name: String, secret: SecretBytes, expiresAt: Int64?) throws {
        try vault.replaceSecret(name: name, secret: secret, expiresAt: expiresAt, in: tx)
    }

    /// A token's row as this transaction sees it (not opened).
    public func token(named name: String) throws -> TokenRecord? {
        try tx.token(named: name)
    }

    /// A module's own state in this transaction: `State` is the protocol that module owns, which every
    /// backend's transaction implements.
    public func state<State>(_ type: State.Type) throws -> State {
        guard let state = tx as? State else {
            throw StoreError.io(path: vault.store.location, detail: "this store keeps no \(State.self)")
        }
        return state
    }
}
