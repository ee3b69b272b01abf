import Foundation
import VaultCrypto


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

    /// Makes a new master key — or, with `existing`, takes a key already in the keyring (one an admin has
    /// copied to every host of a shared store first) — and re-wraps every data key (and the audit key) under
    /// it in one transaction. Returns the key's id. The old key file stays until `retireMasterKey`.
    @discardableResult
    public func rotateMasterKey(passphrase newPassphrase: SecretBytes? = nil, strength: PassphraseKDF.Strength = .moderate,
                                existing: String? = nil, beforeCommit: () throws -> Void = {}) throws -> String {
        // Unwrap everything first: a data key we cannot open must stop the rotation before anything changes.
        let records = try store.read { try $0.dataKeys() }
        var unwrapped: [Int64: SecureKey] = [:]
        for r in records { unwrapped[r.id!] = try dataKey(id: r.id!) }
        let (newId, newKey): (String, SecureKey)
        if let existing {
            guard try keyring.entry(id: existing) != nil else {
                throw VaultError.missingMasterKey(id: existing, keyring: keyring.directory)
            }
            (newId, newKey) = (existing, try keyring.load(id: existing, passphrase: passphrase))
        } else {
            (newId, newKey) = try newPassphrase.map { try keyring.createPassphraseKey(passphrase: $0, strength: strength) }
                ?? keyring.createRandomKey()
        }
        try store.write { tx in
            for var record in try tx.dataKeys() {
                let id = record.id!
                let key: SecureKey
                if let k = unwrapped[id] { key = k } else { key = try unwrap(record) }  // added meanwhile
                // A legacy data key stays legacy: its tokens' rows may lack metadata MACs until a re-seal moves them.
                let context: SealContext = isLegacyDataKey(id) ? .dataKey(id) : .dataKeyV2(id)
                record.wrapped = Data(Sealer.seal(key: key, under: newKey, context: context))
                record.masterKeyId = newId
                try tx.updateDataKey(record)
            }
            try beforeCommit()
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
        var cursor: String? = ""
        var appsDone = false
        while let after = cursor {
            // Unchecked: the only key written is `current`, which exists; per-row FK checks tripled the cost.
            let moved: Int = try store.writeBulk { tx in
                var batch: [PendingSeal]
                if !appsDone {
                    batch = try tx.pendingAppSeals(notUnder: current)
                    appsDone = true
                } else {
                    (batch, cursor) = try tx.pendingTokenSeals(notUnder: current, after: after, limit: batchSize)
                }
                var oldKeys: [Int64: SecureKey] = [:]
                for id in Set(batch.map(\.dataKeyId)) { oldKeys[id] = try dataKey(id: id, in: tx) }
                let legacy = legacyDataKeys.withLock { $0 }
                let resealed = try Self.reseal(batch, oldKeys: oldKeys, legacy: legacy, newKey: newKey, newKeyId: current)
                for (item, value) in zip(batch, resealed) {
                    try tx.reseal(item.kind, name: item.name, sealed: value.sealed, dataKeyId: current, metaMAC: value.metaMAC)
                }
                return batch.count
            }
            done += moved
            if moved > 0 { progress(done, max(total, done)) }
        }
        try store.write { _ = try $0.deleteUnusedDataKeys() }
        return done
    }

    /// Opens each value under its old data key and seals it under the new one, on every core: the
    /// crypto is independent per value, while SQLite's part stays on the writer's thread. A token's
    /// metadata must pass its check under the old key first (so an edit made behind the vault's back is
    /// refused, never blessed), and gets its MAC under the new key over the new sealed bytes.
    static func reseal(_ batch: [PendingSeal], oldKeys: [Int64: SecureKey], legacy: Set<Int64>, newKey: SecureKey,
                       newKeyId: Int64) throws -> [(sealed: Data, metaMAC: Data?)] {
        final class Slots: @unchecked Sendable {
            var values: [(sealed: Data, metaMAC: Data?)?]
            var failure: PendingSeal?
            let lock = NSLock()
            init(_ n: Int) { values = Array(repeating: nil, count: n) }
        }
        let slots = Slots(batch.count)
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, batch.count / 256 + 1))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let range = (batch.count * w / workers)..<(batch.count * (w + 1) / workers)
            for i in range {
                let item = batch[i]
                let context: SealContext = item.kind == .token ? .token(item.name) : .appSecret(item.name)
                guard let key = oldKeys[item.dataKeyId],
                      let plain = try? item.sealed.withUnsafeBytes({ try Sealer.open($0, key: key, context: context) }),
                      item.record.map({ MetadataMAC.isAuthentic($0, key: key, legacy: legacy.contains($0.dataKeyId)) }) ?? true else {
                    slots.lock.withLock { slots.failure = slots.failure ?? item }
                    return
                }
                let sealed = Data(Sealer.seal(plain, key: newKey, context: context))
                let mac = item.record.map { r -> Data in
                    var moved = r
                    moved.sealed = sealed
                    moved.dataKeyId = newKeyId
                    return MetadataMAC.mac(moved, key: newKey)
                }
                slots.lock.withLock { slots.values[i] = (sealed, mac) }
            }
        }
        if let bad = slots.failure {
            throw VaultError.integrity(what: bad.kind == .token ? "token or its metadata" : "app secret of", name: bad.name)
        }
        return slots.values.map { $0! }
    }

    /// Makes a master key file that nothing uses yet, for an admin to copy to every host of a shared store
    /// before `key rotate --to ID` puts it to use. Returns its id.
    public func createMasterKey(passphrase newPassphrase: SecretBytes? = nil, strength: PassphraseKDF.Strength = .moderate) throws -> String {
        try (newPassphrase.map { try keyring.createPassphraseKey(passphrase: $0, strength: strength) } ?? keyring.createRandomKey()).id
    }

    /// Removes a master key from the keyring (overwriting a key file first). Refused while any data key
    /// is wrapped under it.
    public func retireMasterKey(id: String, beforeCommit: () throws -> Void = {}) throws {
        guard let info = try masterKeys().first(where: { $0.id == id }), info.source != nil else {
            throw VaultError.missingMasterKey(id: id, keyring: keyring.directory)
        }
        guard info.dataKeys == 0 else {
            throw StoreError.inUse(what: "master key", name: id,
                                   by: "\(info.dataKeys) data key(s) sealing \(info.sealed) token(s): run `tokenvault key rotate` first")
        }
        try beforeCommit()
        try keyring.destroy(id: id)
    }
}
