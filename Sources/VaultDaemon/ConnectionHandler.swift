import NIOCore
import VaultCore
import VaultWire
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

/// Asks a connection to finish what it has in flight and close (graceful shutdown).
public struct DrainEvent: Sendable {}

/// One client connection: splits the byte stream into request lines, parses each, hands it to the
/// ``RequestProcessor``, and writes the replies strictly in request order, however their audit records
/// complete.
///
/// Framing is done here, on the bytes NIO read, with no copy and no per-line buffer: a line ends at `\n`
/// (a `\r` before it is dropped); a line over ``maxLineLength`` bytes gets `too_large` and the connection
/// closes; a half-sent line waits for the rest. A connection with nothing in flight that completes no
/// request line for `idleTimeout` is closed, however many bytes of a partial line it trickles in.
///
/// Back-pressure: with more than `maxInFlight` requests unanswered, or while the client is not reading
/// its replies (the channel is not writable), it stops reading from the socket, so a slow or hostile
/// client costs bounded memory and never delays the others.
///
/// `watch`: once its acknowledgement is written the connection carries only events (anything the client
/// sends after it is read and dropped), is never closed for being idle, and is closed if it lets more
/// than ``maxQueuedEvents`` events pile up unread. Lines pipelined behind a `watch` wait for its answer:
/// a refused `watch` leaves an ordinary connection that goes on with them.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    /// The longest request line, without its line end.
    static let maxLineLength = 65_536
    /// Events a watcher may leave unread (its socket buffer full) before it is disconnected.
    static let maxQueuedEvents = 4096

    private enum WatchState { case none, pending(sequence: Int), active }
    private var watch = WatchState.none
    private var queuedEvents: [TokenChange] = []

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

    /// The start of a line whose end has not arrived yet.
    private var partial: ByteBuffer?
    /// Bytes at the front of `partial` already known to hold no newline.
    private var scanned = 0

    private let idleTimeout: TimeAmount?
    /// When the last complete request line arrived (or the connection opened).
    private var lastRead = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?

    /// This connection's event loop's held reader, or nil to read through the shared pool.
    private let reads: LoopReads?

    init(processor: RequestProcessor, caller: Caller, maxInFlight: Int = 256, reads: LoopReads? = nil,
         idleTimeout: TimeAmount? = nil) {
        self.processor = processor
        self.caller = caller
        self.maxInFlight = maxInFlight
        self.reads = reads
        self.idleTimeout = idleTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing, !draining else { return }
        if case .active = watch { return }  // a watching connection's input is dropped
        var buffer = unwrapInboundIn(data)
        if var earlier = partial {
            partial = nil
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        consume(buffer, context: context)
    }

    private var watchPending: Bool {
        if case .pending = watch { return true }
        return false
    }

    /// Handles every complete line in `buffer` and keeps the rest — all of it while a `watch` waits for
    /// its answer.
    private func consume(_ input: ByteBuffer, context: ChannelHandlerContext) {
        var buffer = input
        if watchPending {
            if buffer.readableBytes > 0 { partial = buffer }
            return
        }
        while !closing, !draining {
            let from = scanned
            let newline: Int? = buffer.withUnsafeReadableBytes { raw in
                guard raw.count > from, let nl = memchr(raw.baseAddress! + from, 0x0a, raw.count - from) else { return nil }
                return raw.baseAddress!.distance(to: UnsafeRawPointer(nl))
            }
            guard let length = newline else {
                scanned = buffer.readableBytes
                if scanned > Self.maxLineLength + 1 {  // + 1: room for a \r
                    lineTooLong(context: context)
                } else if scanned > 0 {
                    partial = buffer
                }
                return
            }
            scanned = 0
            let hasCR = length > 0 && buffer.getInteger(at: buffer.readerIndex + length - 1, as: UInt8.self) == 0x0d
            let content = hasCR ? length - 1 : length
            guard content <= Self.maxLineLength else { return lineTooLong(context: context) }
            let parsed = buffer.withUnsafeReadableBytes { Request.parse(UnsafeRawBufferPointer(rebasing: $0[0..<content])) }
            buffer.moveReaderIndex(forwardBy: length + 1)
            handle(parsed, context: context)
            if watchPending {
                if buffer.readableBytes > 0 { partial = buffer }
                return
            }
        }
    }

    private func lineTooLong(context: ChannelHandlerContext) {
        partial = nil
        scanned = 0
        slots.append(Slot(id: nil, reply: .error(.tooLarge, "request line over \(Self.maxLineLength) bytes; closing the connection")))
        closing = true
        flushReady(context: context)
    }

    private func handle(_ parsed: Result<Request, RequestError>, context: ChannelHandlerContext) {
        // Only a complete request counts as activity: a client trickling a byte at a time never resets the timer.
        if idleTimeout != nil { lastRead = .now() }
        switch parsed {
        case .failure(let error):
            let code: Reply.ErrorCode = error.code == .unknownOp ? .unknownOp : .badRequest
            slots.append(Slot(id: error.id, reply: .error(code, error.message)))
            flushReady(context: context)
        case .success(let request):
            if case .watch(let patterns) = request.operation {
                return startWatch(patterns, request: request, context: context)
            }
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

    private func startWatch(_ patterns: [String], request: Request, context: ChannelHandlerContext) {
        let sequence = headSequence + slots.count
        slots.append(Slot(id: request.id, reply: nil))
        watch = .pending(sequence: sequence)
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        processor.watch(patterns: patterns, request: request, caller: caller, id: ObjectIdentifier(self), loop: loop,
                        deliver: { events in bound.value.0.deliver(events, context: bound.value.1) },
                        reply: { reply in
                            if loop.inEventLoop {
                                bound.value.0.complete(sequence, reply, context: bound.value.1)
                            } else {
                                loop.execute { bound.value.0.complete(sequence, reply, context: bound.value.1) }
                            }
                        })
    }

    /// Events for this watcher (on its event loop): written once the acknowledgement is out and the
    /// socket takes them, queued until then.
    private func deliver(_ events: [TokenChange], context: ChannelHandlerContext) {
        guard context.channel.isActive, !closing else { return }
        switch watch {
        case .none: return
        case .pending, .active: queuedEvents.append(contentsOf: events)
        }
        if queuedEvents.count > Self.maxQueuedEvents {
            queuedEvents = []
            closing = true
            context.close(promise: nil)
            return
        }
        flushEvents(context: context)
    }

    private func flushEvents(context: ChannelHandlerContext) {
        guard case .active = watch, !queuedEvents.isEmpty, context.channel.isWritable else { return }
        var buffer = context.channel.allocator.buffer(capacity: 64 * queuedEvents.count)
        for e in queuedEvents { ReplyEncoder.encodeEvent(name: e.name, change: e.kind.rawValue, into: &buffer) }
        queuedEvents = []
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
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
        var resume = false
        var buffer: ByteBuffer?  // every ready reply goes out in one buffer, one write
        while let first = slots.first, let reply = first.reply {
            slots.removeFirst()
            if case .pending(let sequence) = watch, sequence == headSequence {
                if case .watching = reply {
                    watch = .active
                    partial = nil
                    idleCheck?.cancel()
                    idleCheck = nil
                } else {
                    watch = .none
                    queuedEvents = []
                    resume = true
                }
            }
            headSequence += 1
            if buffer == nil { buffer = context.channel.allocator.buffer(capacity: 512) }
            ReplyEncoder.encode(reply, id: first.id, into: &buffer!)
            if reply.closesConnection { close = true; break }
        }
        if let buffer { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
        if case .active = watch {
            flushEvents(context: context)
            if draining { context.close(promise: nil) }
            return
        }
        if resume, !close, let rest = partial {
            // The refused watch's connection goes on with the lines sent behind it.
            partial = nil
            scanned = 0
            consume(rest, context: context)
            return
        }
        if close || ((draining || closing) && slots.isEmpty) {
            context.close(promise: nil)
            return
        }
        resumeReadingIfPossible(context: context)
    }

    // MARK: - back-pressure

    func read(context: ChannelHandlerContext) {
        if case .active = watch {
            return context.read()  // to see the peer close; what it sends is dropped
        }
        if slots.count >= maxInFlight || !context.channel.isWritable || closing || draining || watchPending {
            readPending = true
        } else {
            context.read()
        }
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending, slots.count < maxInFlight, context.channel.isWritable, !closing, !draining, !watchPending {
            readPending = false
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        flushEvents(context: context)
        resumeReadingIfPossible(context: context)
        context.fireChannelWritabilityChanged()
    }

    // MARK: - idle and shutdown

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startIdleChecks(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startIdleChecks(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        processor.watches.remove(ObjectIdentifier(self))
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        processor.watches.remove(ObjectIdentifier(self))
        context.fireChannelInactive()
    }

    private func startIdleChecks(context: ChannelHandlerContext) {
        guard let idleTimeout, idleCheck == nil else { return }
        lastRead = .now()
        scheduleIdleCheck(at: lastRead + idleTimeout, context: context)
    }

    private func scheduleIdleCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.0.checkIdle(context: bound.value.1) }
    }

    /// Closes the connection once it has been quiet for `idleTimeout` with nothing in flight.
    private func checkIdle(context: ChannelHandlerContext) {
        guard let idleTimeout, context.channel.isActive else { return }
        if case .active = watch { idleCheck = nil; return }  // watchers are idle by nature
        let now = NIODeadline.now()
        if now < lastRead + idleTimeout {
            scheduleIdleCheck(at: lastRead + idleTimeout, context: context)
        } else if slots.isEmpty {
            idleCheck = nil
            context.close(promise: nil)
        } else {
            scheduleIdleCheck(at: now + idleTimeout, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is DrainEvent {
            draining = true
            if slots.isEmpty { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
