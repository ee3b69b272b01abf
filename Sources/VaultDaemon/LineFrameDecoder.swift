import NIOCore

/// A frame of protocol v1: one request line, or the news that a line grew past the limit.
public enum Frame: Sendable, Equatable {
    case line(ByteBuffer)
    case tooLarge
}

/// Splits the byte stream at `\n` (a `\r` before it is dropped). A line longer than `maxLength` bytes
/// yields one `.tooLarge` and everything after it is discarded: the connection is closing.
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    public static let defaultMaxLength = 65_536

    let maxLength: Int
    /// Bytes at the front of the buffer already known to hold no newline.
    private var scanned = 0
    private var overflowed = false

    public init(maxLength: Int = LineFrameDecoder.defaultMaxLength) {
        self.maxLength = maxLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if overflowed {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return .needMoreData
        }
        let view = buffer.readableBytesView
        let searchFrom = view.startIndex + scanned
        guard let newline = view[searchFrom...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = view.count
            if scanned > maxLength + 1 { overflow(context: context, buffer: &buffer) }  // +1: room for a \r
            return .needMoreData
        }
        let length = newline - view.startIndex
        scanned = 0
        let hasCR = length > 0 && view[newline - 1] == 0x0d
        let content = hasCR ? length - 1 : length
        if content > maxLength {
            overflow(context: context, buffer: &buffer)
            return .needMoreData
        }
        let line = buffer.readSlice(length: content)!
        buffer.moveReaderIndex(forwardBy: hasCR ? 2 : 1)
        context.fireChannelRead(wrapInboundOut(.line(line)))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A half-sent last line is dropped: only complete lines are requests.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }

    private mutating func overflow(context: ChannelHandlerContext, buffer: inout ByteBuffer) {
        overflowed = true
        buffer.moveReaderIndex(to: buffer.writerIndex)
        context.fireChannelRead(wrapInboundOut(.tooLarge))
    }
}
