import Foundation
import MetaLifecycle
import VaultAudit
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

/// What every store backend must do, run against each (see ``Backend``). These talk to the seam itself —
/// the protocols the vault core owns — and then through the vault, so a backend that passes here is one
/// the vault can stand on.
@Suite("One store contract, every backend", .serialized)
struct StoreBehaviourTests {
    @Test func thePostgreSQLClusterIsThereWhenTheRunPromisedOne() {
        #expect(!PostgresServer.isRequired || PostgresServer.isAvailable,
                "make test starts a PostgreSQL cluster (scripts/with-postgres.sh); TOKENVAULT_TEST_PG_SOCKET is unset")
    }

    func key(_ store: any VaultStorage, current: Bool = true) throws -> Int64 {
        try store.write { try $0.insertDataKey(DataKeyRecord(masterKeyId: "m1", wrapped: Data([1, 2, 3]), createdAt: 1, isCurrent: current)).id! }
    }

    func token(_ name: String, key: Int64, app: String? = nil) -> TokenRecord {
        var r = TokenRecord(name: name, kind: "user", app: app, sealed: Data(name.utf8), dataKeyId: key, now: 100)
        r.metaMAC = Data([9, 9])
        return r
    }

    @Test(arguments: Backend.all) func tokensRoundTripWithTheReplaceRules(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k = try key(store)
        var a = token("acme/a", key: k)
        a.scopes = "[\"ads_read\"]"
        a.expiresAt = 1_900_000_000
        a.valid = true
        try store.write { try $0.saveToken(a, replace: false) }
        #expect(try store.token(named: "acme/a") == a)
        #expect(try store.read { try $0.token(named: "acme/a") } == a)
        #expect(throws: StoreError.alreadyExists(what: "token", name: "acme/a")) { try store.write { try $0.saveToken(a, replace: false) } }

        var replaced = token("acme/a", key: k)
        replaced.createdAt = 555
        replaced.updatedAt = 777
        try store.write { try $0.saveToken(replaced, replace: true) }
        let stored = try #require(try store.token(named: "acme/a"))
        #expect(stored.createdAt == 100, "a replace keeps the creation time")
        #expect(stored.updatedAt == 777 && stored.expiresAt == nil && stored.valid == nil && stored.scopes == "[]")

        #expect(throws: StoreError.notFound(what: "token", name: "nope")) { try store.write { try $0.updateToken(self.token("nope", key: k)) } }
        #expect(try store.write { try $0.deleteToken(named: "acme/a") })
        #expect(try store.write { try $0.deleteToken(named: "acme/a") } == false)
        #expect(try store.token(named: "acme/a") == nil)
    }

    @Test(arguments: Backend.all) func namesSortByBytesWhateverTheLocale(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k = try key(store)
        let names = ["b", "B", "a/z", "a/Z", "é", "_x", "a-1", "a.1"]
        try store.write { tx in for n in names { try tx.saveToken(self.token(n, key: k), replace: false) } }
        let sorted = names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        #expect(try store.tokenNames() == sorted)
        #expect(try store.read { try $0.tokens() }.map(\.name) == sorted)
    }

    @Test(arguments: Backend.all) func aTransactionThatThrowsChangesNothing(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k = try key(store)
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try store.write { tx in
                try tx.saveToken(self.token("x", key: k), replace: false)
                try tx.setMeta("m", "v")
                throw Boom()
            }
        }
        #expect(try store.token(named: "x") == nil)
        #expect(try store.read { try $0.meta("m") } == nil)
        // The connection is usable afterwards, even after a statement failed inside the transaction.
        #expect(throws: StoreError.self) { try store.write { tx in try tx.saveToken(self.token("y", key: 999), replace: false) } }
        try store.write { try $0.saveToken(self.token("y", key: k), replace: false) }
        #expect(try store.tokenNames() == ["y"])
    }

    @Test(arguments: Backend.all) func oneDataKeyIsCurrentAndUnusedOnesGo(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k1 = try key(store)
        let audit = try store.write {
            try $0.insertDataKey(DataKeyRecord(masterKeyId: "m1", wrapped: Data([7]), createdAt: 2, isCurrent: false, purpose: "audit")).id!
        }
        try store.write { tx in
            try tx.saveToken(self.token("t1", key: k1), replace: false)
            try tx.saveApp(AppRecord(name: "app", appId: "1", sealedSecret: Data([5]), dataKeyId: k1, now: 1), replace: false)
        }
        let k2 = try key(store)
        #expect(try store.read { try $0.currentDataKey()?.id } == k2)
        #expect(try store.read { try $0.dataKeys().filter(\.isCurrent).map(\.id) } == [k2])
        #expect(try store.read { try $0.auditKey()?.id } == audit)
        #expect(try store.read { try $0.sealCountsByDataKey() } == [k1: 2])
        #expect(try store.read { try $0.pendingSealCount(notUnder: k2) } == 2)
        #expect(try store.write { try $0.deleteUnusedDataKeys() } == 0, "k1 still seals two values")
        try store.write { tx in
            try tx.reseal(.token, name: "t1", sealed: Data([1]), dataKeyId: k2, metaMAC: Data([2]))
            try tx.reseal(.app, name: "app", sealed: Data([3]), dataKeyId: k2, metaMAC: nil)
        }
        #expect(try store.token(named: "t1")?.metaMAC == Data([2]))
        #expect(try store.appSeal(named: "app") == AppSeal(appId: "1", sealed: Data([3]), dataKeyId: k2))
        #expect(try store.write { try $0.deleteUnusedDataKeys() } == 1)
        #expect(try store.read { try $0.dataKeys().map(\.id) } == [audit, k2].sorted())
        // A key copied in with its id (a migration) keeps it, and later keys never collide with it.
        try store.write { _ = try $0.insertDataKey(DataKeyRecord(id: 40, masterKeyId: "m2", wrapped: Data([4]), createdAt: 3, isCurrent: false)) }
        #expect(try key(store, current: false) > 40)
    }

    @Test(arguments: Backend.all) func resealPagesVisitEachRowOnce(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let old = try key(store)
        try store.write { tx in for i in 0..<25 { try tx.saveToken(self.token(String(format: "t/%02d", i), key: old), replace: false) } }
        let new = try key(store)
        try store.write { tx in try tx.reseal(.token, name: "t/03", sealed: Data([0]), dataKeyId: new, metaMAC: nil) }
        var seen: [String] = [], cursor: String? = "", pages = 0
        while let after = cursor {
            let (batch, next) = try store.read { try $0.pendingTokenSeals(notUnder: new, after: after, limit: 10) }
            seen += batch.map(\.name)
            #expect(batch.allSatisfy { $0.record?.name == $0.name && $0.dataKeyId == old })
            cursor = next
            pages += 1
        }
        #expect(pages == 3)
        #expect(seen == (0..<25).filter { $0 != 3 }.map { String(format: "t/%02d", $0) })
    }

    @Test(arguments: Backend.all) func appsAndTheirTokenCounts(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k = try key(store)
        let app = AppRecord(name: "acme", appId: "123", sealedSecret: Data([1]), dataKeyId: k, now: 10)
        try store.write { try $0.saveApp(app, replace: false) }
        #expect(throws: StoreError.alreadyExists(what: "app", name: "acme")) { try store.write { try $0.saveApp(app, replace: false) } }
        var newer = AppRecord(name: "acme", appId: "456", sealedSecret: Data([2]), dataKeyId: k, now: 20)
        newer.updatedAt = 21
        try store.write { try $0.saveApp(newer, replace: true) }
        let stored = try #require(try store.read { try $0.app(named: "acme") })
        #expect(stored.appId == "456" && stored.createdAt == 10 && stored.updatedAt == 21)
        try store.write { tx in
            try tx.saveToken(self.token("a1", key: k, app: "acme"), replace: false)
            try tx.saveToken(self.token("a2", key: k, app: "acme"), replace: false)
            try tx.saveToken(self.token("n", key: k), replace: false)
        }
        #expect(try store.read { try $0.tokenCountsByApp() } == ["acme": 2])
        #expect(throws: StoreError.self) { try store.write { try $0.saveToken(self.token("x", key: k, app: "ghost"), replace: false) } }
    }

    @Test(arguments: Backend.all) func checkpointsAreKeptPerHostOnASharedStore(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        try store.write { try $0.saveAuditCheckpoint(AuditCheckpointRecord(host: "h1", seq: 5, hash: "aa", mac: "bb", updatedAt: 1)) }
        try store.write { try $0.saveAuditCheckpoint(AuditCheckpointRecord(host: "h2", seq: 9, hash: "cc", mac: "dd", updatedAt: 2)) }
        if store.isShared {
            #expect(try store.read { try $0.auditCheckpoint(host: "h1")?.seq } == 5)
            #expect(try store.read { try $0.auditCheckpoints().map(\.host) } == ["h1", "h2"])
        } else {
            // One host's store: one checkpoint, whatever the host is called.
            #expect(try store.read { try $0.auditCheckpoint(host: "anything")?.seq } == 9)
            #expect(try store.read { try $0.auditCheckpoints().count } == 1)
        }
    }

    @Test(arguments: Backend.all) func theLifecycleStateLivesInTheSameTransactions(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let store = try f.open()
        let k = try key(store)
        var checked = token("acme/ads", key: k, app: nil)
        checked.checkedAt = 50
        checked.expiresAt = 60
        try store.write { tx in
            try tx.saveApp(AppRecord(name: "acme", appId: "1", sealedSecret: Data([1]), dataKeyId: k, now: 1), replace: false)
            checked.app = "acme"
            try tx.saveToken(checked, replace: false)
            try tx.saveToken(self.token("plain", key: k), replace: false)
        }
        let state = { (tx: any StorageTransaction) throws -> any LifecycleStateTransaction in
            try #require(tx as? any LifecycleStateTransaction)
        }
        #expect(try store.read { try state($0).checkCandidates() } == [CheckCandidate(name: "acme/ads", checkedAt: 50, expiresAt: 60, dataAccessExpiresAt: nil, kind: "user", app: "acme")])
        var owed = NotificationRecord(token: "acme/ads", state: "expiring", payload: "{}", pending: true, now: 100)
        try store.write { try state($0).saveNotification(owed) }
        #expect(try store.read { try state($0).dueNotifications(now: 100).map(\.token) } == ["acme/ads"])
        owed.attempts = 2
        owed.nextAttemptAt = 500
        owed.lastError = "smtp down"
        try store.write { try state($0).saveNotification(owed) }
        #expect(try store.read { try state($0).dueNotifications(now: 499) }.isEmpty)
        #expect(try store.read { try state($0).notification(token: "acme/ads") } == owed)
        #expect(try store.read { try state($0).notifications().count } == 1)

        // The lifecycle's token state and check history: saved, read back, pruned, and gone with the token.
        var m = MetaTokenState(token: "acme/ads", now: 100)
        m.state = TokenState.scopeMissing.rawValue
        m.requiredScopes = #"["ads_management"]"#
        m.requiredTargets = #"["act_101"]"#
        (m.userId, m.appId, m.issuedAt, m.appMismatch, m.lastSuccessAt, m.problemSince) = ("1021", "1384", 90, true, 100, 95)
        (m.refreshedAt, m.refreshError, m.refreshFailedAt, m.refreshFailedSeal) = (80, "Meta said no", 85, "0123abcd")
        try store.write { try state($0).saveMetaState(m) }
        #expect(try store.read { try state($0).metaState(token: "acme/ads") } == m)
        m.appMismatch = false
        m.refreshError = nil
        try store.write { try state($0).saveMetaState(m) }
        #expect(try store.read { try state($0).metaStates() } == [m])
        for t in [100, 200, 300] as [Int64] {
            try store.write {
                try state($0).appendCheck(MetaCheckRecord(token: "acme/ads", checkedAt: t, verdict: "valid", state: "ok", scopes: #"["ads_read"]"#,
                                                          expiresAt: t + 1, dataAccessExpiresAt: nil, error: t == 200 ? "x" : nil))
            }
        }
        let history = try store.read { try state($0).checks(token: "acme/ads", limit: 10) }
        #expect(history.map(\.checkedAt) == [100, 200, 300] && history[1].error == "x" && history.allSatisfy { $0.id != nil })
        #expect(try store.read { try state($0).checks(token: "acme/ads", limit: 2) }.map(\.checkedAt) == [200, 300])
        #expect(try store.read { try state($0).allChecks() }.count == 3)
        try store.write { try state($0).pruneChecks(before: 150) }
        #expect(try store.read { try state($0).checks(token: "acme/ads", limit: 10) }.map(\.checkedAt) == [200, 300])
        // The pause Meta asked for: one row, replaced, cleared.
        #expect(try store.read { try state($0).sweepPause() } == nil)
        try store.write { try state($0).saveSweepPause(SweepPauseRecord(untilAt: 900, reason: "throttled", throttles: 1)) }
        try store.write { try state($0).saveSweepPause(SweepPauseRecord(untilAt: 1200, reason: "throttled again", throttles: 2)) }
        #expect(try store.read { try state($0).sweepPause() } == SweepPauseRecord(untilAt: 1200, reason: "throttled again", throttles: 2))
        try store.write { try state($0).saveSweepPause(nil) }
        #expect(try store.read { try state($0).sweepPause() } == nil)
        _ = try store.write { try $0.deleteToken(named: "acme/ads") }
        #expect(try store.read { try state($0).metaStates() }.isEmpty)
        #expect(try store.read { try state($0).allChecks() }.isEmpty)
    }

    /// A reader that remembers rows never outlives a commit made elsewhere — another connection here, which
    /// is what another process (SQLite) or another host (PostgreSQL) is. SQLite sees it at the next burst;
    /// PostgreSQL within the change feed's delivery (the daemon's bound: 100 ms).
    @Test(arguments: Backend.all) func aRememberingReaderSeesEveryCommitMadeElsewhere(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let serving = try f.open(listen: true)
        let writer = try f.open()
        let k = try key(writer)
        try writer.write { try $0.saveToken(self.token("t", key: k), replace: false) }
        let reader = serving.makeHeldReader()
        for _ in 0..<3 {
            #expect(try reader.token(named: "t") != nil)
            reader.release()
        }
        #expect(reader.rememberedCount == 1)
        var changed = token("t", key: k)
        changed.sealed = Data("changed".utf8)
        try writer.write { try $0.updateToken(changed) }
        let seen = try eventually(within: 2) {
            defer { reader.release() }
            return try reader.token(named: "t")?.sealed == Data("changed".utf8)
        }
        #expect(seen != nil && seen! < 0.1, "a change must be served within 100 ms (took \(seen.map { "\($0)" } ?? "more than 2") s)")
        _ = try writer.write { try $0.deleteToken(named: "t") }
        let gone = try eventually(within: 2) {
            defer { reader.release() }
            return try reader.token(named: "t") == nil
        }
        #expect(gone != nil && gone! < 0.1)
        serving.close()
        writer.close()
    }

    @Test(arguments: Backend.all) func oneRotationAtATime(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let a = try f.open(), b = try f.open()
        _ = try a.withRotationLock(holder: "pid 1 on host-a", wait: false) {
            #expect(throws: StoreError.locked(what: "the key rotation lock of \(b.location)", holder: "pid 1 on host-a")) {
                try b.withRotationLock(holder: "pid 2 on host-b", wait: false) {}
            }
        }
        // Released: the other may take it now.
        var ran = false
        try b.withRotationLock(holder: "pid 2 on host-b", wait: false) { ran = true }
        #expect(ran)
    }

    /// One sweeper among all the processes (and hosts) that share a store.
    @Test(arguments: Backend.all) func aLeaseIsHeldByOneProcessAtATime(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let a = try f.open(), b = try f.open()
        let held = try #require(try a.tryLease("meta-sweep", holder: "a"))
        #expect(try b.tryLease("meta-sweep", holder: "b") == nil)
        #expect(try b.tryLease("other-duty", holder: "b") != nil, "leases are by name")
        held.release()
        let next = try #require(try b.tryLease("meta-sweep", holder: "b"))
        #expect(try a.tryLease("meta-sweep", holder: "a") == nil)
        next.release()
    }

    @Test func auditChunksNeverSpanAJumpInSeqs() {
        let records = [1, 2, 3, 7, 8].map { AuditCopyRecord(seq: Int64($0), line: "{\"seq\":\($0)}") }
        let chunks = AuditCopyChunk.chunks(records, size: 2)
        #expect(chunks.map(\.firstSeq) == [1, 3, 7])
        #expect(chunks.flatMap(\.records) == records)
    }

    // MARK: - through the vault

    @Test(arguments: Backend.all) func aVaultWorksTheSameOnEveryBackend(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let vault = try f.createVault()
        try vault.addApp(name: "acme", appId: "99", secret: secret("app-secret"))
        try vault.put((0..<300).map { ImportEntry(name: "t/\($0)", secret: secret("EAAB-\($0)"), app: $0 % 3 == 0 ? "acme" : nil) }, replace: false)
        #expect(try vault.names().count == 300)
        try vault.rotateMasterKey()
        try vault.beginReseal()
        #expect(try vault.continueReseal(batchSize: 64) == 301)
        let again = try f.openVault()
        for i in stride(from: 0, to: 300, by: 7) {
            #expect(try again.get(name: "t/\(i)").secret.unsafeStringCopy() == "EAAB-\(i)")
        }
        #expect(try again.appSecret(app: "acme").secret.unsafeStringCopy() == "app-secret")
        #expect(try again.masterKeys().filter { $0.state == "current" }.count == 1)
        try again.remove(name: "t/0")
        #expect(throws: StoreError.self) { try vault.get(name: "t/0") }
        #expect(throws: VaultError.alreadyInitialised(home: backend == .sqlite ? f.home.root : f.location.description)) {
            try Vault.create(home: f.home, store: f.location)
        }
    }

    /// What `watch` hears: every put, rm and lifecycle replacement, numbered in commit order from any
    /// connection, readable from another, the oldest pruned past `TokenChange.kept`.
    @Test(arguments: Backend.all) func tokenChangesAreNumberedInCommitOrder(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let vault = try f.createVault()
        let other = try f.openVault()
        #expect(try other.lastChange() == 0)
        try vault.put(name: "a/1", secret: secret("EAAB-1"))
        try other.put([ImportEntry(name: "a/2", secret: secret("EAAB-2")), ImportEntry(name: "b/3", secret: secret("EAAB-3"))], replace: false)
        try vault.replaceSecret(name: "a/1", secret: secret("EAAB-1b"), expiresAt: nil)
        try other.remove(name: "a/2")
        #expect(throws: StoreError.self) { try vault.put(name: "a/1", secret: secret("EAAB-x"), replace: false) }  // rolled back: no change
        let all = try vault.changes(after: 0)
        #expect(all.map(\.name) == ["a/1", "a/2", "b/3", "a/1", "a/2"])
        #expect(all.map(\.kind) == [.replaced, .replaced, .replaced, .refreshed, .removed])
        #expect(all.map(\.seq) == Array(1...5).map(Int64.init))
        #expect(try other.lastChange() == 5)
        #expect(try other.changes(after: 3).map(\.seq) == [4, 5])
        #expect(try other.changes(after: 1, limit: 2).map(\.seq) == [2, 3])

        // A bulk import past the kept window leaves the newest changes only, numbered on.
        try vault.put((0..<Int(TokenChange.kept) + 10).map { ImportEntry(name: "bulk/\($0)", secret: secret("EAAB-\($0)")) }, replace: false)
        let last = try vault.lastChange()
        #expect(last == 5 + TokenChange.kept + 10)
        #expect(try f.rawInt("SELECT count(*) FROM token_changes") == Int(TokenChange.kept))
        #expect(try vault.changes(after: 0, limit: 1).first?.seq == last - TokenChange.kept + 1)
    }

    /// The store holds no key: whoever can write it (a database admin, here) cannot change a token's value
    /// or metadata without the read failing closed.
    @Test(arguments: Backend.all) func editsBehindTheVaultsBackAreRefused(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        let vault = try f.createVault()
        try vault.put(name: "a", secret: secret("EAAB-aaa"))
        try vault.put(name: "b", secret: secret("EAAB-bbb"))
        try f.raw("UPDATE tokens SET kind = 'page' WHERE name = 'a'")
        #expect(throws: VaultError.integrity(what: "metadata of token", name: "a")) { try vault.get(name: "a") }
        let sealedB = try #require(try vault.record(named: "b")?.sealed)
        try f.raw("UPDATE tokens SET sealed = ? WHERE name = 'a'", blob: sealedB)
        #expect(throws: VaultError.integrity(what: "token", name: "a")) { try vault.get(name: "a") }
        #expect(try vault.get(name: "b").secret.unsafeStringCopy() == "EAAB-bbb")
    }

    @Test(arguments: Backend.all) func aStoreWithNoVaultIsNotInitialised(_ backend: Backend) throws {
        let f = try StoreFixture(backend)
        #expect(throws: StoreError.notInitialised(path: f.location.description)) { try f.openVault() }
    }
}
