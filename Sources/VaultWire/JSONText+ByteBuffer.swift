import NIOCore

// MARK: - ByteBuffer (replies)

extension JSONText {
    public static func writeQuoted(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: quotedCount(bytes)) { writeQuoted(bytes, into: $0) }
    }

    public static func writeQuoted(_ s: String, into buffer: inout ByteBuffer) {
        var s = s
        s.withUTF8 { writeQuoted(UnsafeRawBufferPointer($0), into: &buffer) }
    }

    public static func writeDecimal<I: BinaryInteger>(_ value: I, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: maxDecimalCount + 1) { writeDecimal(value, into: $0) }
    }
}
