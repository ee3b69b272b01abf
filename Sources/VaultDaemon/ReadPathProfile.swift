import Foundation
import NIOCore
import VaultWire
import NIOPosix
import VaultCore
import VaultCrypto
import VaultPolicy

/// Times each stage of a socket `get` in-process, on one thread, without the socket or the audit flush:
/// what `tokenvault bench read-path` prints, to tell which stage a change to the hot path moved.
public enum ReadPathProfile {
    public struct Stage: Sendable {
        public var name: String
        public var nanosPerOp: Double
    }

    /// Runs each stage `iterations` times over `names` (round-robin) and returns the mean cost of one.
    public static func measure(vault: Vault, policy: Policy, audit: any AuditSink, names: [String], iterations: Int) throws -> [Stage] {
        precondition(!names.isEmpty)
        let caller = Caller.resolve(uid: getuid(), gid: getgid(), pid: getpid())
        let lines = names.map { Array(#"{"id":7,"op":"get","name":"\#($0)"}"#.utf8) }
        var stages: [Stage] = []
        func time(_ name: String, _ body: (Int) throws -> Void) rethrows {
            for i in 0..<min(iterations, 1000) { try body(i) }  // warm-up
            let start = DispatchTime.now().uptimeNanoseconds
            for i in 0..<iterations { try body(i) }
            let elapsed = DispatchTime.now().uptimeNanoseconds - start
            stages.append(Stage(name: name, nanosPerOp: Double(elapsed) / Double(iterations)))
        }
        time("parse request line") { i in
            if case .failure = Request.parse(lines[i % lines.count]) { fatalError("unparsable bench line") }
        }
        time("policy decision") { i in _ = policy.permits(caller, name: names[i % names.count]) }
        try time("store lookup (SQLite)") { i in _ = try vault.record(named: names[i % names.count]) }
        // The daemon's path: one held reader per event loop, released at the end of each tick (here every
        // 8 lookups), answering a hot token from its remembered row.
        let held = vault.makeHeldReader()
        try time("held-reader lookup, 8 per tick") { i in
            _ = try held.token(named: names[i % names.count])
            if i % 8 == 7 { held.release() }
        }
        try time("held lookup + secretbox open") { i in
            _ = try vault.get(name: names[i % names.count], reader: held)
            if i % 8 == 7 { held.release() }
        }
        held.release()
        let opened = try vault.get(name: names[0])
        let reply = Reply.token(.init(opened, proof: nil))
        let allocator = ByteBufferAllocator()
        time("reply encode") { _ in
            var buffer = allocator.buffer(capacity: 256)
            ReplyEncoder.encode(reply, id: Array("7".utf8), into: &buffer)
        }
        let processor = RequestProcessor(vault: vault, policy: policy, audit: audit, logger: .init(label: "bench"))
        let requests = try lines.map { try Request.parse($0).get() }
        // As the daemon runs it: on an event loop, through that loop's held reader (here one long tick).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let reads = LoopReads(loop: loop, vault: vault)
        let nanos = try loop.submit { () -> Double in
            for i in 0..<min(iterations, 1000) { processor.process(requests[i % requests.count], caller: caller, reads: reads) { _ in } }
            let start = DispatchTime.now().uptimeNanoseconds
            for i in 0..<iterations { processor.process(requests[i % requests.count], caller: caller, reads: reads) { _ in } }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / Double(iterations)
        }.wait()
        stages.append(Stage(name: "whole request on its loop, audit at once", nanosPerOp: nanos))
        return stages
    }
}
