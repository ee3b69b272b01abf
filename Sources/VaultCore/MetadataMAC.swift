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
    private static let prefix: StaticString = "tokenvault-token-metadata-v1\0"

    static func message(_ r: TokenRecord) -> [UInt8] {
        withMessage(r) { Array($0) }
    }

    /// Calls `body` with the canonical message, built in one buffer sized in advance (on the stack for a
    /// row of ordinary size): this runs on every read of a row not yet checked, and a vault of a million
    /// tokens read in no order checks nearly every read, so nothing here allocates per field.
    static func withMessage<R>(_ r: TokenRecord, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        func size(_ text: String?) -> Int { text.map { 5 + $0.utf8.count } ?? 1 }
        func size(_ v: Int64?) -> Int { v.map { 5 + decimalCount($0) } ?? 1 }
        let valid: Int64? = r.valid.map { $0 ? 1 : 0 }
        let count = prefix.utf8CodeUnitCount + size(r.name) + size(r.kind) + size(r.app) + size(r.tokenType)
            + size(r.scopes) + size(r.granularScopes) + size(r.expiresAt) + size(r.dataAccessExpiresAt) + size(valid)
            + size(r.checkedAt) + size(r.lastError) + 5 + r.sealed.count
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count) { buffer in
            var w = Writer(out: buffer)
            w.bytes(UnsafeRawBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount))
            w.field(r.name)
            w.field(r.kind)
            w.field(r.app)
            w.field(r.tokenType)
            w.field(r.scopes)
            w.field(r.granularScopes)
            w.number(r.expiresAt)
            w.number(r.dataAccessExpiresAt)
            w.number(valid)
            w.number(r.checkedAt)
            w.field(r.lastError)
            w.header(r.sealed.count)
            r.sealed.withUnsafeBytes { w.bytes($0) }
            precondition(w.at == count, "the metadata message's size was miscounted")
            return body(UnsafeRawBufferPointer(buffer))
        }
    }

    /// The number of characters of `v`'s decimal text, sign included.
    private static func decimalCount(_ v: Int64) -> Int {
        var n = v < 0 ? 2 : 1
        var rest = v.magnitude
        while rest >= 10 {
            rest /= 10
            n += 1
        }
        return n
    }

    /// Fills a buffer of exactly the message's size, front to back.
    private struct Writer {
        let out: UnsafeMutableBufferPointer<UInt8>
        var at = 0

        mutating func byte(_ b: UInt8) {
            out[at] = b
            at += 1
        }

        mutating func bytes(_ b: UnsafeRawBufferPointer) {
            guard b.count > 0 else { return }
            UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: out[at..<at + b.count])).copyMemory(from: b)
            at += b.count
        }

        /// Present, then the 4-byte big-endian length.
        mutating func header(_ count: Int) {
            let n = UInt32(count)
            byte(1)
            byte(UInt8(n >> 24))
            byte(UInt8((n >> 16) & 0xff))
            byte(UInt8((n >> 8) & 0xff))
            byte(UInt8(n & 0xff))
        }

        mutating func field(_ text: String?) {
            guard var text else { return byte(0) }
            text.withUTF8 { utf8 in
                header(utf8.count)
                bytes(UnsafeRawBufferPointer(utf8))
            }
        }

        mutating func number(_ v: Int64?) {
            guard let v else { return byte(0) }
            let n = decimalCount(v)
            header(n)
            var rest = v.magnitude
            for i in stride(from: at + n - 1, through: at, by: -1) {  // least significant digit last
                out[i] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
            if v < 0 { out[at] = UInt8(ascii: "-") }
            at += n
        }
    }

    static func mac(_ r: TokenRecord, key: SecureKey) -> Data {
        withMessage(r) { Data(Sealer.mac($0, key: key, context: .tokenMetadata(r.name))) }
    }

    /// Whether the row's metadata is the vault's own: its MAC holds, or it has none under a legacy data
    /// key; and its kind and scopes are typed values.
    static func isAuthentic(_ r: TokenRecord, key: SecureKey, legacy: Bool) -> Bool {
        (r.metaMAC != nil ? verify(r, key: key) : legacy) && TokenKind(rawValue: r.kind) != nil && ScopeList.isValid(r.scopes)
    }

    /// Whether the row's MAC holds (constant time). Computed and compared in place: no copy of either MAC.
    static func verify(_ r: TokenRecord, key: SecureKey) -> Bool {
        guard let stored = r.metaMAC, stored.count == Sealer.macBytesOut else { return false }
        return withUnsafeTemporaryAllocation(byteCount: Sealer.macBytesOut, alignment: 1) { computed in
            withMessage(r) { Sealer.mac($0, key: key, context: .tokenMetadata(r.name), into: computed) }
            return stored.withUnsafeBytes { constantTimeEqual($0, UnsafeRawBufferPointer(computed)) }
        }
    }
}

/// The scopes column (a JSON array of strings the vault wrote) as typed values, or nil when it is not
/// one. Scope names are Meta's identifiers; anything needing an escape is refused rather than decoded.
enum ScopeList {
    static func parse(_ text: String) -> [String]? {
        var out: [String] = []
        return scan(text) { out.append(String(decoding: $0, as: UTF8.self)) } ? out : nil
    }

    /// Whether `text` parses, without building the list (the read path's integrity check).
    static func isValid(_ text: String) -> Bool {
        scan(text) { _ in }
    }

    /// Calls `each` with the bytes of every scope, in order; false when `text` is not such an array.
    private static func scan(_ text: String, _ each: (UnsafeBufferPointer<UInt8>) -> Void) -> Bool {
        var text = text
        return text.withUTF8 { b in
            guard b.first == UInt8(ascii: "["), b.last == UInt8(ascii: "]") else { return false }
            var i = 1
            func skipSpace() { while i < b.count - 1, b[i] == 0x20 { i += 1 } }
            skipSpace()
            if i == b.count - 1 { return true }
            while true {
                skipSpace()
                guard i < b.count - 1, b[i] == UInt8(ascii: "\"") else { return false }
                i += 1
                let start = i
                while i < b.count - 1, b[i] != UInt8(ascii: "\"") {
                    let c = b[i]
                    guard c >= 0x20, c != UInt8(ascii: "\\"), c < 0x7f else { return false }
                    i += 1
                }
                guard i < b.count - 1 else { return false }
                each(UnsafeBufferPointer(rebasing: b[start..<i]))
                i += 1
                skipSpace()
                if i == b.count - 1 { return true }
                guard b[i] == UInt8(ascii: ",") else { return false }
                i += 1
            }
        }
    }
}
