import Foundation
import MetaLifecycle
import TestSupport
import Testing
import VaultAudit
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@Suite("Moving a vault between stores", .serialized, .enabled(if: PostgresServer.isAvailable))
struct StoreMigrationTests {
    /// A vault with every kind of record: tokens with and without apps and check results, two data keys
    /// and the audit key, a notification owed, a checkpoint, and an audit chain.
    func richVault(_ f: StoreFixture) throws -> Vault {
        let vault = try f.createVault(host: "host-a")
        try vault.addApp(name: "acme", appId: "42", secret: secret("app-secret-42"))
        try vault.put((0..<200).map { ImportEntry(name: "t/\($0)", secret: secret("EAAB-\($0)"), app: $0 % 4 == 0 ? "acme" : nil) }, replace: false)
        try vault.rotateMasterKey()
        try vault.beginReseal()
        try vault.continueReseal(batchSize: 50)
        try vault.put(name: "late", secret: secret("EAAB-late"))
        try vault.change { change in
            try change.updateToken(named: "t/0") { r in
                r.valid = false
                r.checkedAt = 1_800_000_000
                r.lastError = "{\"code\":190}"
            }
            let lifecycle = try change.state((any LifecycleStateTransaction).self)
            try lifecycle.saveNotification(NotificationRecord(token: "t/0", state: "invalid:190/460", payload: "{}", pending: true, now: 1_800_000_000))
            var m = MetaTokenState(token: "t/0", now: 1_800_000_000)
            (m.state, m.requiredScopes, m.userId) = ("invalid", #"["ads_management"]"#, "1021")
            try lifecycle.saveMetaState(m)
            for t in [1_700_000_000, 1_800_000_000] as [Int64] {
                try lifecycle.appendCheck(MetaCheckRecord(token: "t/0", checkedAt: t, verdict: t == 1_700_000_000 ? "valid" : "invalid",
                                                          state: t == 1_700_000_000 ? "ok" : "invalid", scopes: "[]", expiresAt: nil,
                                                          dataAccessExpiresAt: nil, error: nil))
            }
        }
        let log = try AuditLog.open(for: vault)
        for i in 0..<50 {
            try log.appendAndWait(AuditEvent(action: "get", channel: .cli, actor: AuditActor(uid: 0, gid: 0, pid: 1), token: "t/\(i)", outcome: .granted))
        }
        log.close()
        return vault
    }

    func expectSame(_ copy: Vault) throws {
        #expect(try StoreMigration.openEverything(copy) == 202)
        #expect(try copy.get(name: "t/8").secret.unsafeStringCopy() == "EAAB-8")
        #expect(try copy.show(name: "t/0").valid == false)
        #expect(try copy.appSecret(app: "acme").secret.unsafeStringCopy() == "app-secret-42")
        let owed = try copy.inspect { try $0.state((any LifecycleStateTransaction).self).notification(token: "t/0") }
        #expect(owed?.state == "invalid:190/460" && owed?.pending == true)
        let (state, history) = try copy.inspect { change in
            let lifecycle = try change.state((any LifecycleStateTransaction).self)
            return (try lifecycle.metaState(token: "t/0"), try lifecycle.checks(token: "t/0", limit: 10))
        }
        #expect(state?.required == ["ads_management"] && state?.state == "invalid" && state?.userId == "1021")
        #expect(history.map(\.verdict) == ["valid", "invalid"], "the check history, in order")
    }

    @Test func sqliteToPostgresAndBackRoundTripsEverything() throws {
        let f = try StoreFixture(.sqlite)
        let vault = try richVault(f)
        let url = try PostgresServer.freshDatabase()
        let postgres = try StoreLocation.parse(url)
        let there = try StoreMigration.copy(vault, to: postgres, force: false)
        #expect(there.tokens == 201 && there.apps == 1 && there.dataKeys == 2 && there.notifications == 1)
        var local = 0
        try AuditLocalLog.records(in: f.home.auditDirectory) { _ in local += 1 }
        #expect(local >= 50 && there.auditRecords["host-a"] == local, "every record of the local chain is in the copy")
        let onPostgres = try Vault.open(home: f.home, hostID: "host-a", store: postgres)
        try expectSame(onPostgres)
        #expect(try onPostgres.auditCheckpoint()?.seq == vault.auditCheckpoint()?.seq)

        // Refused into an occupied target, replaced with --force, and the same again is safe.
        #expect(throws: StoreMigration.Refused.self) { try StoreMigration.copy(vault, to: postgres, force: false) }
        #expect(try StoreMigration.copy(vault, to: postgres, force: true).tokens == 201)
        #expect(try StoreMigration.copy(vault, to: postgres, force: true).tokens == 201)

        // And back to another SQLite file, from PostgreSQL.
        let back = StoreLocation.sqlite(path: f.dir.path + "/back.db")
        let returned = try StoreMigration.copy(onPostgres, to: back, force: false)
        #expect(returned.tokens == 201 && returned.auditRecords["host-a"] == local)
        try expectSame(try Vault.open(home: f.home, hostID: "host-a", store: back))
        #expect(throws: StoreMigration.Refused.self) { try StoreMigration.copy(onPostgres, to: postgres, force: false) }
    }

    /// The target's schema rules still stand: a copy that the target refuses part of lands not at all.
    @Test func aFailedCopyLeavesTheTargetAsItWas() throws {
        let f = try StoreFixture(.sqlite)
        let vault = try richVault(f)
        let url = try PostgresServer.freshDatabase()
        let postgres = try StoreLocation.parse(url)
        _ = try postgres.open(create: true)  // migrated, empty
        // A trigger on the target refuses the 150th token mid-copy.
        try PostgresServer.psql(PostgresServer.database(of: url), """
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
              IF NEW.name = 't/150' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON tokens FOR EACH ROW EXECUTE FUNCTION refuse();
            """)
        #expect(throws: (any Error).self) { try StoreMigration.copy(vault, to: postgres, force: false) }
        #expect(try PostgresServer.psql(PostgresServer.database(of: url), "SELECT count(*) FROM tokens") == "0")
        #expect(try PostgresServer.psql(PostgresServer.database(of: url), "SELECT count(*) FROM data_keys") == "0")
    }
}
