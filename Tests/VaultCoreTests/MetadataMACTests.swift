import Foundation
import Testing
@testable import VaultCore

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
