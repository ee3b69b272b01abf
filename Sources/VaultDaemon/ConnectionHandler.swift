import NIOCore
import VaultPolicy

/// Asks a connection to finish what it has in flight and close (graceful shutdown).
public struct DrainEvent: Sendable {}

/// One client connection: parses each line, hands it to the ``RequestProcessor``, and writes the
/// replies strictly in request order, however their audit records complete.
///
/// Back-pressure: with more than `maxInFlight` requests unanswered, or while the client is not reading
/// its replies (the channel is not writable), it stops reading from the socket, so a slow or hostile
/// client costs bounded memory and never delays the others.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    private struct Slot {
        let id: [UInt8]?
        var reply: Reply?
    }

    private let processor: RequestProcessor
    private let caller: Caller
    private let maxInFlight: Int
    private var slots = CircularBuffer<Slot>(initialCapacity: 8)
    /// Sequence number of `slots.first`.
    private var headSequence = 0
    private var readPending = false
    private var closing = false
    private var draining = false

    /// This connection's event loop's held reader, or nil to read through the shared pool.
    private let reads: LoopReads?

    init(processor: RequestProcessor, caller: Caller, maxInFlight: Int = 256, reads: LoopReads? = nil) {
        self.processor = processor
        self.caller = caller
        self.maxInFlight = maxInFlight
        self.reads = reads
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing, !draining else { return }
        switch unwrapInboundIn(data) {
        case .tooLarge:
            slots.append(Slot(id: nil, reply: .error(.tooLarge, "request line over \(LineFrameDecoder.defaultMaxLength) bytes; closing the connection")))
            closing = true
            flushReady(context: context)
        case .line(let line):
            switch line.withUnsafeReadableBytes({ Request.parse($0) }) {
            case .failure(let error):
                let code: Reply.ErrorCode = error.code == .unknownOp ? .unknownOp : .badRequest
                slots.append(Slot(id: error.id, reply: .error(code, error.message)))
                flushReady(context: context)
            case .success(let request):
                let sequence = headSequence + slots.count
                slots.append(Slot(id: request.id, reply: nil))
                let loop = context.eventLoop
                let bound = NIOLoopBound((self, context), eventLoop: loop)
                processor.process(request, caller: caller, reads: reads) { reply in
                    if loop.inEventLoop {
                        bound.value.0.complete(sequence, reply, context: bound.value.1)
                    } else {
                        loop.execute { bound.value.0.complete(sequence, reply, context: bound.value.1) }
                    }
                }
            }
        }
    }

    private func complete(_ sequence: Int, _ reply: Reply, context: ChannelHandlerContext) {
        let index = sequence - headSequence
        guard index >= 0, index < slots.count else { return }  // the connection went away meanwhile
        slots[slots.index(slots.startIndex, offsetBy: index)].reply = reply
        if index == 0 { flushReady(context: context) }
    }

    /// Writes every reply at the head of the queue that is ready, in order.
    private func flushReady(context: ChannelHandlerContext) {
        var close = false
        var buffer: ByteBuffer?  // every ready reply goes out in one buffer, one write
        while let first = slots.first, let reply = first.reply {
            slots.removeFirst()
            headSequence += 1
            if buffer == nil { buffer = context.channel.allocator.buffer(capacity: 512) }
            ReplyEncoder.encode(reply, id: first.id, into: &buffer!)
            if reply.closesConnection { close = true; break }
        }
        if let buffer { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
        if close || ((draining || closing) && slots.isEmpty) {
            context.close(promise: nil)
            return
        }
        resumeReadingIfPossible(context: context)
    }

    // MARK: - back-pressure

    func read(context: ChannelHandlerContext) {
        if slots.count >= maxInFlight || !context.channel.isWritable || closing || draining {
            readPending = true
        } else {
            context.read()
        }
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending, slots.count < maxInFlight, context.channel.isWritable, !closing, !draining {
            readPending = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    // MARK: - idle and shutdown

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            draining = true
            if slots.isEmpty { context.close(promise: nil) }
        } else if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            if slots.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
