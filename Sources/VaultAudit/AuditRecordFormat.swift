import Foundation
import VaultCore
import VaultCrypto

/// The on-disk audit record, one JSON object per line, fields in this fixed order:
///
///     {"seq":1,"time":"2026-11-29T10:35:22.123456Z","channel":"socket","action":"get","token":"acme/ads",
///      "outcome":"granted","reason":null,"request_id":"7","uid":1001,"gid":1001,"pid":4242,
///      "exe":"/usr/bin/python3","token_hmac":"…","hash":"…","mac":"…"[,"sig":"…"]}
///
/// `hash` = SHA-256(previous record's hash || every byte of the line before `,"hash":"`); the first record
/// of a log chains from 32 zero bytes. `mac` = HMAC-SHA256(audit MAC key, hash). `sig`, on some records,
/// is an Ed25519 signature of "tokenvault-audit-v1\0" || hash.
public enum AuditRecordFormat {
    public static let genesisHash = [UInt8](repeating: 0, count: 32)
    static let hashMarker = Array(",\"hash\":\"".utf8)

    /// `{"seq":N`: the only part the flusher must write itself, since it alone knows the order.
    static func appendSeq(_ seq: Int64, to out: inout [UInt8]) {
        out.append(contentsOf: #"{"seq":"#.utf8)
        appendDecimal(seq, to: &out)
    }

    /// Everything after the seq up to and including `token_hmac`: built by the caller's thread, so the
    /// single flusher thread only chains and writes.
    static func appendBody(timeMicros: Int64, event: AuditEvent, tokenHMAC: [UInt8]?, to out: inout [UInt8]) {
        out.append(contentsOf: #","time":""#.utf8)
        appendTime(micros: timeMicros, to: &out)
        out.append(contentsOf: #"","channel":""#.utf8)
        out.append(contentsOf: event.channel.rawValue.utf8)
        out.append(contentsOf: #"","action":"#.utf8)
        appendString(event.action, to: &out)
        out.append(contentsOf: #","token":"#.utf8)
        appendOptional(event.token, to: &out)
        out.append(contentsOf: #","outcome":""#.utf8)
        out.append(contentsOf: event.outcome.rawValue.utf8)
        out.append(contentsOf: #"","reason":"#.utf8)
        appendOptional(event.reason, to: &out)
        out.append(contentsOf: #","request_id":"#.utf8)
        appendOptional(event.requestId, to: &out)
        out.append(contentsOf: #","uid":"#.utf8)
        appendDecimal(Int64(event.actor.uid), to: &out)
        out.append(contentsOf: #","gid":"#.utf8)
        appendDecimal(Int64(event.actor.gid), to: &out)
        out.append(contentsOf: #","pid":"#.utf8)
        appendDecimal(Int64(event.actor.pid), to: &out)
        out.append(contentsOf: #","exe":"#.utf8)
        appendOptional(event.actor.executable, to: &out)
        out.append(contentsOf: #","token_hmac":"#.utf8)
        if let tokenHMAC {
            out.append(UInt8(ascii: "\""))
            appendHex(tokenHMAC, to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append(contentsOf: "null".utf8)
        }
    }

    static func appendDecimal(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        var v = value.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[n] = UInt8(48 + v % 10)
                v /= 10
                n += 1
            } while v > 0
            for i in stride(from: n - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }

    static func appendHex(_ bytes: [UInt8], to out: inout [UInt8]) {
        let digits: StaticString = "0123456789abcdef"
        let d = digits.utf8Start
        for b in bytes {
            out.append(d[Int(b >> 4)])
            out.append(d[Int(b & 0x0f)])
        }
    }

    /// `2026-11-29T10:35:22.123456Z`, without going through String(format:).
    static func appendTime(micros: Int64, to out: inout [UInt8]) {
        var t = time_t(micros / 1_000_000)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) {
            out.append(UInt8(48 + v / 10))
            out.append(UInt8(48 + v % 10))
        }
        let year = Int(tm.tm_year) + 1900
        out.append(contentsOf: [UInt8(48 + year / 1000), UInt8(48 + year / 100 % 10), UInt8(48 + year / 10 % 10), UInt8(48 + year % 10)])
        out.append(UInt8(ascii: "-")); two(tm.tm_mon + 1)
        out.append(UInt8(ascii: "-")); two(tm.tm_mday)
        out.append(UInt8(ascii: "T")); two(tm.tm_hour)
        out.append(UInt8(ascii: ":")); two(tm.tm_min)
        out.append(UInt8(ascii: ":")); two(tm.tm_sec)
        out.append(UInt8(ascii: "."))
        var frac = Int(micros % 1_000_000)
        var six = [UInt8](repeating: 48, count: 6)
        for i in stride(from: 5, through: 0, by: -1) {
            six[i] = UInt8(48 + frac % 10)
            frac /= 10
        }
        out.append(contentsOf: six)
        out.append(UInt8(ascii: "Z"))
    }

    /// Appends `,"hash":"…","mac":"…"[,"sig":"…"]}\n`.
    static func appendSuffix(hash: [UInt8], mac: [UInt8], signature: [UInt8]?, to out: inout [UInt8]) {
        out.append(contentsOf: hashMarker)
        appendHex(hash, to: &out)
        out.append(contentsOf: "\",\"mac\":\"".utf8)
        appendHex(mac, to: &out)
        if let signature {
            out.append(contentsOf: "\",\"sig\":\"".utf8)
            appendHex(signature, to: &out)
        }
        out.append(contentsOf: "\"}\n".utf8)
    }

    static func appendOptional(_ s: String?, to out: inout [UInt8]) {
        if let s { appendString(s, to: &out) } else { out.append(contentsOf: "null".utf8) }
    }

    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5c, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5c, 0x5c])
            case 0x0a: out.append(contentsOf: [0x5c, UInt8(ascii: "n")])
            case 0..<0x20:
                out.append(contentsOf: Array(String(format: "\\u%04x", b).utf8))
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `2026-11-29T10:35:22.123456Z`.
    public static func formatTime(micros: Int64) -> String {
        var out: [UInt8] = []
        appendTime(micros: micros, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The pieces of a line that verification needs, found without a full JSON parse.
    struct Parsed: Sendable {
        var seq: Int64
        var prefixEnd: Int
        var hash: [UInt8]
        var mac: [UInt8]
        var signature: [UInt8]?
    }

    static func parse(_ line: ArraySlice<UInt8>) -> Parsed? {
        let seqMarker = Array("{\"seq\":".utf8)
        guard line.starts(with: seqMarker) else { return nil }
        var i = line.startIndex + seqMarker.count
        var seq: Int64 = 0
        var digits = 0
        while i < line.endIndex, line[i] >= 0x30, line[i] <= 0x39, digits < 19 {
            seq = seq * 10 + Int64(line[i] - 0x30)
            i += 1
            digits += 1
        }
        guard digits > 0, i < line.endIndex, line[i] == UInt8(ascii: ",") else { return nil }
        // The marker sits a fixed distance from the end (hash, mac, maybe sig): look there first.
        let tailStart = max(i, line.endIndex - 320)
        guard let markerAt = find(hashMarker, in: line, from: tailStart) ?? find(hashMarker, in: line, from: i) else { return nil }
        var j = markerAt + hashMarker.count
        guard let hash = hex(line, &j, 32), take("\",\"mac\":\"", line, &j), let mac = hex(line, &j, 32) else { return nil }
        var signature: [UInt8]?
        if take("\",\"sig\":\"", line, &j) {
            guard let s = hex(line, &j, 64) else { return nil }
            signature = s
        }
        guard take("\"}", line, &j), j == line.endIndex else { return nil }
        return Parsed(seq: seq, prefixEnd: markerAt, hash: hash, mac: mac, signature: signature)
    }

    private static func find(_ needle: [UInt8], in hay: ArraySlice<UInt8>, from: Int) -> Int? {
        var i = from
        while i + needle.count <= hay.endIndex {
            if hay[i] == needle[0] && hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    private static func take(_ literal: String, _ line: ArraySlice<UInt8>, _ j: inout Int) -> Bool {
        let bytes = Array(literal.utf8)
        guard j + bytes.count <= line.endIndex, line[j..<(j + bytes.count)].elementsEqual(bytes) else { return false }
        j += bytes.count
        return true
    }

    private static func hex(_ line: ArraySlice<UInt8>, _ j: inout Int, _ count: Int) -> [UInt8]? {
        guard j + count * 2 <= line.endIndex else { return nil }
        let start = j - line.startIndex
        let decoded: [UInt8]? = line.withUnsafeBufferPointer { buf in
            var ok = true
            let out = [UInt8](unsafeUninitializedCapacity: count) { out, n in
                for k in 0..<count {
                    let hi = hexValue[Int(buf[start + 2 * k])], lo = hexValue[Int(buf[start + 2 * k + 1])]
                    if hi > 15 || lo > 15 { ok = false }
                    out[k] = hi << 4 | (lo & 0x0f)
                }
                n = count
            }
            return ok ? out : nil
        }
        j += count * 2
        return decoded
    }

    /// 0–15 for a lower-case hex digit, 255 for anything else.
    private static let hexValue: [UInt8] = (0..<256).map { c in
        switch c {
        case 0x30...0x39: return UInt8(c - 0x30)
        case 0x61...0x66: return UInt8(c - 0x61 + 10)
        default: return 255
        }
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
}
