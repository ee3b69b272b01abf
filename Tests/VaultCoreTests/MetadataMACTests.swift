import Foundation
import Testing
@testable import VaultCore
import VaultCrypto

/// The metadata MAC's canonical message is a stored format: every row written since it came in carries a MAC
/// over exactly these bytes, so a change to how they are built fails every read of those rows.
@Suite struct MetadataMACTests {
    @Test func canonicalMessageMatchesTheVector() {
        // From Tests/vectors/vectors.py (an independent implementation of the documented format).
        var r = TokenRecord(name: "acme/ads", kind: "user", app: "acme", sealed: Data([1, 2, 3]), dataKeyId: 1, now: 0)
        r.scopes = "[\"ads_read\"]"
        r.expiresAt = 1_767_225_600
        r.valid = true
        r.checkedAt = 0
        r.lastError = "é"
        let expected = "746f6b656e7661756c742d746f6b656e2d6d657461646174612d763100010000000861636d652f616473010000000475736572010000000461636d6500010000000c5b226164735f72656164225d00010000000a31373637323235363030000100000001310100000001300100000002c3a90100000003010203"
        #expect(MetadataMAC.message(r).map { String(format: "%02x", $0) }.joined() == expected)
    }

    @Test func theMACIsCheckedInPlaceAndAnyChangeFailsIt() {
        let key = SecureKey.random()
        var r = TokenRecord(name: "acme/ads", kind: "user", app: "acme", sealed: Data(repeating: 7, count: 300), dataKeyId: 1, now: 0)
        r.scopes = "[\"ads_read\", \"ads_management\"]"
        r.expiresAt = -5
        r.metaMAC = MetadataMAC.mac(r, key: key)
        #expect(MetadataMAC.verify(r, key: key))
        #expect(MetadataMAC.isAuthentic(r, key: key, legacy: false))
        var changed = r
        changed.expiresAt = 5
        #expect(!MetadataMAC.verify(changed, key: key))
        changed = r
        changed.metaMAC![31] ^= 1
        #expect(!MetadataMAC.verify(changed, key: key))
        changed.metaMAC = r.metaMAC!.prefix(16)
        #expect(!MetadataMAC.verify(changed, key: key))
        #expect(!MetadataMAC.verify(r, key: SecureKey.random()))
    }

    @Test func scopeListsValidateAsTheyParse() {
        for text in ["[]", "[ ]", "[\"a\"]", "[\"a\", \"b\"]", "[\"a\",\"b\"]", "", "[", "]", "[\"a\\\"\"]", "[\"a\" \"b\"]", "[\"a\",]", "[\"é\"]"] {
            #expect(ScopeList.isValid(text) == (ScopeList.parse(text) != nil), "\(text)")
        }
        #expect(ScopeList.parse("[\"a\", \"b\"]") == ["a", "b"])
    }

    @Test func numbersAreTheirDecimalText() {
        for v: Int64 in [0, 7, -1, -9_000, 1_767_225_600, .max, .min] {
            var r = TokenRecord(name: "n", kind: "user", app: nil, sealed: Data(), dataKeyId: 1, now: 0)
            r.expiresAt = v
            let m = MetadataMAC.message(r)
            let text = Array(String(v).utf8)
            let n = UInt32(text.count)
            let encoded: [UInt8] = [1, UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + text
            #expect(m.firstRange(of: encoded) != nil, "expires_at \(v)")
        }
    }
}

/// The read path's admission to its memory of rows: only a name asked for twice is remembered.
@Suite struct SecondSightTests {
    @Test func aNameIsAdmittedAtItsSecondSight() {
        var s = SecondSight(capacity: 1024)
        let seen = ["acme/ads", "acme/ads", "acme/ads", "acme/page"].map { s.seenBefore($0) }
        #expect(seen == [false, true, true, false])
    }

    @Test func oneOffNamesAreNeverAdmitted() {
        var s = SecondSight(capacity: 16_384)
        var admitted = 0
        for n in 0..<100_000 where s.seenBefore("tok-\(n)") { admitted += 1 }
        #expect(admitted == 0)
    }
}
