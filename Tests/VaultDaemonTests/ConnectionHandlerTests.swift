import NIOCore
import NIOEmbedded
import Logging
import TestSupport
import Testing
import VaultCore
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire

@Suite("Connection handler on an in-memory channel")
struct ConnectionHandlerTests {
    let dir = TempDir()

    func channel(sink: RecordingSink, policy: String = allowRoot) throws -> EmbeddedChannel {
        let vault = try makeVault(dir)
        let processor = RequestProcessor(vault: vault, policy: try Policy.parse(policy), audit: sink, logger: Logger(label: "t"))
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionHandler(processor: processor, caller: Caller(uid: 0, gid: 0, pid: 42)))
        return channel
    }

    func lines(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            out += buffer.readString(length: buffer.readableBytes)!.split(separator: "\n").map(String.init)
        }
        return out
    }

    @Test func repliesKeepRequestOrderWhateverOrderAuditsComplete() throws {
        let sink = RecordingSink()
        sink.holding.store(true, ordering: .relaxed)
        let channel = try channel(sink: sink)
        var input = channel.allocator.buffer(capacity: 256)
        input.writeString(#"{"op":"get","name":"acme/ads","id":1}"# + "\n" + #"{"op":"ping","id":2}"# + "\n"
                          + #"{"op":"get","name":"acme/page","id":3}"# + "\n" + "garbage\n")
        try channel.writeInbound(input)
        // ping and the bad line are answered at once, but must wait behind the first get.
        #expect(try lines(channel).isEmpty)
        sink.releaseReversed()
        let out = try lines(channel)
        #expect(out.count == 4)
        #expect(out[0].hasPrefix(#"{"id":1,"ok":true,"name":"acme/ads","token":"EAAB-acme-ads""#))
        #expect(out[1] == #"{"id":2,"ok":true,"protocol":1}"#)
        #expect(out[2].hasPrefix(#"{"id":3,"ok":true,"name":"acme/page","token":"EAAB-acme-page\"quote\\""#))
        #expect(out[3].contains(#""code":"bad_request""#))
        #expect(sink.events.withLock { $0.map(\.action) } == ["get", "get"])
    }

    @Test func oversizedLineGetsTooLargeAndCloses() throws {
        let channel = try channel(sink: RecordingSink())
        var input = channel.allocator.buffer(capacity: 70_000)
        input.writeString(#"{"op":"ping","id":1}"# + "\n")
        input.writeRepeatingByte(UInt8(ascii: "a"), count: 70_000)
        try channel.writeInbound(input)
        let out = try lines(channel)
        #expect(out.count == 2)
        #expect(out[1] == #"{"ok":false,"error":{"code":"too_large","message":"request line over 65536 bytes; closing the connection"}}"#)
        #expect(!channel.isActive)
    }

    @Test func linesSplitAcrossReadsAreJoined() throws {
        let channel = try channel(sink: RecordingSink())
        for piece in [#"{"op":"pi"#, #"ng","id":1}"# + "\r", "\n" + #"{"op":"ping","id":2}"# + "\n" + #"{"op""#, #":"ping","id":3}"#] {
            var input = channel.allocator.buffer(capacity: 64)
            input.writeString(piece)
            try channel.writeInbound(input)
        }
        #expect(try lines(channel) == [#"{"id":1,"ok":true,"protocol":1}"#, #"{"id":2,"ok":true,"protocol":1}"#])
        var end = channel.allocator.buffer(capacity: 1)
        end.writeString("\n")
        try channel.writeInbound(end)
        #expect(try lines(channel) == [#"{"id":3,"ok":true,"protocol":1}"#])
    }

    @Test func lineOfExactlyTheLimitIsServed() throws {
        let channel = try channel(sink: RecordingSink())
        var input = channel.allocator.buffer(capacity: 70_000)
        let head = #"{"op":"ping","id":1,"pad":""#
        input.writeString(head + String(repeating: "x", count: 65_536 - head.utf8.count - 2) + "\"}\r\n")
        try channel.writeInbound(input)
        #expect(try lines(channel) == [#"{"id":1,"ok":true,"protocol":1}"#])
    }

    @Test func auditFailureDisclosesNothing() throws {
        let sink = RecordingSink()
        sink.failing.store(true, ordering: .relaxed)
        let channel = try channel(sink: sink)
        var input = channel.allocator.buffer(capacity: 64)
        input.writeString(#"{"op":"get","name":"acme/ads","id":1}"# + "\n")
        try channel.writeInbound(input)
        let out = try lines(channel)
        #expect(out.count == 1 && out[0].contains(#""code":"unavailable""#))
        #expect(!out[0].contains("EAAB"))
    }
}
