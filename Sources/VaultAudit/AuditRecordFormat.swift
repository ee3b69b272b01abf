import Foundation
import VaultCore
import VaultCrypto
import VaultWire

/// The on-disk audit record, one JSON object per line, fields in this fixed order:
///
///     {"seq":1,"time":"2026-11-29T10:35:22.123456Z","channel":"socket","action":"get","token":"acme/ads",
///      "outcome":"granted","reason":null,"request_id":"7","uid":1001,"gid":1001,"pid":4242,
///      "exe":"/usr/bin/python3","token_hmac":"…","hash":"…","mac":"…"[,"sig":"…"]}
///
/// `hash` = BLAKE2b-256(previous record's hash || every byte of the line before `,"hash":"`); the first
/// record of a log chains from 32 zero bytes. `mac` = keyed BLAKE2b-256(audit MAC key, hash). `sig`, on
/// some records, is an Ed25519 signature of "tokenvault-audit-v1\0" || hash. That is chain v2; records
/// written before it (chain v1: SHA-256 and HMAC-SHA256 in the same places) still verify — see ``Chain``.
public enum AuditRecordFormat {
    public static let genesisHash = [UInt8](repeating: 0, count: 32)

    /// How a record's `hash` and `mac` are computed. Every record a writer makes uses ``v2``; a verifier
    /// recognises each record's version by which hash matches, so a log begun before v2 carries on.
    public enum Chain: Sendable {
        /// BLAKE2b-256 chain hash, keyed BLAKE2b-256 MAC (since 2026-11-29: half the CPU of v1).
        case v2
        /// SHA-256 chain hash, HMAC-SHA256 MAC.
        case v1

        public func hash(previous: UnsafeRawBufferPointer, line: UnsafeRawBufferPointer) -> [UInt8] {
            digest(previous: AuditDigest(previous), line: line).bytes
        }

        public func mac(_ keys: AuditKeys, hash: [UInt8]) -> [UInt8] {
            mac(keys, hash: AuditDigest(hash)).bytes
        }

        /// ``hash(previous:line:)`` without allocating (v2), for the verifier's loop.
        func digest(previous: AuditDigest, line: UnsafeRawBufferPointer) -> AuditDigest {
            switch self {
            case .v2:
                previous.withUnsafeBytes { prev in AuditDigest { BLAKE2b.digest(key: nil, prev, line, into: $0) } }
            case .v1:
                previous.withUnsafeBytes { prev in AuditDigest(SHA256.hash(prev, line)) }
            }
        }

        /// ``mac(_:hash:)`` without allocating (v2): keyed BLAKE2b-256 under the audit MAC key (v1: HMAC-SHA256).
        func mac(_ keys: AuditKeys, hash: AuditDigest) -> AuditDigest {
            switch self {
            case .v2:
                keys.mac.withUnsafeBytes { Self.v2MAC(key: $0, hash: hash) }
            case .v1:
                AuditDigest(keys.legacyRecordMAC(hash: hash.bytes))
            }
        }

        /// The v2 MAC under the MAC key's bytes, borrowed by the caller.
        static func v2MAC(key: UnsafeRawBufferPointer, hash: AuditDigest) -> AuditDigest {
            hash.withUnsafeBytes { h in AuditDigest { BLAKE2b.digest(keyBytes: key, h, UnsafeRawBufferPointer(start: nil, count: 0), into: $0) } }
        }
    }

