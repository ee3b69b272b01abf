import Foundation
import VaultCrypto


/// What binds a token's metadata to its sealed value.
///
/// Everything a caller is handed besides the token itself — name, kind, app, Meta's type, scopes,
/// granular scopes, expiries, validity, last check and its error — goes, with the sealed bytes, into one
/// canonical message, and its MAC (``Sealer/mac(_:key:context:)`` under the token's data key, name
/// bound in) is stored in `meta_mac`. Whoever can write `vault.db` but holds no key cannot change a
/// column without the next read failing its integrity check, exactly like a flipped ciphertext bit.
///
/// Rows sealed under a data key wrapped by this release (context `data-key-v2`) must carry the MAC;
/// rows under an older data key are served without one until `key rotate --reseal` moves them.
///
/// Canonical message, version 1: `"tokenvault-token-metadata-v1" 0x00`, then for each field in the
/// order above, then the sealed bytes: a tag byte (`0` absent, `1` present) and, when present, a
/// 4-byte big-endian length and the bytes (integers as their decimal text, `valid` as `0`/`1`).
enum MetadataMAC {
    static func message(_ r: TokenRecord) -> [UInt8] {
        var out = Array("tokenvault-token-metadata-v1\0".utf8)
        out.reserveCapacity(out.count + r.sealed.count + r.scopes.utf8.count + r.name.utf8.count + 160)
        // Written straight into one buffer: this runs on every read of a row not yet checked (a vault of a
        // million tokens read in no order checks nearly every read), so no field gets an array of its own.
        func header(_ count: Int) {
            let n = UInt32(count)
            out.append(1)
            out.append(contentsOf: [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)])
        }
        func field(_ text: String?) {
            guard var text else { out.append(0); return }
            text.withUTF8 { bytes in
                header(bytes.count)
                out.append(contentsOf: bytes)
            }
        }
        func number(_ v: Int64?) {
            guard let v else { out.append(0); return }
            var digits: [UInt8] = []  // decimal text, least significant digit first
            var rest = v.magnitude
            repeat {
                digits.append(UInt8(ascii: "0") + UInt8(rest % 10))
                rest /= 10
            } while rest > 0
            if v < 0 { digits.append(UInt8(ascii: "-")) }
            header(digits.count)
            out.append(contentsOf: digits.reversed())
        }
        field(r.name)
        field(r.kind)
        field(r.app)
        field(r.tokenType)
        field(r.scopes)
        field(r.granularScopes)
        number(r.expiresAt)
        number(r.dataAccessExpiresAt)
        number(r.valid.map { $0 ? 1 : 0 })
        number(r.checkedAt)
        field(r.lastError)
        header(r.sealed.count)
        out.append(contentsOf: r.sealed)
        return out
    }

    static func mac(_ r: TokenRecord, key: SecureKey) -> Data {
        Data(message(r).withUnsafeBytes { Sealer.mac($0, key: key, context: .tokenMetadata(r.name)) })
    }

    /// Whether the row's metadata is the vault's own: its MAC holds, or it has none under a legacy data
    /// key; and its kind and scopes are typed values.
    static func isAuthentic(_ r: TokenRecord, key: SecureKey, legacy: Bool) -> Bool {
        (r.metaMAC != nil ? verify(r, key: key) : legacy) && TokenKind(rawValue: r.kind) != nil && ScopeList.parse(r.scopes) != nil
    }

    /// Whether the row's MAC holds (constant time).
    static func verify(_ r: TokenRecord, key: SecureKey) -> Bool {
        guard let stored = r.metaMAC else { return false }
        return constantTimeEqual(Array(stored), Array(mac(r, key: key)))
    }
}

/// The scopes column (a JSON array of strings the vault wrote) as typed values, or nil when it is not
/// one. Scope names are Meta's identifiers; anything needing an escape is refused rather than decoded.
enum ScopeList {
    static func parse(_ text: String) -> [String]? {
        let b = Array(text.utf8)
        guard b.first == UInt8(ascii: "["), b.last == UInt8(ascii: "]") else { return nil }
        var out: [String] = []
        var i = 1
        func skipSpace() { while i < b.count - 1, b[i] == 0x20 { i += 1 } }
        skipSpace()
        if i == b.count - 1 { return out }
        while true {
            skipSpace()
            guard i < b.count - 1, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            while i < b.count - 1, b[i] != UInt8(ascii: "\"") {
                let c = b[i]
                guard c >= 0x20, c != UInt8(ascii: "\\"), c < 0x7f else { return nil }
                i += 1
            }
            guard i < b.count - 1 else { return nil }
            out.append(String(decoding: b[start..<i], as: UTF8.self))
            i += 1
            skipSpace()
            if i == b.count - 1 { return out }
            guard b[i] == UInt8(ascii: ",") else { return nil }
            i += 1
        }
    }
}
