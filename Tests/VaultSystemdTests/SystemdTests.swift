import Foundation
import Testing
import TestSupport
import VaultSystemd
#if canImport(Glibc)
import Glibc
#endif

@Suite struct SocketActivationTests {
    @Test func descriptorsAreNamedFromThree() throws {
        let a = try SocketActivation.parse(["LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "tokenvault:credential"], pid: 42)
        #expect(a.sockets == [.init(descriptor: 3, name: "tokenvault"), .init(descriptor: 4, name: "credential")])
        let unnamed = try SocketActivation.parse(["LISTEN_PID": "42", "LISTEN_FDS": "1"], pid: 42)
        #expect(unnamed.sockets == [.init(descriptor: 3, name: "unknown")])
    }

    @Test func anotherProcessesSocketsAreNotOurs() throws {
        // A child that inherited the variables (LISTEN_PID names its parent) must not take fd 3.
        #expect(try SocketActivation.parse(["LISTEN_PID": "41", "LISTEN_FDS": "1"], pid: 42).sockets.isEmpty)
        #expect(try SocketActivation.parse([:], pid: 42).sockets.isEmpty)
    }

    @Test func malformedVariablesAreErrors() {
        for env in [["LISTEN_PID": "x", "LISTEN_FDS": "1"], ["LISTEN_PID": "42", "LISTEN_FDS": "-1"],
                    ["LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"]] {
            #expect(throws: SocketActivation.Problem.self) { try SocketActivation.parse(env, pid: 42) }
        }
    }

    @Test func onlyAListeningUnixStreamSocketIsServed() throws {
        let dir = TempDir()
        let listening = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(listening) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let path = dir.path + "/s.sock"
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listening, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0 && listen(listening, 8) == 0)
        let datagram = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        defer { close(datagram) }
        let ok = SocketActivation(sockets: [.init(descriptor: listening, name: "tokenvault")])
        #expect(try ok.listener(named: "tokenvault")?.descriptor == listening)
        #expect(SocketActivation.boundPath(listening) == path)
        let bad = SocketActivation(sockets: [.init(descriptor: datagram, name: "tokenvault")])
        #expect(throws: SocketActivation.Problem.self) { try bad.listener(named: "tokenvault") }
        #expect(try ok.listener(named: "other") == nil)
    }
}

@Suite struct ServiceNotifierTests {
    /// A datagram socket standing in for systemd's notification socket.
    final class FakeManager {
        let fd: CInt
        init(address: String) {
            fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
            var sa = sockaddr_un()
            sa.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(address.utf8)
            withUnsafeMutableBytes(of: &sa.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
                if bytes.first == UInt8(ascii: "@") { raw[0] = 0 }
            }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }
        func receive() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
        }
    }

    @Test func messagesReachAPathAndAnAbstractSocket() {
        let dir = TempDir()
        for address in [dir.path + "/notify", "@tokenvault-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"] {
            let manager = FakeManager(address: address)
            let n = ServiceNotifier(environment: ["NOTIFY_SOCKET": address])
            n.ready(status: "serving\nsecond line")
            #expect(manager.receive() == "READY=1\nSTATUS=serving second line")
            n.reloading()
            let reloading = manager.receive() ?? ""
            #expect(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="))
            n.stopping()
            #expect(manager.receive()?.hasPrefix("STOPPING=1") == true)
        }
    }

    @Test func withoutSystemdNothingIsSent() {
        #expect(ServiceNotifier(environment: [:]).send("READY=1") == false)
        #expect(ServiceNotifier(environment: ["NOTIFY_SOCKET": "relative"]).address == nil)
    }
}
