import Testing
@testable import VaultCrypto

/// Key bytes 0x00...0x1f, a fixed nonce 0xa0...0xb7: the inputs of the format's fixed vectors.
let vectorKeyBytes = (0..<32).map { UInt8($0) }
let vectorNonce = (0..<24).map { UInt8(0xa0 + $0) }

@Suite("Sealed-record format v1")
struct SealerTests {
    let key = try! SecureKey.copying(vectorKeyBytes)

    func sealVector(_ text: String, _ context: SealContext) -> [UInt8] {
        Array(text.utf8).withUnsafeBytes { Sealer.seal($0, key: key, context: context, nonce: vectorNonce) }
    }

    // Fixed vectors: a refactor that changes the byte format, the subkey derivation or the context
    // encoding breaks every vault already on disk, and these.
    @Test func tokenVector() {
        let sealed = sealVector("EAAB-test-token", .token("acme/ads"))
        #expect(hexString(sealed) == tokenVectorHex)
    }

    @Test func appSecretVector() {
        let sealed = sealVector("app-secret-0001", .appSecret("acme"))
        #expect(hexString(sealed) == appVectorHex)
    }

    @Test func vectorsOpen() throws {
        let opened = try Sealer.open(decodeHex(tokenVectorHex)!, key: key, context: .token("acme/ads"))
        #expect(opened.unsafeStringCopy() == "EAAB-test-token")
    }

    @Test func roundTripAndFreshNonce() throws {
        let secret = SecretBytes(copying: Array("EAAB-some-token-value".utf8))
        let a = Sealer.seal(secret, key: key, context: .token("x"))
        let b = Sealer.seal(secret, key: key, context: .token("x"))
        #expect(a != b, "sealing twice must use a fresh nonce")
        #expect(a.count == secret.count + Sealer.overhead)
        #expect(try Sealer.open(a, key: key, context: .token("x")).constantTimeEquals(secret))
        #expect(try Sealer.open(b, key: key, context: .token("x")).constantTimeEquals(secret))
    }

    @Test func everyFlippedBitIsCaught() {
        let sealed = sealVector("EAAB-test-token", .token("acme/ads"))
        for index in sealed.indices {
            for bit in 0..<8 {
                var tampered = sealed
                tampered[index] ^= UInt8(1 << bit)
                #expect(throws: CryptoError.self) {
                    try Sealer.open(tampered, key: key, context: .token("acme/ads"))
                }
            }
        }
    }

    @Test func anotherNameOrPurposeDoesNotOpen() {
        let sealed = sealVector("EAAB-test-token", .token("acme/ads"))
        #expect(throws: CryptoError.authenticationFailed) { try Sealer.open(sealed, key: key, context: .token("acme/other")) }
        #expect(throws: CryptoError.authenticationFailed) { try Sealer.open(sealed, key: key, context: .token("acme/ads ")) }
        #expect(throws: CryptoError.authenticationFailed) { try Sealer.open(sealed, key: key, context: .appSecret("acme/ads")) }
    }

    @Test func wrongKeyDoesNotOpen() {
        let sealed = sealVector("EAAB-test-token", .token("acme/ads"))
        #expect(throws: CryptoError.authenticationFailed) {
            try Sealer.open(sealed, key: SecureKey.random(), context: .token("acme/ads"))
        }
    }

    @Test func truncatedOrUnknownVersionIsMalformed() {
        let sealed = sealVector("EAAB-test-token", .token("acme/ads"))
        #expect(throws: CryptoError.self) { try Sealer.open(Array(sealed.prefix(Sealer.overhead - 1)), key: key, context: .token("acme/ads")) }
        var v2 = sealed
        v2[0] = 2
        #expect(throws: CryptoError.malformedSealedData("unknown format version 2")) { try Sealer.open(v2, key: key, context: .token("acme/ads")) }
    }

    @Test func keyWrapRoundTrip() throws {
        let inner = SecureKey.random()
        let wrapped = Sealer.seal(key: inner, under: key, context: .dataKey(7))
        let unwrapped = try Sealer.openKey(wrapped, under: key, context: .dataKey(7))
        #expect(unwrapped.withUnsafeBytes { Array($0) } == inner.withUnsafeBytes { Array($0) })
        #expect(throws: CryptoError.authenticationFailed) { try Sealer.openKey(wrapped, under: key, context: .dataKey(8)) }
    }

    @Test func emptyPlaintext() throws {
        let sealed = Sealer.seal(SecretBytes(copying: []), key: key, context: .token("e"))
        #expect(try Sealer.open(sealed, key: key, context: .token("e")).count == 0)
    }

    @Test func secretsAreRedactedInDescriptions() {
        let secret = SecretBytes(copying: Array("EAAB-do-not-print".utf8))
        #expect(!"\(secret)".contains("EAAB"))
        #expect(!String(reflecting: secret).contains("EAAB"))
    }
}

