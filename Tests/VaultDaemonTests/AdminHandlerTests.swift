import NIOCore
import NIOEmbedded
import Testing
@testable import VaultDaemon

@Suite("Admin socket handler on an in-memory channel")
struct AdminHandlerTests {
    func exchange(_ chunks: [String]) throws -> (answer: String?, open: Bool) {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(AdminHandler(report: { #"{"ok":true,"uptime_s":1}"# }))
        for chunk in chunks {
            var b = channel.allocator.buffer(capacity: chunk.utf8.count)
            b.writeString(chunk)
            try channel.writeInbound(b)
        }
        let answer = try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }
        channel.embeddedEventLoop.run()
        return (answer, channel.isActive)
    }

    @Test func statusIsOneLineThenTheConnectionCloses() throws {
        let r = try exchange(["sta", "tus\n"])
        #expect(r.answer == #"{"ok":true,"uptime_s":1}"# + "\n")
        #expect(!r.open)
    }

    @Test func anythingElseIsRefusedAndClosed() throws {
        let unknown = try exchange(["get acme/ads\n"])
        #expect(unknown.answer?.contains("unknown request") == true && !unknown.open)
        let endless = try exchange([String(repeating: "x", count: 300)])
        #expect(endless.answer?.contains("request too large") == true && !endless.open)
        let partial = try exchange(["stat"])
        #expect(partial.answer == nil, "nothing is answered before the line ends")
    }
}