    /// `{"seq":N`: the only part the flusher must write itself, since it alone knows the order.
    static func appendSeq(_ seq: Int64, to out: inout [UInt8]) {
        JSONText.appendLiteral(#"{"seq":"#, to: &out)
        appendDecimal(seq, to: &out)
    }

    /// Everything after the seq up to and including `token_hmac`, written by the flusher straight into the
    /// batch it is about to chain and write.
    static func appendBody(timeMicros: Int64, event: AuditEvent, tokenHMAC: [UInt8]?, to out: inout [UInt8]) {
        JSONText.appendLiteral(#","time":""#, to: &out)
        appendTime(micros: timeMicros, to: &out)
        JSONText.appendLiteral(#"","channel":""#, to: &out)
        out.append(contentsOf: event.channel.rawValue.utf8)
        JSONText.appendLiteral(#"","action":"#, to: &out)
        appendString(event.action, limit: AuditEvent.Limit.action, to: &out)
        JSONText.appendLiteral(#","token":"#, to: &out)
        appendOptional(event.token, limit: AuditEvent.Limit.token, to: &out)
        JSONText.appendLiteral(#","outcome":""#, to: &out)
        out.append(contentsOf: event.outcome.rawValue.utf8)
        JSONText.appendLiteral(#"","reason":"#, to: &out)
        appendOptional(event.reason, limit: AuditEvent.Limit.reason, to: &out)
        JSONText.appendLiteral(#","request_id":"#, to: &out)
        appendOptional(event.requestId, limit: AuditEvent.Limit.requestId, to: &out)
        JSONText.appendLiteral(#","uid":"#, to: &out)
        appendDecimal(Int64(event.actor.uid), to: &out)
        JSONText.appendLiteral(#","gid":"#, to: &out)
        appendDecimal(Int64(event.actor.gid), to: &out)
        JSONText.appendLiteral(#","pid":"#, to: &out)
        appendDecimal(Int64(event.actor.pid), to: &out)
        JSONText.appendLiteral(#","exe":"#, to: &out)
        appendOptional(event.actor.executable, limit: AuditEvent.Limit.executable, to: &out)
        JSONText.appendLiteral(#","token_hmac":"#, to: &out)
        if let tokenHMAC {
            out.append(UInt8(ascii: "\""))
            appendHex(tokenHMAC, to: &out)
            out.append(UInt8(ascii: "\""))
        } else {
            JSONText.appendLiteral("null", to: &out)
        }
    }

    static func appendDecimal(_ value: Int64, to out: inout [UInt8]) { JSONText.appendDecimal(value, to: &out) }

    static func appendHex(_ bytes: [UInt8], to out: inout [UInt8]) { JSONText.appendHex(bytes, to: &out) }

    /// `2026-11-29T10:35:22.123456Z`, by integer arithmetic (no gmtime_r, no allocation).
    static func appendTime(micros: Int64, to out: inout [UInt8]) {
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let frac = Int(micros - seconds * 1_000_000)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secOfDay = Int(seconds - days * 86_400)
        // Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil, inverted).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 27) { b in
            func put(_ value: Int, at i: Int, digits: Int) {
                var v = value
                for k in stride(from: i + digits - 1, through: i, by: -1) {
                    b[k] = UInt8(48 + v % 10)
                    v /= 10
                }
            }
            put(year, at: 0, digits: 4); b[4] = UInt8(ascii: "-")
            put(month, at: 5, digits: 2); b[7] = UInt8(ascii: "-")
            put(day, at: 8, digits: 2); b[10] = UInt8(ascii: "T")
            put(secOfDay / 3600, at: 11, digits: 2); b[13] = UInt8(ascii: ":")
            put(secOfDay / 60 % 60, at: 14, digits: 2); b[16] = UInt8(ascii: ":")
            put(secOfDay % 60, at: 17, digits: 2); b[19] = UInt8(ascii: ".")
            put(frac, at: 20, digits: 6); b[26] = UInt8(ascii: "Z")
            out.append(contentsOf: UnsafeBufferPointer(b))
        }
    }

    /// Appends `,"hash":"…","mac":"…"[,"sig":"…"]}\n`.
    static func appendSuffix(hash: [UInt8], mac: [UInt8], signature: [UInt8]?, to out: inout [UInt8]) {
        JSONText.appendLiteral(hashMarkerText, to: &out)
        appendHex(hash, to: &out)
        JSONText.appendLiteral("\",\"mac\":\"", to: &out)
        appendHex(mac, to: &out)
        if let signature {
            JSONText.appendLiteral("\",\"sig\":\"", to: &out)
            appendHex(signature, to: &out)
        }
        JSONText.appendLiteral("\"}\n", to: &out)
    }

    static func appendOptional(_ s: String?, limit: Int = .max, to out: inout [UInt8]) {
        if let s { appendString(s, limit: limit, to: &out) } else { JSONText.appendLiteral("null", to: &out) }
    }

    /// A string field cut to `limit` bytes (``AuditEvent/capped(_:bytes:)``) before it is escaped.
    static func appendString(_ s: String, limit: Int, to out: inout [UInt8]) {
        appendString(s.utf8.count > limit ? AuditEvent.capped(s, bytes: limit) : s, to: &out)
    }

    /// A JSON string literal, escaped exactly as replies are (``JSONText``).
    static func appendString(_ s: String, to out: inout [UInt8]) { JSONText.appendQuoted(s, to: &out) }

    /// `2026-11-29T10:35:22.123456Z`.
    public static func formatTime(micros: Int64) -> String {
        var out: [UInt8] = []
        appendTime(micros: micros, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The pieces of a line that verification needs, found without a full JSON parse.
    struct Parsed: Sendable {
        var seq: Int64
        /// Where `,"hash":"` starts, from the start of the line: the hash covers the bytes before it.
        var prefixEnd: Int
        var hash: AuditDigest
        var mac: AuditDigest
        var signature: [UInt8]?
    }

    /// The seq of one line as the verifier parses it, or nil when the line is not a record (for the fuzzer
    /// and for tools that sort lines without checking them).
    public static func recordSeq(_ line: UnsafeRawBufferPointer) -> Int64? { parse(line)?.seq }

    static func parse(_ line: ArraySlice<UInt8>) -> Parsed? {
        line.withUnsafeBytes { parse($0) }
    }

    /// Parses one line (without its newline) in place; nil if it is not a well-formed record.
    static func parse(_ line: UnsafeRawBufferPointer) -> Parsed? {
        let n = line.count
        let seqMarker: StaticString = "{\"seq\":"
        guard n > seqMarker.utf8CodeUnitCount, matches(seqMarker, line, at: 0) else { return nil }
        var i = seqMarker.utf8CodeUnitCount
        var seq: Int64 = 0
        var digits = 0
        // At most 18 digits: every such number fits an Int64 (a 19th could overflow, and trap).
        while i < n, line[i] >= 0x30, line[i] <= 0x39, digits < 18 {
            seq = seq * 10 + Int64(line[i] - 0x30)
            i += 1
            digits += 1
        }
        guard digits > 0, i < n, line[i] == UInt8(ascii: ",") else { return nil }
        // The marker sits a fixed distance from the end: `,"hash":"<64>","mac":"<64>"}` is 148 bytes,
        // and a signature (`,"sig":"<128>`) adds 137.
        let markerAt: Int
        if n - 148 > i, matches(hashMarkerText, line, at: n - 148) {
            markerAt = n - 148
        } else if n - 285 > i, matches(hashMarkerText, line, at: n - 285) {
            markerAt = n - 285
        } else {
            return nil
        }
        var j = markerAt + hashMarkerText.utf8CodeUnitCount
        guard let hash = AuditDigest(hex: line, at: j) else { return nil }
        j += 64
        guard matches("\",\"mac\":\"", line, at: j) else { return nil }
        j += 9
        guard let mac = AuditDigest(hex: line, at: j) else { return nil }
        j += 64
        var signature: [UInt8]?
        if matches("\",\"sig\":\"", line, at: j) {
            j += 9
            guard j + 128 <= n, let s = decodeHex(line, at: j, count: 64) else { return nil }
            signature = s
            j += 128
        }
        guard j + 2 == n, matches("\"}", line, at: j) else { return nil }
        return Parsed(seq: seq, prefixEnd: markerAt, hash: hash, mac: mac, signature: signature)
    }

    static let hashMarkerText: StaticString = ",\"hash\":\""

    private static func matches(_ literal: StaticString, _ line: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard offset >= 0, offset + count <= line.count else { return false }
        return memcmp(line.baseAddress! + offset, literal.utf8Start, count) == 0
    }

    /// `count` bytes from `2 * count` lower-case hex digits at `offset`, or nil.
    static func decodeHex(_ line: UnsafeRawBufferPointer, at offset: Int, count: Int) -> [UInt8]? {
        var ok = false
        let out = [UInt8](unsafeUninitializedCapacity: count) { out, n in
            ok = AuditRecordFormat.decodeHex(line, at: offset, into: UnsafeMutableRawBufferPointer(out))
            n = count
        }
        return ok ? out : nil
    }

    /// Decodes `2 * out.count` lower-case hex digits at `offset` into `out`; false on a bad digit.
    static func decodeHex(_ line: UnsafeRawBufferPointer, at offset: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
        guard offset >= 0, offset + 2 * out.count <= line.count else { return false }
        @inline(__always) func value(_ c: UInt8) -> UInt8 {
            // 0–15 for 0-9 and a-f; 0xff (caught below) for anything else.
            let digit = c &- 0x30, letter = c &- 0x61
            return digit < 10 ? digit : (letter < 6 ? letter + 10 : 0xff)
        }
        var bad: UInt8 = 0
        let p = line.baseAddress!.assumingMemoryBound(to: UInt8.self) + offset
        for k in 0..<out.count {
            let hi = value(p[2 * k]), lo = value(p[2 * k + 1])
            bad |= (hi | lo) & 0xf0
            out[k] = hi << 4 | (lo & 0x0f)
        }
        return bad == 0
    }
}

/// A 32-byte hash or MAC of the audit chain, held inline (no heap allocation per record).
struct AuditDigest: Sendable, Equatable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32)
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: bytes) }
    }

    init(_ bytes: [UInt8]) {
        self.init(bytes.withUnsafeBytes { UnsafeRawBufferPointer($0) })
    }

    /// From 64 lower-case hex digits at `offset`, or nil.
    init?(hex line: UnsafeRawBufferPointer, at offset: Int) {
        guard withUnsafeMutableBytes(of: &words, { AuditRecordFormat.decodeHex(line, at: offset, into: $0) }) else { return nil }
    }

    /// Computes a digest in place: `body` writes its 32 bytes.
    init(computing body: (UnsafeMutableRawBufferPointer) -> Void) {
        withUnsafeMutableBytes(of: &words) { body($0) }
    }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: words) { try body($0) }
    }

    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    static func == (a: AuditDigest, b: AuditDigest) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }

    /// Comparison whose time does not depend on where the digests differ (for MACs).
    func constantTimeEquals(_ other: AuditDigest) -> Bool {
        withUnsafeBytes { a in other.withUnsafeBytes { b in constantTimeEqual(a, b) } }
    }
}
