import Foundation
import VaultCrypto
import VaultStore

/// Master-key rotation, re-sealing and retirement.
///
/// Every step is crash-safe on its own: a new key file is complete on disk (temp name, fsync, rename,
/// directory fsync) before any data key is re-wrapped under it, re-wrapping is one transaction, and
/// re-sealing moves tokens to the new data key in batches, each one transaction. At any instant every
/// token opens — under the old data key or the new — and running `key rotate --reseal` again finishes.
extension Vault {
    /// One master key and what depends on it.
    public struct MasterKeyInfo: Sendable, Equatable {
        public let id: String
        /// `file`, `passphrase`, or nil when the vault refers to it but its file is not in the keyring.
        public let source: Keyring.Source?
        /// The key wraps the current data key.
        public let isCurrent: Bool
        /// Data keys (token and audit) wrapped under it.
        public let dataKeys: Int
        /// Tokens and app secrets sealed under those data keys.
        public let sealed: Int

        /// `current`, `in use`, `unused` (safe to retire) or `missing` (needed but absent).
        public var state: String {
            if source == nil { return "missing" }
            if isCurrent { return "current" }
            return dataKeys > 0 ? "in use" : "unused"
        }
    }

    public func masterKeys() throws -> [MasterKeyInfo] {
        let (records, counts) = try store.read { tx in (try tx.dataKeys(), try tx.sealCountsByDataKey()) }
        let currentMaster = records.first(where: \.isCurrent)?.masterKeyId
        var ids = Set(records.map(\.masterKeyId))
        let entries = try keyring.entries()
        for e in entries { ids.insert(e.id) }
        return ids.sorted().map { id in
            let wrapped = records.filter { $0.masterKeyId == id }
            return MasterKeyInfo(id: id, source: entries.first { $0.id == id }?.source, isCurrent: id == currentMaster,
                                 dataKeys: wrapped.count, sealed: wrapped.reduce(0) { $0 + (counts[$1.id!] ?? 0) })
        }
    }

    /// Makes a new master key and re-wraps every data key (and the audit key) under it in one transaction.
    /// Returns the new key's id. The old key file stays until `retireMasterKey`.
    @discardableResult
    public func rotateMasterKey(passphrase newPassphrase: SecretBytes? = nil, strength: PassphraseKDF.Strength = .moderate) throws -> String {
        // Unwrap everything first: a data key we cannot open must stop the rotation before anything changes.
        let records = try store.read { try $0.dataKeys() }
        var unwrapped: [Int64: SecureKey] = [:]
        for r in records { unwrapped[r.id!] = try dataKey(id: r.id!) }
        let (newId, newKey) = try newPassphrase.map { try keyring.createPassphraseKey(passphrase: $0, strength: strength) }
            ?? keyring.createRandomKey()
        try store.write { tx in
            for var record in try tx.dataKeys() {
                let id = record.id!
                let key: SecureKey
                if let k = unwrapped[id] { key = k } else { key = try unwrap(record) }  // added meanwhile
                record.wrapped = Data(Sealer.seal(key: key, under: newKey, context: .dataKey(id)))
                record.masterKeyId = newId
                try tx.updateDataKey(record)
            }
        }
        return newId
    }

    /// Tokens and app secrets not yet sealed under the current data key (an unfinished re-seal).
    public func pendingReseal() throws -> Int {
        try store.read { tx in
            guard let current = try tx.currentDataKey()?.id else { return 0 }
            return try tx.pendingSealCount(notUnder: current)
        }
    }

    /// Starts a re-seal: a new data key, wrapped under the current master key, becomes current.
    @discardableResult
    public func beginReseal() throws -> Int64 {
        let master = try store.read { try $0.currentDataKey() }?.masterKeyId
        guard let master else { throw VaultError.integrity(what: "vault", name: home.databasePath) }
        return try addDataKey(under: master, masterKey: try keyring.load(id: master, passphrase: passphrase))
    }

    /// Re-seals everything not under the current data key, `batchSize` per transaction, calling
    /// `progress(done, total)` after each batch. Old data keys that seal nothing any more are deleted at the end.
    @discardableResult
    public func continueReseal(batchSize: Int = 2000, progress: (Int, Int) -> Void = { _, _ in }) throws -> Int {
        guard let currentRecord = try store.read({ try $0.currentDataKey() }), let current = currentRecord.id else {
            throw VaultError.integrity(what: "vault", name: home.databasePath)
        }
        let newKey = try dataKey(id: current)
        let total = try pendingReseal()
        var done = 0
        while true {
            let moved: Int = try store.write { tx in
                let batch = try tx.pendingSeals(notUnder: current, limit: batchSize)
                for item in batch {
                    let oldKey = try dataKey(id: item.dataKeyId, in: tx)
                    let context: SealContext = item.kind == .token ? .token(item.name) : .appSecret(item.name)
                    let plain: SecretBytes
                    do { plain = try Sealer.open([UInt8](item.sealed), key: oldKey, context: context) } catch {
                        throw VaultError.integrity(what: item.kind == .token ? "token" : "app secret of", name: item.name)
                    }
                    let sealed = Sealer.seal(plain, key: newKey, context: context)
                    try tx.reseal(item.kind, name: item.name, sealed: Data(sealed), dataKeyId: current)
                }
                return batch.count
            }
            if moved == 0 { break }
            done += moved
            progress(done, max(total, done))
        }
        try store.write { _ = try $0.deleteUnusedDataKeys() }
        return done
    }

    /// Removes a master key from the keyring (overwriting a key file first). Refused while any data key
    /// is wrapped under it.
    public func retireMasterKey(id: String) throws {
        guard let info = try masterKeys().first(where: { $0.id == id }), info.source != nil else {
            throw VaultError.missingMasterKey(id: id, keyring: keyring.directory)
        }
        guard info.dataKeys == 0 else {
            throw StoreError.inUse(what: "master key", name: id,
                                   by: "\(info.dataKeys) data key(s) sealing \(info.sealed) token(s): run `tokenvault key rotate` first")
        }
        try keyring.destroy(id: id)
    }
}
