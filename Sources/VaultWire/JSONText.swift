/// The one JSON text writer of the wire format and the audit log: string literals, decimal integers and
/// lowercase hex, each written straight into memory the caller reserved. ``ByteBuffer`` (replies) and
/// `[UInt8]` (audit records) adapters sit beside it, so both formats escape exactly alike.
///
/// A string is escaped as RFC 8259 requires and no more: `"` and `\` get a backslash, `\n` `\r` `\t` their
/// short forms, every other byte below 0x20 `\u00XX`. Bytes 0x20 and up pass through unchanged (the
/// input is UTF-8), so the common case — nothing to escape, as in every Meta token — is one scan and one copy.
public enum JSONText {
    @inline(__always) static func plain(_ b: UInt8) -> Bool { b >= 0x20 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") }

    /// The bytes `bytes` takes as a string literal, quotes included.
    public static func quotedCount(_ bytes: UnsafeRawBufferPointer) -> Int {
        var n = bytes.count + 2
        for b in bytes where !plain(b) {
            n += (b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b == 0x0a || b == 0x0d || b == 0x09) ? 1 : 5
        }
        return n
    }

    /// Writes `bytes` as a string literal into `out` (at least ``quotedCount(_:)`` bytes); returns the count.
    public static func writeQuoted(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
        let n = bytes.count
        out[0] = UInt8(ascii: "\"")
        var o = 1
        var runStart = 0
        func copyRun(to end: Int) {
            guard end > runStart else { return }
            (out.baseAddress! + o).copyMemory(from: bytes.baseAddress! + runStart, byteCount: end - runStart)
            o += end - runStart
        }
        let hex: StaticString = "0123456789abcdef"
        for i in 0..<n where !plain(bytes[i]) {
            copyRun(to: i)
            runStart = i + 1
            let b = bytes[i]
            out[o] = UInt8(ascii: "\\")
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out[o + 1] = b; o += 2
            case 0x0a: out[o + 1] = UInt8(ascii: "n"); o += 2
            case 0x0d: out[o + 1] = UInt8(ascii: "r"); o += 2
            case 0x09: out[o + 1] = UInt8(ascii: "t"); o += 2
            default:
                out[o + 1] = UInt8(ascii: "u"); out[o + 2] = UInt8(ascii: "0"); out[o + 3] = UInt8(ascii: "0")
                out[o + 4] = hex.utf8Start[Int(b >> 4)]; out[o + 5] = hex.utf8Start[Int(b & 0xf)]
                o += 6
            }
        }
        copyRun(to: n)
        out[o] = UInt8(ascii: "\"")
        return o + 1
    }

    /// The most bytes a decimal `Int64` takes.
    public static let maxDecimalCount = 20

    /// Writes `value` in decimal into `out` (at least ``maxDecimalCount`` bytes); returns the count.
    /// Inlinable: the audit flusher, in another module, formats several integers a record, and unspecialized
    /// generic arithmetic cost it more than the rest of the number's text.
    @inlinable
    public static func writeDecimal<I: BinaryInteger>(_ value: I, into out: UnsafeMutableRawBufferPointer) -> Int {
        var v = UInt64(value.magnitude)
        var digits = 0
        repeat { digits += 1; v /= 10 } while v > 0
        var n = 0
        if value < 0 { out[0] = UInt8(ascii: "-"); n = 1 }
        v = UInt64(value.magnitude)
        for k in stride(from: n + digits - 1, through: n, by: -1) {
            out[k] = UInt8(48 + v % 10)
            v /= 10
        }
        return n + digits
    }

    /// Writes `bytes` as lowercase hex into `out` (at least twice their count); returns the count.
    public static func writeHex(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
        let d = StaticString("0123456789abcdef").utf8Start
        for (i, b) in bytes.enumerated() {
            out[2 * i] = d[Int(b >> 4)]
            out[2 * i + 1] = d[Int(b & 0x0f)]
        }
        return 2 * bytes.count
    }
}

// MARK: - [UInt8] (audit records)

extension JSONText {
    /// Appends `count` bytes at most, written by `body` (into scratch space, on the stack when small),
    /// which returns how many it wrote.
    @inlinable @inline(__always)
    static func append(to out: inout [UInt8], reserving count: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        withUnsafeTemporaryAllocation(byteCount: count, alignment: 1) { scratch in
            let written = body(scratch)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[..<written]))
        }
    }

    /// Appends the bytes of a literal (one copy, not a walk over a String's view).
    @inlinable @inline(__always)
    public static func appendLiteral(_ text: StaticString, to out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    public static func appendQuoted(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        append(to: &out, reserving: quotedCount(bytes)) { writeQuoted(bytes, into: $0) }
    }

    public static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { appendQuoted(UnsafeRawBufferPointer($0), to: &out) }
    }

    @inlinable
    public static func appendDecimal<I: BinaryInteger>(_ value: I, to out: inout [UInt8]) {
        append(to: &out, reserving: maxDecimalCount) { writeDecimal(value, into: $0) }
    }

    public static func appendHex(_ bytes: [UInt8], to out: inout [UInt8]) {
        bytes.withUnsafeBytes { raw in append(to: &out, reserving: 2 * raw.count) { writeHex(raw, into: $0) } }
    }
}
