import Foundation
import GRDB
import MetaLifecycle
import TestSupport
import Testing
import VaultCore
import VaultStores
@testable import VaultSQLite

/// What SQLite does with the daemon's recurring queries on a large vault: the re-checker asks every
/// minute which tokens Meta can check, and must not read every token to find the few with an app.
@Suite("SQLite query plans")
struct SQLiteQueryPlanTests {
    /// The plan's lines, as `EXPLAIN QUERY PLAN` gives them.
    func plan(_ sql: String, path: String) throws -> [String] {
        try DatabaseQueue(path: path).read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql).map { $0["detail"] as String }
        }
    }

    func fill(_ store: any VaultStorage, plain: Int) throws {
        try store.write { tx in
            let k = try tx.insertDataKey(DataKeyRecord(masterKeyId: "m1", wrapped: Data([1, 2, 3]), createdAt: 1, isCurrent: true)).id!
            try tx.saveApp(AppRecord(name: "acme", appId: "1", sealedSecret: Data([1]), dataKeyId: k, now: 1), replace: false)
            for i in 0..<plain {
                try tx.saveToken(TokenRecord(name: "plain/\(i)", kind: "other", app: nil, sealed: Data([7]), dataKeyId: k, now: 1), replace: false)
            }
            for name in ["acme/b", "acme/a"] {
                var r = TokenRecord(name: name, kind: "system_user", app: "acme", sealed: Data([7]), dataKeyId: k, now: 1)
                r.checkedAt = 50
                try tx.saveToken(r, replace: false)
            }
        }
    }

    func candidates(_ store: any VaultStorage) throws -> [CheckCandidate] {
        try store.read { tx in try #require(tx as? any LifecycleStateTransaction).checkCandidates() }
    }

    @Test func theCheckCandidatesComeFromTheIndexAloneNotAScanOfEveryToken() throws {
        let dir = TempDir()
        let path = dir.path + "/vault.db"
        let store = try StoreLocation.sqlite(path: path).open(create: true, listen: false)
        try fill(store, plain: 500)
        let lines = try plan(SQLiteTransaction.checkCandidatesSQL, path: path)
        #expect(lines.contains { $0.contains("COVERING INDEX tokens_with_app") }, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("SCAN tokens") }, "\(lines)")
        #expect(try candidates(store).map(\.name) == ["acme/a", "acme/b"])
        #expect(try candidates(store).first == CheckCandidate(name: "acme/a", checkedAt: 50, expiresAt: nil, dataAccessExpiresAt: nil,
                                                               kind: "system_user", app: "acme"))
    }

    @Test func aVaultMadeBeforeTheCoveringIndexGetsItWhenOpened() throws {
        let dir = TempDir()
        let path = dir.path + "/vault.db"
        let old = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(old, upTo: "v9: Meta token state and check history")
        try old.close()
        let store = try StoreLocation.sqlite(path: path).open(create: false, listen: false)
        try fill(store, plain: 50)
        let index = try DatabaseQueue(path: path).read { db in
            try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'tokens_with_app'")
        }
        #expect(index?.contains("kind") == true)
        #expect(try candidates(store).map(\.name) == ["acme/a", "acme/b"])
    }
}
