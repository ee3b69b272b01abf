import Foundation
import TestSupport
import Testing
import TokenVaultClient
import VaultAudit
import VaultCore
import VaultCrypto
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire
#if canImport(Glibc)
import Glibc
#endif

@Suite("Daemon end to end on a real socket")
struct DaemonEndToEndTests {
    let dir = TempDir()
    var socketPath: String { dir.path + "/tv.sock" }

    func start(policy: String = allowRoot, sink: (any AuditSink)? = nil,
               configure: (inout VaultServer.Configuration) -> Void = { _ in }) async throws -> (RunningDaemon, Vault) {
        let vault = try makeVault(dir)
        let audit = try sink ?? AuditLog.open(for: vault)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(policy), audit: audit,
                                             socketPath: socketPath, configure: configure)
        return (daemon, vault)
    }

    @Test func everyOperationAndErrorCode() async throws {
        let (daemon, vault) = try await start()
        let c = try RawConnection(socketPath)
        #expect(c.request(#"{"op":"ping","id":1}"#)?["protocol"] as? Int == 1)
        let who = c.request(#"{"op":"whoami","id":"w"}"#)
        #expect(who?["id"] as? String == "w" && who?["uid"] as? Int == 0 && who?["pid"] as? Int == Int(getpid()))
        #expect(c.request(#"{"op":"list","id":2}"#)?["names"] as? [String] == ["acme/ads", "acme/page"])
        let got = c.request(#"{"op":"get","name":"acme/page","id":3}"#)
        #expect(got?["token"] as? String == "EAAB-acme-page\"quote\\")
        #expect(got?["kind"] as? String == "page" && got?["scopes"] as? [String] == [] && got?["valid"] is NSNull
                && got?["expires_at"] is NSNull && got?["checked_at"] is NSNull)
        #expect(errorCode(c.request(#"{"op":"get","name":"other/x","id":4}"#)) == "denied")
        #expect(errorCode(c.request(#"{"op":"get","name":"nope","id":5}"#)) == "denied", "a name outside the policy is denied whether or not it exists")
        #expect(errorCode(c.request(#"{"op":"get","name":"acme/nope","id":6}"#)) == "not_found")
        #expect(errorCode(c.request("not json")) == "bad_request")
        #expect(errorCode(c.request(#"{"op":"get","id":7}"#)) == "bad_request")
        #expect(errorCode(c.request(#"{"op":"rm","id":8}"#)) == "unknown_op")
        #expect(errorCode(c.request(#"{"op":"get","name":"acme/page","proof":"timed","id":9}"#)) == "bad_request", "no app, no proof")

        // Proofs, checked against an HMAC computed by Python's standard library.
        let timed = c.request(#"{"op":"get","name":"acme/ads","proof":"timed","id":10}"#)
        let time = timed?["appsecret_time"] as? Int ?? 0
        #expect(abs(time - Int(Date().timeIntervalSince1970)) < 5)
        #expect(timed?["appsecret_proof"] as? String == pythonHMAC(key: "app-secret-acme", message: "EAAB-acme-ads|\(time)"))
        let legacy = c.request(#"{"op":"get","name":"acme/ads","proof":"legacy","id":11}"#)
        #expect(legacy?["appsecret_proof"] as? String == pythonHMAC(key: "app-secret-acme", message: "EAAB-acme-ads"))
        #expect(legacy?["appsecret_time"] == nil)

        // too_large closes the connection after its reply.
        c.send(String(repeating: "x", count: 70_000) + "\n")
        #expect(errorCode(c.json()) == "too_large")
        #expect(c.readLine() == nil)

        // The Swift client maps every code to a typed error.
        let client = TokenVaultClient(socketPath: socketPath)
        #expect(try await client.get("acme/ads").token == "EAAB-acme-ads")
        await #expect(throws: TokenVaultClient.Error.self) { try await client.get("other/x") }
        do { _ = try await client.get("acme/none") } catch let e as TokenVaultClient.Error { #expect(e.code == "not_found") }
        #expect(try await client.list() == ["acme/ads", "acme/page"])
        #expect(try await client.whoami().uid == 0)
        try await daemon.stop()
        _ = vault
    }

    @Test func rateLimitedCallerIsRefusedAndAudited() async throws {
        let sink = RecordingSink()
        let (daemon, _) = try await start(policy: allowRoot + "\nrate = 2\n", sink: sink)
        let c = try RawConnection(socketPath)
        var codes: [String] = []
        for i in 0..<6 { codes.append(errorCode(c.request(#"{"op":"get","name":"acme/ads","id":\#(i)}"#)) ?? "ok") }
        #expect(codes.prefix(2).allSatisfy { $0 == "ok" })
        #expect(codes.contains("rate_limited"))
        #expect(sink.events.withLock { $0.filter { $0.outcome == .rateLimited }.count } == codes.filter { $0 == "rate_limited" }.count)
        try await daemon.stop()
    }

    @Test func unavailableWhenTheAuditCannotBeWritten() async throws {
        let sink = RecordingSink()
        sink.failing.store(true, ordering: .relaxed)
        let (daemon, _) = try await start(sink: sink)
        let c = try RawConnection(socketPath)
        let reply = c.request(#"{"op":"get","name":"acme/ads","id":1}"#)
        #expect(errorCode(reply) == "unavailable")
        #expect(reply?["token"] == nil)
        #expect(errorCode(c.request(#"{"op":"list","id":2}"#)) == "unavailable")
        sink.failing.store(false, ordering: .relaxed)
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":3}"#)?["token"] as? String == "EAAB-acme-ads", "recovers by itself")
        try await daemon.stop()
    }

    @Test func pipelinedRequestsAnswerInOrder() async throws {
        let (daemon, _) = try await start()
        let c = try RawConnection(socketPath)
        var batch = ""
        for i in 0..<200 {
            batch += i % 3 == 0 ? #"{"op":"ping","id":\#(i)}"# : #"{"op":"get","name":"acme/ads","id":\#(i)}"#
            batch += "\n"
        }
        c.send(batch)
        for i in 0..<200 { #expect(c.json()?["id"] as? Int == i) }
        try await daemon.stop()
    }

    /// Each event loop holds one SQLite read transaction per tick and remembers the rows it read until
    /// SQLite's data_version moves: a value changed or a token removed by another writer (here the vault's
    /// own pool, as the CLI would) must show on the very next request, never from the remembered row.
    @Test func aChangeByAnotherWriterIsServedOnTheNextRead() async throws {
        let (daemon, vault) = try await start()
        let c = try RawConnection(socketPath)
        for round in 1...20 {
            try vault.put(name: "acme/ads", secret: secret("EAAB-round-\(round)"), kind: .systemUser, app: "acme", replace: true)
            #expect(c.request(#"{"op":"get","name":"acme/ads","id":\#(round)}"#)?["token"] as? String == "EAAB-round-\(round)")
        }
        try vault.remove(name: "acme/ads")
        #expect(errorCode(c.request(#"{"op":"get","name":"acme/ads","id":99}"#)) == "not_found")
        try await daemon.stop()
    }

    @Test func halfWrittenLinesAndGarbageDelayNobody() async throws {
        let (daemon, _) = try await start()
        let slow = try RawConnection(socketPath)
        slow.send(#"{"op":"get","na"#)  // and then nothing, for now
        let junk = try RawConnection(socketPath)
        junk.send([0xff, 0xfe, 0x00, 0x0a] + Array("}{\n[1,2]\n\"str\"\n".utf8))
        for _ in 0..<4 { #expect(errorCode(junk.json()) == "bad_request") }
        let other = try RawConnection(socketPath)
        #expect(other.request(#"{"op":"get","name":"acme/ads","id":1}"#)?["token"] as? String == "EAAB-acme-ads")
        slow.send(#"me":"acme/ads","id":2}"# + "\n")
        #expect(slow.json()?["token"] as? String == "EAAB-acme-ads")
        try await daemon.stop()
    }

    @Test func fiveHundredConcurrentConnectionsAreAllServed() async throws {
        let (daemon, _) = try await start()
        let connections = try (0..<500).map { _ in try RawConnection(socketPath, timeout: 20) }
        for (i, c) in connections.enumerated() { c.send(#"{"op":"get","name":"acme/ads","id":\#(i)}"# + "\n") }
        var served = 0
        for (i, c) in connections.enumerated() {
            let r = c.json()
            if r?["id"] as? Int == i && r?["token"] as? String == "EAAB-acme-ads" { served += 1 }
        }
        #expect(served == 500)
        try await daemon.stop()
    }

    @Test func idleConnectionsAreClosed() async throws {
        let (daemon, _) = try await start { $0.idleTimeout = .milliseconds(300) }
        let c = try RawConnection(socketPath)
        #expect(c.request(#"{"op":"ping"}"#)?["ok"] as? Bool == true)
        #expect(c.readLine() == nil, "closed after the idle timeout")
        try await daemon.stop()
    }

    @Test func connectionCapRefusesTheExtraOnes() async throws {
        let (daemon, _) = try await start { $0.maxConnections = 3 }
        let kept = try (0..<3).map { _ in try RawConnection(socketPath) }
        for c in kept { #expect(c.request(#"{"op":"ping"}"#) != nil) }
        let extra = try RawConnection(socketPath)
        #expect(extra.request(#"{"op":"ping"}"#) == nil)
        try await daemon.stop()
    }

    @Test func staleSocketIsReplacedLiveDaemonIsNotAndShutdownRemovesTheSocket() async throws {
        // A stale socket file: bound once, nobody listening.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        #expect(access(socketPath, F_OK) == 0)

        let (daemon, vault) = try await start()
        #expect(try RawConnection(socketPath).request(#"{"op":"ping"}"#) != nil)
        var st = stat()
        stat(socketPath, &st)
        #expect(st.st_mode & 0o777 == 0o660)

        // A second daemon on the same path refuses to start and leaves the first one serving.
        let second = VaultServer(configuration: .init(socketPath: socketPath), processor: daemon.processor, logger: .init(label: "t"))
        await #expect(throws: ServeError.self) { try await second.run() }
        #expect(try RawConnection(socketPath).request(#"{"op":"ping"}"#) != nil)

        try await daemon.stop()
        #expect(access(socketPath, F_OK) != 0, "graceful shutdown removes the socket file")
        _ = vault
    }

    @Test func worldWritableSocketDirectoryIsRefused() async throws {
        let open = dir.path + "/open"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        let vault = try makeVault(dir)
        let server = VaultServer(configuration: .init(socketPath: open + "/tv.sock"),
                                 processor: RequestProcessor(vault: vault, policy: .denyAll, audit: RecordingSink(), logger: .init(label: "t")),
                                 logger: .init(label: "t"))
        await #expect { try await server.run() } throws: { "\($0)".contains("world-writable") }
    }

    @Test func anotherUidIsDeniedWhateverItClaims() async throws {
        let (daemon, _) = try await start { $0.socketGroup = 1001 }
        // The client runs as uid 1001 and claims to be root in every way the protocol would let it.
        let script = """
            import socket, json
            s = socket.socket(socket.AF_UNIX); s.connect("\(socketPath)")
            f = s.makefile("rwb")
            for req in [{"op":"whoami","id":1}, {"op":"get","name":"acme/ads","id":2,"uid":0,"user":"root"}, {"op":"list","id":3,"uid":0}]:
                f.write((json.dumps(req) + "\\n").encode()); f.flush()
                print(f.readline().decode().strip())
            """
        let out = try run("/usr/bin/setpriv", ["--reuid", "1001", "--regid", "1001", "--clear-groups", "/usr/bin/python3", "-c", script])
        let lines = out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.count == 3)
        #expect(lines.first?["uid"] as? Int == 1001)
        #expect(errorCode(lines.count > 1 ? lines[1] : nil) == "denied")
        #expect(lines.count > 2 && lines[2]["names"] as? [String] == [])
        try await daemon.stop()
    }

    @Test func fuzzedLinesNeverStopTheDaemon() async throws {
        let (daemon, _) = try await start(sink: RecordingSink())
        var rng = SystemRandomNumberGenerator()
        let seeds = [#"{"op":"get","name":"acme/ads","id":1}"#, #"{"op":"ping","id":"x"}"#, #"{"op":"list"}"#,
                     #"{"op":"get","name":"acme/ads","proof":"timed","id":[1,{"a":null}]}"#]
        let c = try RawConnection(socketPath)
        var sent = 0
        var answered = 0
        // Sent in batches and read back after each: a client that never reads its replies is
        // (rightly) stopped by back-pressure, which is not what this test is about.
        for round in 0..<3000 {
            var bytes = Array(seeds[round % seeds.count].utf8)
            switch round % 4 {
            case 0: for _ in 0..<3 { bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            case 1: bytes = (0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 2: bytes.insert(contentsOf: Array("{[\"\\".utf8).shuffled(using: &rng), at: Int.random(in: 0..<bytes.count, using: &rng))
            default: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            }
            bytes.removeAll { $0 == 0x0a }
            c.send(bytes + [0x0a])
            sent += 1
            if sent % 100 == 0 {
                while answered < sent, let line = c.readLine() {
                    answered += 1
                    #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) is [String: Any], "every reply is a JSON object")
                }
            }
        }
        #expect(answered == sent)
        #expect(try RawConnection(socketPath).request(#"{"op":"ping","id":1}"#)?["protocol"] as? Int == 1)
        try await daemon.stop()
    }
}

func run(_ executable: String, _ arguments: [String]) throws -> String {
    try runProcess(executable, arguments).stdout
}

@Suite("Back-pressure")
struct BackPressureTests {
    let dir = TempDir()

    @Test func aClientThatNeverReadsDoesNotDelayOthers() async throws {
        let vault = try makeVault(dir)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(),
                                             socketPath: dir.path + "/tv.sock")
        let hog = try RawConnection(daemon.socketPath)
        var flags = fcntl(hog.fd, F_GETFL)
        flags |= O_NONBLOCK
        _ = fcntl(hog.fd, F_SETFL, flags)
        // Pipeline far more than the socket buffers hold, and never read a reply.
        let line = Array((#"{"op":"get","name":"acme/ads","id":1}"# + "\n").utf8)
        var pushed = 0
        for _ in 0..<100_000 {
            let n = line.withUnsafeBytes { Glibc.send(hog.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            pushed += 1
        }
        #expect(pushed < 100_000, "the daemon stopped reading from the hog")
        let other = try RawConnection(daemon.socketPath)
        #expect(other.request(#"{"op":"get","name":"acme/ads","id":2}"#)?["token"] as? String == "EAAB-acme-ads")
        try await daemon.stop()
    }
}
