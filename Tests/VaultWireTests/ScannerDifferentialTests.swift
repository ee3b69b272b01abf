import Foundation
import NIOCore
import Testing
@testable import VaultWire

/// The request scanner against Foundation's JSONSerialization on generated lines: valid objects, and the
/// same lines broken by a byte or three. Both must agree on whether a line is one JSON object, and on the
/// values of the fields the protocol reads.
@Suite("Wire format")
struct ScannerDifferentialTests {
    /// SplitMix64: the same cases on every run.
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E3779B97F4A7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
        mutating func pick<T>(_ xs: [T]) -> T { xs[below(xs.count)] }
    }

    static let stringPieces = ["a", "acme/ads", "get", "ping", "timed", " ", "é", "😀", "\\n", "\\\"", "\\\\", "\\/", "\\u0041",
                               "\\u00e9", "\\ud83d\\ude00", "\\t", "\\b", "\\f", "\\r", "\\u0000", "x y", "{", "}", "[", ",", ":"]

    static func string(_ r: inout Rng) -> String {
        "\"" + (0..<r.below(4)).map { _ in r.pick(stringPieces) }.joined() + "\""
    }

    static func number(_ r: inout Rng) -> String {
        r.pick(["0", "7", "-1", "42", "1234567890123", "1.5", "-0.25", "1e3", "2E-2", "0.0", "-0", "9007199254740993"])
    }

    static func value(_ r: inout Rng, depth: Int) -> String {
        switch depth > 3 ? r.below(4) : r.below(6) {
        case 0: return string(&r)
        case 1: return number(&r)
        case 2: return r.pick(["true", "false", "null"])
        case 3: return string(&r)
        case 4: return "[" + (0..<r.below(3)).map { _ in value(&r, depth: depth + 1) }.joined(separator: ",") + "]"
        default: return object(&r, depth: depth + 1)
        }
    }

    static func object(_ r: inout Rng, depth: Int) -> String {
        let keys = ["\"op\"", "\"name\"", "\"proof\"", "\"id\"", "\"x\"", "\"n\\u0061me\"", "\"\"", string(&r)]
        let ws = [" ", "", "\t", "\n", ""]
        return "{" + (0..<r.below(5)).map { _ in r.pick(ws) + r.pick(keys) + r.pick(ws) + ":" + r.pick(ws) + value(&r, depth: depth) }
            .joined(separator: ",") + r.pick(ws) + "}"
    }

    static func mutate(_ line: String, _ r: inout Rng) -> [UInt8] {
        var b = Array(line.utf8)
        for _ in 0..<(1 + r.below(3)) {
            let pos = b.isEmpty ? 0 : r.below(b.count + 1)
            let byte = r.pick(Array("{}[],:\"\\ 0-e.tnu".utf8) + [0x00, 0x01, 0x1f, 0x7f, 0xc3, 0xff, 0x80])
            switch r.below(3) {
            case 0 where pos < b.count: b.remove(at: pos)
            case 1 where pos < b.count: b[pos] = byte
            default: b.insert(byte, at: pos)
            }
        }
        return b
    }

    /// A `,` followed (after white space) by `}` or `]`, outside strings.
    static func hasTrailingComma(_ b: [UInt8]) -> Bool {
        var inString = false, escaped = false
        for (i, c) in b.enumerated() {
            if inString {
                if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
                continue
            }
            if c == UInt8(ascii: "\"") { inString = true; continue }
            guard c == UInt8(ascii: ",") else { continue }
            var j = i + 1
            while j < b.count, [0x20, 0x09, 0x0a, 0x0d].contains(b[j]) { j += 1 }
            if j < b.count, b[j] == UInt8(ascii: "}") || b[j] == UInt8(ascii: "]") { return true }
        }
        return false
    }

    @Test func scannerAgreesWithJSONSerialization() throws {
        var r = Rng(state: 20261201)
        var valid = 0, invalid = 0
        for n in 0..<20_000 {
            let base = Self.object(&r, depth: 0)
            let line = n % 3 == 0 ? Self.mutate(base, &r) : Array(base.utf8)
            let foundation = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
            let scanned: JSONObjectScanner.Fields? = line.withUnsafeBytes { raw in
                var s = JSONObjectScanner(raw)
                return try? s.scanTopLevelObject()
            }
            let shown = String(decoding: line, as: UTF8.self)
            // Foundation's parser also takes a trailing comma (`[1,]`, `{"a":1,}`); RFC 8259, and the scanner, do not.
            if Self.hasTrailingComma(line) {
                #expect(scanned == nil, "a trailing comma is not JSON: \(shown.debugDescription)")
                invalid += 1
                continue
            }
            #expect((foundation != nil) == (scanned != nil), "disagree on \(shown.debugDescription): foundation \(foundation != nil)")
            guard let f = foundation, let s = scanned else { invalid += 1; continue }
            valid += 1
            #expect(s.op == f["op"] as? String, "op of \(shown.debugDescription)")
            #expect(s.name == f["name"] as? String, "name of \(shown.debugDescription)")
            #expect(s.proof == f["proof"] as? String, "proof of \(shown.debugDescription)")
            if let id = s.id {
                let reparsed = try? JSONSerialization.jsonObject(with: Data(id), options: .fragmentsAllowed)
                #expect(reparsed != nil, "the id's raw text is one JSON value: \(shown.debugDescription)")
            }
            #expect((s.id != nil) == (f["id"] != nil))
        }
        #expect(valid > 5_000 && invalid > 2_000)
    }

    /// Every byte and a few multi-byte strings, escaped by the one writer, decode back to themselves.
    @Test func escaperRoundTripsEveryByte() throws {
        var samples = (0..<0x80).map { String(UnicodeScalar(UInt8($0))) }
        samples += ["", "EAAB-token", "a\"b\\c", "é😀\u{2028}", String(repeating: "\u{1}", count: 40)]
        for s in samples {
            var out: [UInt8] = []
            JSONText.appendQuoted(s, to: &out)
            var buffer = ByteBufferAllocator().buffer(capacity: 8)
            JSONText.writeQuoted(s, into: &buffer)
            #expect(Array(buffer.readableBytesView) == out, "both adapters write the same bytes")
            let back = try JSONSerialization.jsonObject(with: Data(out), options: .fragmentsAllowed) as? String
            #expect(back == s, "\(s.debugDescription) → \(String(decoding: out, as: UTF8.self))")
            #expect(!out.dropFirst().dropLast().contains { $0 < 0x20 }, "no raw control byte")
        }
        var d: [UInt8] = []
        for v: Int64 in [0, 7, -7, 1_000_000, .max, .min] {
            d.removeAll()
            JSONText.appendDecimal(v, to: &d)
            #expect(String(decoding: d, as: UTF8.self) == String(v))
        }
        d.removeAll()
        JSONText.appendHex([0x00, 0x0f, 0xa5, 0xff], to: &d)
        #expect(String(decoding: d, as: UTF8.self) == "000fa5ff")
    }
}
