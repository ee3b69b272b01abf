import Foundation
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultStores

@Suite("Import and sealed export")
struct ImportExportTests {
    static let dotenv = """
        # Meta tokens for the ads sync
        export META_ADS_TOKEN=EAABplain123

        SINGLE='EAAB single # not a comment'
        DOUBLE="EAAB\\"quoted\\" \\\\ back"   # a comment after the value
          INDENTED = EAABindented # trailing comment
        HASH=abc#def
        WINDOWS=EAABcrlf\r
        """

    @Test func dotEnvWithCommentsQuotesAndBlankLines() throws {
        let entries = try ImportFormat.parseEnv(Array(Self.dotenv.utf8), prefix: "acme/", kind: .user, app: nil)
        let got = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0.secret.unsafeStringCopy()) })
        #expect(got == [
            "acme/META_ADS_TOKEN": "EAABplain123",
            "acme/SINGLE": "EAAB single # not a comment",
            "acme/DOUBLE": "EAAB\"quoted\" \\ back",
            "acme/INDENTED": "EAABindented",
            "acme/HASH": "abc#def",
            "acme/WINDOWS": "EAABcrlf",
        ])
        #expect(entries.allSatisfy { $0.kind == .user })

        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        #expect(try vault.put(entries, replace: false) == 6)
        #expect(try vault.get(name: "acme/DOUBLE").secret.unsafeStringCopy() == "EAAB\"quoted\" \\ back")
    }

    @Test(arguments: [
        ("A=1\nNOEQUALS\n", 2),
        ("A='unterminated\n", 1),
        ("A=\"x\" trailing\n", 1),
        ("A=\n", 1),
        ("BAD NAME=1\n", 1),
    ])
    func dotEnvErrorsNameTheLineNotTheValue(input: String, line: Int) {
        #expect { try ImportFormat.parseEnv(Array(input.utf8), kind: .other, app: nil) } throws: { error in
            guard case VaultError.importFailed(let l, _) = error else { return false }
            return l == line && !"\(error)".contains("unterminated\n")
        }
    }

    @Test func jsonLines() throws {
        let input = """
            {"name":"acme/ads","token":"EAAB1","kind":"system_user"}

            {"name":"acme/page","token":"EAAB2","kind":"page","app":null}
            """
        let entries = try ImportFormat.parseJSONLines(Array(input.utf8), kind: .other, app: nil)
        #expect(entries.map(\.name) == ["acme/ads", "acme/page"])
        #expect(entries.map(\.kind) == [.systemUser, .page])
        #expect(entries[1].secret.unsafeStringCopy() == "EAAB2")

        for (bad, line) in [("{\"name\":\"a\"}", 1), ("{\"name\":\"a\",\"token\":\"x\"}\n[1]", 2),
                            ("{\"name\":\"a\",\"token\":\"x\",\"kind\":\"robot\"}", 1)] {
            #expect { try ImportFormat.parseJSONLines(Array(bad.utf8), kind: .other, app: nil) } throws: { error in
                guard case VaultError.importFailed(let l, _) = error else { return false }
                return l == line
            }
        }
    }

    @Test func formatDetection() {
        #expect(ImportFormat.detect(path: "x.jsonl", content: []) == .jsonl)
        #expect(ImportFormat.detect(path: "prod.env", content: []) == .env)
        #expect(ImportFormat.detect(path: nil, content: Array("{\"name\":1}".utf8)) == .jsonl)
        #expect(ImportFormat.detect(path: nil, content: Array("A=1".utf8)) == .env)
        #expect(ImportFormat.detect(path: "b.env", content: Array(SealedExport.magic.utf8)) == .sealed)
    }

    @Test func importIsOneTransaction() throws {
        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        try vault.put(name: "acme/B", secret: secret("old"))
        let entries = try ImportFormat.parseEnv(Array("A=1\nB=2\n".utf8), prefix: "acme/", kind: .other, app: nil)
        #expect(throws: StoreError.alreadyExists(what: "token", name: "acme/B")) { try vault.put(entries, replace: false) }
        #expect(try vault.list().map(\.name) == ["acme/B"])
        try vault.put(entries, replace: true)
        #expect(try vault.get(name: "acme/B").secret.unsafeStringCopy() == "2")
    }

    @Test func sealedExportRestoresIntoAFreshVault() throws {
        let source = TempDir()
        let (vault, sourceHome) = try makeVault(source)
        try vault.addApp(name: "acme", appId: "1234567", secret: secret("app-secret-xyz"))
        try vault.put(name: "acme/ads", secret: secret("EAAB-export-canary"), kind: .systemUser, app: "acme")
        try vault.put(name: "other", secret: secret("tok-2"), kind: .user)
        let pass = secret("export passphrase 1")
        let bytes = try vault.exportSealed(passphrase: pass, strength: .interactive)
        #expect(!bytes.contains(bytes: Array("EAAB-export-canary".utf8)))
        #expect(!bytes.contains(bytes: Array("app-secret-xyz".utf8)))

        // A fresh vault has its own, different master key.
        let target = TempDir()
        let (fresh, _) = try makeVault(target)
        #expect(try fresh.keyring.entries().map(\.path) != Vault.open(home: sourceHome).keyring.entries().map(\.path))
        #expect(try fresh.importSealed(bytes, passphrase: pass) == 2)
        #expect(try fresh.get(name: "acme/ads").secret.unsafeStringCopy() == "EAAB-export-canary")
        #expect(try fresh.get(name: "other").secret.unsafeStringCopy() == "tok-2")
        #expect(try fresh.show(name: "acme/ads").kind == "system_user")
        #expect(try fresh.show(name: "acme/ads").app == "acme")
        #expect(try fresh.appSecret(app: "acme").secret.unsafeStringCopy() == "app-secret-xyz")
        // Importing again without --force changes nothing.
        #expect(throws: StoreError.self) { try fresh.importSealed(bytes, passphrase: pass) }
    }

    @Test func sealedExportRejectsWrongPassphraseAndTampering() throws {
        let dir = TempDir()
        let (vault, _) = try makeVault(dir)
        try vault.put(name: "a", secret: secret("t"))
        let bytes = try vault.exportSealed(passphrase: secret("right passphrase"), strength: .interactive)
        let target = TempDir()
        let (fresh, _) = try makeVault(target)
        #expect(throws: VaultError.self) { try fresh.importSealed(bytes, passphrase: secret("wrong passphrase")) }
        // Changing the header (here: the token count) breaks the seal, since the header is its context.
        var text = String(decoding: bytes, as: UTF8.self)
        text = text.replacingOccurrences(of: "\"tokens\":1", with: "\"tokens\":2")
        #expect(throws: VaultError.self) { try fresh.importSealed(Array(text.utf8), passphrase: secret("right passphrase")) }
        var flipped = bytes
        flipped[flipped.count - 10] = flipped[flipped.count - 10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(throws: VaultError.self) { try fresh.importSealed(flipped, passphrase: secret("right passphrase")) }
        #expect(try fresh.list().isEmpty)
    }
}