// Computed independently of this code (PyNaCl, hashlib.blake2b, argon2-cffi) by Tests/vectors/vectors.py.
let tokenVectorHex = "01a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b79d1c09952ac9df2b5df9039bc0d814b047d7dcc749bb185ab44ecb838bf330"
let appVectorHex = "01a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b771862251f309ab979033b7b2f787d9350f22b1ae3e1cbee6bae51af0f7b5fe"

@Suite("Passphrase keys and HMAC")
struct KDFTests {
    @Test func sameParamsSameKeyAndWrongPassphraseFails() throws {
        let params = PassphraseKDF(strength: .interactive)
        let k1 = try params.deriveKey(from: SecretBytes(copying: Array("correct horse".utf8)))
        let k2 = try params.deriveKey(from: SecretBytes(copying: Array("correct horse".utf8)))
        let k3 = try params.deriveKey(from: SecretBytes(copying: Array("correct horsf".utf8)))
        let sealed = Sealer.seal(SecretBytes(copying: [1, 2, 3]), key: k1, context: .token("t"))
        #expect(try Sealer.open(sealed, key: k2, context: .token("t")).count == 3)
        #expect(throws: CryptoError.authenticationFailed) { try Sealer.open(sealed, key: k3, context: .token("t")) }
    }

    @Test func argon2idVector() throws {
        // Fixed salt and the minimum limits, so the vector is cheap; pins the KDF wiring.
        var params = PassphraseKDF(strength: .interactive)
        params.salt = "000102030405060708090a0b0c0d0e0f"
        params.opslimit = 2
        params.memlimit = 8192
        let key = try params.deriveKey(from: SecretBytes(copying: Array("password".utf8)))
        #expect(hexString(key.withUnsafeBytes { Array($0) }) == "f57bea0b3b8e78f269f92b73975d7ff424349f43c5e315033dc685c8ea73da46")
    }

    @Test func rejectsAbsurdLimits() {
        var params = PassphraseKDF(strength: .interactive)
        params.memlimit = 1 << 50
        #expect(throws: CryptoError.self) { try params.deriveKey(from: SecretBytes(copying: [1])) }
    }

    @Test func hmacSHA256RFC4231Case2() {
        let mac = Array("Jefe".utf8).withUnsafeBytes { k in
            Array("what do ya want for nothing?".utf8).withUnsafeBytes { m in HMACSHA256.mac(key: k, message: m) }
        }
        #expect(hexString(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}

/// BLAKE2b-256 takes a stack one-shot path up to 1 KiB and a streaming path above: both, split anywhere
/// and with an empty part, give hashlib's digests.
@Suite("BLAKE2b")
struct BLAKE2bTests {
    let message = (0..<2048).map { UInt8($0 % 256) }
    let long = "6ed9bf545705dba5971e83a1f2a46a9dd5ac2fe8a934f13cee8d353003eaf908"     // hashlib, 2048 bytes
    let keyed = "34e73b6eca9d3e3acd53fd70bef8dc00a7e2c0ce6118fe606d46ea5db40123e4"    // key = bytes 0..31
    let at1025 = "1483c7c7d406e2c43b3feb32af98d9bb401b2d67b219f07fb90d4c6fc6051853"   // the first 1025 bytes

    func hash(_ m: [UInt8], split: Int) -> String {
        m.withUnsafeBytes { all in
            hexString(BLAKE2b.hash(UnsafeRawBufferPointer(rebasing: all[..<split]), UnsafeRawBufferPointer(rebasing: all[split...])))
        }
    }

    @Test func bothPathsAndEverySplitAgreeWithHashlib() throws {
        for split in [0, 1, 32, 1024, 2047, 2048] { #expect(hash(message, split: split) == long, "split at \(split)") }
        let short = Array(message.prefix(1025))
        for split in [0, 1025] { #expect(hash(short, split: split) == at1025) }
        #expect(message.withUnsafeBytes { hexString(BLAKE2b.hash($0, UnsafeRawBufferPointer(start: nil, count: 0))) } == long)
        let key = try SecureKey.copying((0..<32).map(UInt8.init))
        #expect(message.withUnsafeBytes { hexString(BLAKE2b.mac(key: key, $0)) } == keyed)
    }
}
