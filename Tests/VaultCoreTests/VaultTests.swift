import Foundation
import GRDB
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultSQLite
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@Suite("Vault: sealing, keys and integrity")
struct VaultTests {
    @Test func roundTripOfManyTokens() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        let entries = (0..<500).map { ImportEntry(name: "svc/tok-\($0)", secret: secret("EAAB\($0)-" + String(repeating: "x", count: $0 % 300))) }
        try vault.put(entries, replace: false)
        // A second process's view: reopen from disk.
        let reopened = try Vault.open(home: home)
        for i in 0..<500 {
            let opened = try reopened.get(name: "svc/tok-\(i)")
            #expect(opened.secret.unsafeStringCopy() == "EAAB\(i)-" + String(repeating: "x", count: i % 300))
        }
        #expect(try reopened.list().count == 500)
    }

    /// A held reader reads one snapshot until released, then sees every write committed since.
    @Test func aHeldReaderSeesOneSnapshotUntilReleased() throws {
        let dir = TempDir()
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        try vault.put(name: "a", secret: secret("EAAB-one"))
        let reader = vault.makeHeldReader()
        #expect(try vault.get(name: "a", reader: reader).secret.withUnsafeBytes { Array($0) } == Array("EAAB-one".utf8))
        #expect((reader as? TokenReaders.HeldReader)?.isHolding == true)
        try vault.put(name: "a", secret: secret("EAAB-two"), replace: true)
        try vault.put(name: "b", secret: secret("EAAB-bee"))
        #expect(try vault.get(name: "a", reader: reader).secret.withUnsafeBytes { Array($0) } == Array("EAAB-one".utf8))
        #expect(throws: StoreError.self) { try vault.get(name: "b", reader: reader) }  // not in the snapshot
        reader.release()
        #expect((reader as? TokenReaders.HeldReader)?.isHolding == false)
        #expect(try vault.get(name: "a", reader: reader).secret.withUnsafeBytes { Array($0) } == Array("EAAB-two".utf8))
        #expect(try vault.get(name: "b", reader: reader).secret.withUnsafeBytes { Array($0) } == Array("EAAB-bee".utf8))
        reader.release()
        // While nothing is held, writers and checkpoints are not held back.
        try vault.remove(name: "b")
        #expect(throws: StoreError.self) { try vault.get(name: "b", reader: reader) }
    }

    /// A held reader remembers the rows it read, but any commit — here an attacker's raw write from another
    /// connection, and a revocation — is seen at the next burst, never served from memory.
    @Test func aHeldReaderForgetsItsRowsOnAnyCommit() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("EAAB-one"))
        try vault.put(name: "b", secret: secret("EAAB-bee"))
        let reader = vault.makeHeldReader()
        for _ in 0..<3 {
            #expect(try vault.get(name: "a", reader: reader).secret.unsafeStringCopy() == "EAAB-one")
            reader.release()
        }
        #expect(reader.rememberedCount == 1)
        // Same bytes, same burst or not: a tampered row is read afresh and refused.
        let sealed = try #require(try sqlData(home, "SELECT sealed FROM tokens WHERE name = 'a'"))
        var flipped = [UInt8](sealed)
        flipped[flipped.count - 1] ^= 1
        try tamper(home, "UPDATE tokens SET sealed = ? WHERE name = 'a'", [Data(flipped)])
        #expect(throws: VaultError.integrity(what: "token", name: "a")) { try vault.get(name: "a", reader: reader) }
        reader.release()
        try tamper(home, "UPDATE tokens SET sealed = ? WHERE name = 'a'", [sealed])
        #expect(try vault.get(name: "a", reader: reader).secret.unsafeStringCopy() == "EAAB-one")
        reader.release()
        // A revocation by another writer (a second Vault on its own connection, as the CLI is) shows at the next burst.
        try Vault.open(home: home).remove(name: "a")
        #expect(throws: StoreError.self) { try vault.get(name: "a", reader: reader) }
        #expect(reader.rememberedCount == 0)
        #expect(try vault.get(name: "b", reader: reader).secret.unsafeStringCopy() == "EAAB-bee")
        reader.release()
    }

    /// A row read once (a large vault read in no order) is not remembered; read again, it is, and its
    /// remembered copy is served checked.
    @Test func aHeldReaderRemembersARowAtItsSecondRead() throws {
        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("EAAB-one"))
        let reader = vault.makeHeldReader()
        #expect(try vault.get(name: "a", reader: reader).secret.unsafeStringCopy() == "EAAB-one")
        #expect(reader.rememberedCount == 0)
        #expect(!reader.isChecked("a"))
        #expect(try vault.get(name: "a", reader: reader).secret.unsafeStringCopy() == "EAAB-one")
        #expect(reader.rememberedCount == 1)
        #expect(reader.isChecked("a"))
        reader.release()
    }

    @Test func noPlaintextInTheDatabaseFiles() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        let token = "EAABplaintext-canary-7f3a9c"
        try vault.put(name: "canary", secret: secret(token))
        try vault.addApp(name: "acme", appId: "1234", secret: secret("appsecret-canary-77aa"))
        for suffix in ["", "-wal", "-shm"] {
            let bytes = fileBytes(home.databasePath + suffix)
            #expect(!bytes.contains(bytes: Array(token.utf8)), "token found in vault.db\(suffix)")
            #expect(!bytes.contains(bytes: Array("appsecret-canary".utf8)), "app secret found in vault.db\(suffix)")
        }
    }

    @Test func vaultFilesAreCreatedPrivate() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        func mode(_ p: String) -> mode_t { var st = stat(); stat(p, &st); return st.st_mode & 0o777 }
        #expect(mode(home.root) == 0o700)
        #expect(mode(home.keysDirectory) == 0o700)
        #expect(mode(home.databasePath) == 0o600)
        #expect(mode(home.databasePath + "-wal") == 0o600)
        for entry in try vault.keyring.entries() { #expect(mode(entry.path) == 0o600) }
    }

    @Test func initTwiceIsRefusedAndChangesNothing() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        #expect(throws: VaultError.alreadyInitialised(home: home.root)) { try Vault.create(home: home) }
        #expect(try Vault.open(home: home).get(name: "a").secret.unsafeStringCopy() == "t")
        #expect(try vault.keyring.entries().count == 1)
    }

    @Test func wrongMasterKeyIsAClearErrorAndChangesNothing() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        let keyPath = try vault.keyring.entries()[0].path
        let original = fileBytes(keyPath)
        let dbBefore = fileBytes(home.databasePath)
        _ = FileManager.default.createFile(atPath: keyPath, contents: Data(randomBytes(32)), attributes: [.posixPermissions: 0o600])
        let reopened = try Vault.open(home: home)
        #expect {
            try reopened.get(name: "a")
        } throws: { error in
            guard case VaultError.wrongMasterKey = error else { return false }
            return "\(error)".contains(keyPath)
        }
        #expect(throws: VaultError.self) { try reopened.put(name: "b", secret: secret("u")) }
        #expect(fileBytes(home.databasePath) == dbBefore)
        _ = FileManager.default.createFile(atPath: keyPath, contents: Data(original), attributes: [.posixPermissions: 0o600])
        #expect(try Vault.open(home: home).get(name: "a").secret.unsafeStringCopy() == "t")
    }

    @Test func missingMasterKeyNamesTheKey() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        let entry = try vault.keyring.entries()[0]
        try FileManager.default.removeItem(atPath: entry.path)
        #expect(throws: VaultError.missingMasterKey(id: entry.id, keyring: home.keysDirectory)) {
            try Vault.open(home: home).get(name: "a")
        }
        // Metadata needs no key.
        #expect(try Vault.open(home: home).list().map(\.name) == ["a"])
    }

    @Test func truncatedKeyFileIsRejected() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        let path = try vault.keyring.entries()[0].path
        _ = FileManager.default.createFile(atPath: path, contents: Data(randomBytes(31)), attributes: [.posixPermissions: 0o600])
        #expect { try Vault.open(home: home).get(name: "a") } throws: { error in
            guard case VaultError.badKeyFile = error else { return false }
            return true
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o660])
    func groupOrWorldReadableKeyFileIsRefused(mode: Int) throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        let path = try vault.keyring.entries()[0].path
        chmod(path, mode_t(mode))
        #expect { try Vault.open(home: home).get(name: "a") } throws: { error in
            guard case VaultError.insecurePermissions(let p, _, let fix) = error else { return false }
            return p == path && fix == "chmod 600 \(path)" && "\(error)".contains("chmod 600")
        }
        chmod(path, 0o400)
        #expect(try Vault.open(home: home).get(name: "a").secret.unsafeStringCopy() == "t")
    }

    @Test func openKeyringDirectoryIsRefused() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        chmod(home.keysDirectory, 0o755)
        #expect(throws: VaultError.insecurePermissions(path: home.keysDirectory, mode: 0o755, fix: "chmod 700 \(home.keysDirectory)")) {
            try Vault.open(home: home).get(name: "a")
        }
    }

    @Test func everyFlippedBitOfAStoredRowIsCaught() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "acme/ads", secret: secret("EAAB-secret"))
        let db = try DatabaseQueue(path: home.databasePath)
        let sealed = try db.read { try Data.fetchOne($0, sql: "SELECT sealed FROM tokens WHERE name = 'acme/ads'")! }
        for index in 0..<sealed.count {
            var tampered = sealed
            tampered[index] ^= 0x01
            try db.write { try $0.execute(sql: "UPDATE tokens SET sealed = ? WHERE name = 'acme/ads'", arguments: [tampered]) }
            #expect(throws: VaultError.integrity(what: "token", name: "acme/ads")) { try Vault.open(home: home).get(name: "acme/ads") }
        }
        try db.write { try $0.execute(sql: "UPDATE tokens SET sealed = ? WHERE name = 'acme/ads'", arguments: [sealed]) }
        #expect(try Vault.open(home: home).get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-secret")
    }

    @Test func sealedValueCopiedOntoAnotherNameFailsToOpen() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "acme/ads", secret: secret("EAAB-acme"))
        try vault.put(name: "evil/read", secret: secret("EAAB-evil"))
        try tamper(home, "UPDATE tokens SET sealed = (SELECT sealed FROM tokens WHERE name = 'acme/ads') WHERE name = 'evil/read'")
        #expect(throws: VaultError.integrity(what: "token", name: "evil/read")) { try Vault.open(home: home).get(name: "evil/read") }
        #expect(try Vault.open(home: home).get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-acme")
        // Swapping the names of two rows is the same attack from the other side.
        try tamper(home, "UPDATE tokens SET name = 'tmp' WHERE name = 'acme/ads'")
        try tamper(home, "UPDATE tokens SET name = 'acme/ads' WHERE name = 'evil/read'")
        try tamper(home, "UPDATE tokens SET name = 'evil/read' WHERE name = 'tmp'")
        #expect(throws: VaultError.integrity(what: "token", name: "evil/read")) { try Vault.open(home: home).get(name: "evil/read") }
    }

    @Test func dataKeyMovedToAnotherIdFailsToUnwrap() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        try tamper(home, "UPDATE data_keys SET id = 99")
        try tamper(home, "UPDATE tokens SET data_key_id = 99")
        #expect { try Vault.open(home: home).get(name: "a") } throws: { error in
            guard case VaultError.wrongMasterKey = error else { return false }
            return true
        }
    }

    @Test func passphraseVaultUnlocksWithTheRightPassphraseOnly() throws {
        let dir = TempDir()
        let home = VaultHome(root: dir.path + "/home")
        let vault = try Vault.create(home: home, passphrase: secret("correct horse battery"), strength: .interactive)
        try vault.put(name: "a", secret: secret("EAAB-pp"))
        let entries = try vault.keyring.entries()
        #expect(entries.count == 1 && entries[0].source == .passphrase)
        // Only salt and limits are on disk: 32 bytes of key would not parse as this JSON.
        let params = try JSONDecoder().decode(PassphraseKDF.self, from: Data(fileBytes(entries[0].path)))
        #expect(params.algorithm == "argon2id13")

        let right = try Vault.open(home: home, passphrase: { _ in secret("correct horse battery") })
        #expect(try right.get(name: "a").secret.unsafeStringCopy() == "EAAB-pp")
        let wrong = try Vault.open(home: home, passphrase: { _ in secret("correct horse batterx") })
        #expect(throws: VaultError.wrongPassphrase(id: entries[0].id)) { try wrong.get(name: "a") }
        let none = try Vault.open(home: home)
        #expect(throws: VaultError.passphraseRequired(id: entries[0].id)) { try none.get(name: "a") }
    }

    @Test func badInputChangesNothing() throws {
        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("first"))
        #expect(throws: StoreError.alreadyExists(what: "token", name: "a")) { try vault.put(name: "a", secret: secret("second")) }
        #expect(try vault.get(name: "a").secret.unsafeStringCopy() == "first")
        try vault.put(name: "a", secret: secret("second"), replace: true)
        #expect(try vault.get(name: "a").secret.unsafeStringCopy() == "second")
        #expect(throws: VaultError.self) { try vault.put(name: "", secret: secret("x")) }
        #expect(throws: VaultError.self) { try vault.put(name: "acme/*", secret: secret("x")) }
        #expect(throws: VaultError.self) { try vault.put(name: "b", secret: secret("")) }
        #expect(throws: VaultError.self) { try vault.put(name: "b", secret: secret("two\nlines")) }
        #expect(throws: VaultError.self) { try vault.put(name: "b", secret: SecretBytes(copying: [0xff, 0xfe])) }
        #expect(throws: VaultError.self) { try vault.put(name: "b", secret: SecretBytes(copying: [UInt8](repeating: 0x41, count: 16 * 1024 + 1))) }
        #expect(throws: VaultError.unknownApp("nope")) { try vault.put(name: "b", secret: secret("x"), app: "nope") }
        #expect(try vault.list().map(\.name) == ["a"])
        // A batch with one bad entry stores none of them.
        #expect(throws: VaultError.self) {
            try vault.put([ImportEntry(name: "c", secret: secret("ok")), ImportEntry(name: "d", secret: secret("ok"), app: "nope")], replace: false)
        }
        #expect(try vault.list().map(\.name) == ["a"])
    }

    @Test func errorsNeverCarryTheToken() throws {
        let dir = TempDir()
        let (vault, home) = try makeVault(dir)
        let token = "EAAB-never-in-errors-91c2"
        try vault.put(name: "a", secret: secret(token))
        var messages: [String] = []
        do { try vault.put(name: "a", secret: secret(token)) } catch { messages.append("\(error)"); messages.append(String(reflecting: error)) }
        try tamper(home, "UPDATE tokens SET sealed = zeroblob(60)")
        do { _ = try Vault.open(home: home).get(name: "a") } catch { messages.append("\(error)"); messages.append(String(reflecting: error)) }
        #expect(messages.count == 4)
        for m in messages { #expect(!m.contains(token)) }
    }

    @Test func appsAreSealedAndCounted() throws {
        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        try vault.addApp(name: "acme", appId: "138483919580948", secret: secret("s3cr3t-app"))
        try vault.put(name: "acme/ads", secret: secret("EAAB"), kind: .systemUser, app: "acme")
        let apps = try vault.apps()
        #expect(apps.map(\.name) == ["acme"] && apps[0].appId == "138483919580948" && apps[0].tokens == 1)
        let (appId, appSecret) = try vault.appSecret(app: "acme")
        #expect(appId == "138483919580948" && appSecret.unsafeStringCopy() == "s3cr3t-app")
        #expect(throws: VaultError.self) { try vault.addApp(name: "bad", appId: "12ab", secret: secret("s")) }
        #expect(throws: StoreError.self) { try vault.remove(name: "nope") }
        try vault.remove(name: "acme/ads")
        #expect(try vault.list().isEmpty)
    }
}
