import Foundation
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@Suite("Key rotation, re-seal and retirement")
struct KeyRotationTests {
    let dir = TempDir()

    func fill(_ vault: Vault, count: Int) throws {
        try vault.addApp(name: "acme", appId: "99", secret: secret("app-secret-rot"))
        try vault.put((0..<count).map { ImportEntry(name: "t/\($0)", secret: secret("EAAB-rot-\($0)"), app: $0 % 7 == 0 ? "acme" : nil) },
                      replace: false)
    }

    func expectAllOpen(_ home: VaultHome, count: Int) throws {
        let fresh = try Vault.open(home: home)
        for i in 0..<count {
            #expect(try fresh.get(name: "t/\(i)").secret.unsafeStringCopy() == "EAAB-rot-\(i)")
        }
        #expect(try fresh.appSecret(app: "acme").secret.unsafeStringCopy() == "app-secret-rot")
    }

    @Test func rotateAndResealThousandsOfTokens() throws {
        let (vault, home) = try makeVault(dir)
        try fill(vault, count: 3000)
        let first = try vault.masterKeys()
        #expect(first.count == 1 && first[0].state == "current")

        let second = try vault.rotateMasterKey()
        var keys = try vault.masterKeys()
        #expect(keys.first { $0.id == second }?.state == "current")
        #expect(keys.first { $0.id == first[0].id }?.state == "unused")
        try expectAllOpen(home, count: 3000)

        let sealedBefore = try sqlData(home, "SELECT sealed FROM tokens WHERE name = 't/5'")
        try vault.rotateMasterKey()
        try vault.beginReseal()
        #expect(try vault.pendingReseal() == 3001)
        var calls = 0
        #expect(try vault.continueReseal(batchSize: 500) { _, _ in calls += 1 } == 3001)
        #expect(calls == 7)
        #expect(try vault.pendingReseal() == 0)
        #expect(try sqlData(home, "SELECT sealed FROM tokens WHERE name = 't/5'") != sealedBefore)
        keys = try vault.masterKeys()
        #expect(keys.filter { $0.state == "current" }.count == 1)
        // Old data keys that seal nothing are gone.
        #expect(try sqlInt(home, "SELECT count(*) FROM data_keys WHERE purpose = 'tokens'") == 1)
        try expectAllOpen(home, count: 3000)
    }

    @Test func retireRefusesAKeyInUseAndSucceedsAfterRotation() throws {
        let (vault, home) = try makeVault(dir)
        try fill(vault, count: 50)
        let old = try vault.masterKeys()[0].id
        #expect { try vault.retireMasterKey(id: old) } throws: { error in
            guard case StoreError.inUse = error else { return false }
            return "\(error)".contains("key rotate")
        }
        let oldFile = try fileBytes(vault.keyring.entries()[0].path)
        try vault.rotateMasterKey()
        try vault.retireMasterKey(id: old)
        #expect(try vault.keyring.entries().map(\.id).contains(old) == false)
        try expectAllOpen(home, count: 50)

        // The retired key's file restored from an old backup changes nothing: the current key is enough.
        let path = home.keysDirectory + "/" + old
        _ = FileManager.default.createFile(atPath: path, contents: Data(oldFile), attributes: [.posixPermissions: 0o600])
        #expect(try Vault.open(home: home).masterKeys().first { $0.id == old }?.state == "unused")
        try expectAllOpen(home, count: 50)
        // And a vault whose only key file is the retired one does not open: that key truly protects nothing.
        let current = try vault.masterKeys().first { $0.state == "current" }!.id
        try FileManager.default.moveItem(atPath: home.keysDirectory + "/" + current, toPath: dir.path + "/aside")
        #expect(throws: VaultError.missingMasterKey(id: current, keyring: home.keysDirectory)) { try Vault.open(home: home).get(name: "t/1") }
    }

    @Test func passphraseMasterKeyRotation() throws {
        let (vault, home) = try makeVault(dir)
        try fill(vault, count: 20)
        let id = try vault.rotateMasterKey(passphrase: secret("new passphrase 42"), strength: .interactive)
        #expect(try vault.keyring.entry(id: id)?.source == .passphrase)
        let reopened = try Vault.open(home: home, passphrase: { _ in secret("new passphrase 42") })
        #expect(try reopened.get(name: "t/3").secret.unsafeStringCopy() == "EAAB-rot-3")
        #expect(throws: VaultError.wrongPassphrase(id: id)) { try Vault.open(home: home, passphrase: { _ in secret("nope") }).get(name: "t/3") }
    }

    @Test func rotationWithAMissingKeyChangesNothing() throws {
        let (vault, home) = try makeVault(dir)
        try fill(vault, count: 5)
        let entry = try vault.keyring.entries()[0]
        let bytes = fileBytes(entry.path)
        try FileManager.default.removeItem(atPath: entry.path)
        let fresh = try Vault.open(home: home)
        #expect(throws: VaultError.self) { try fresh.rotateMasterKey() }
        #expect(try fresh.keyring.entries().isEmpty, "no new key file was left behind")
        _ = FileManager.default.createFile(atPath: entry.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        try expectAllOpen(home, count: 5)
    }
}

