import Foundation
import TestSupport
import Testing
import TokenVaultClient
import VaultAudit
import VaultCore
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire
#if canImport(Glibc)
import Glibc
#endif

/// The attacks of the security review, each done for real against a daemon in this process: a hostile
/// neighbour's socket directory, an impostor server, an audit flood, a forged name, a trickling client,
/// a connection hog, an edited `vault.db`, and a deleted audit directory. Each fails on the code before
/// the fixes it names.
@Suite("Attacks on the daemon")
struct AttackTests {
    let dir = TempDir()

    // MARK: 1. socket directory takeover, impostor servers

    @Test func groupWritableOrForeignSocketDirectoryIsRefused() async throws {
        let vault = try makeVault(dir)
        let shared = dir.path + "/shared"
        mkdir(shared, 0o775)
        chmod(shared, 0o775)
        await #expect(throws: ServeError.self) {
            _ = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(), socketPath: shared + "/tv.sock")
        }
        do { _ = try SocketPath.prepare(shared + "/tv.sock"); Issue.record("a group-writable directory was accepted") } catch {
            #expect("\(error)".contains("group-writable") && "\(error)".contains("chmod g-w"))
        }
        if getuid() == 0 {
            let foreign = dir.path + "/foreign"
            mkdir(foreign, 0o755)
            chown(foreign, 65534, 65534)
            do { _ = try SocketPath.prepare(foreign + "/tv.sock"); Issue.record("a directory owned by another user was accepted") } catch {
                #expect("\(error)".contains("owned by uid 65534"))
            }
        }
    }

    /// The socket appears at its path already 0660 (bound and chmod'ed in a private directory, then
    /// renamed): a process watching the directory while the daemon starts never sees it otherwise, and
    /// nothing is left behind.
    @Test func socketAppearsWithItsFinalModeAndNoStagingIsLeft() async throws {
        let vault = try makeVault(dir)
        let path = dir.path + "/tv.sock"
        let seen = Watcher(path: path)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(), socketPath: path)
        let modes = seen.stop()
        #expect(!modes.isEmpty)
        #expect(modes.allSatisfy { $0 == 0o660 }, "modes seen: \(modes.map { String($0, radix: 8) })")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".tokenvault-") }
        #expect(leftovers.isEmpty)
        try await daemon.stop()
        #expect(access(path, F_OK) != 0, "the daemon removes its own socket")
    }

    /// A server that is not the daemon's user: the Swift client refuses it before sending anything.
    @Test func swiftClientRefusesAnImpostor() throws {
        let impostor = try ImpostorServer(path: dir.path + "/imp.sock")
        defer { impostor.stop() }
        let wrong = TokenVaultClient(socketPath: impostor.path, timeout: 2, expectedServerUID: getuid() &+ 1)
        #expect(throws: TokenVaultClient.Error.self) { _ = try wrong.getBlocking("acme/ads") }
        do { _ = try wrong.getBlocking("acme/ads") } catch let e as TokenVaultClient.Error {
            #expect(e.code == "impostor" && !e.description.contains("ATTACKER"))
        }
        #expect(impostor.requests == 0, "nothing was sent to the impostor")
        // The same server passes when its uid is the expected one: the check is what refused it.
        let right = TokenVaultClient(socketPath: impostor.path, timeout: 2, expectedServerUID: getuid())
        #expect(try right.getBlocking("acme/ads").token == "ATTACKER")
    }

    /// The attack itself: a directory others can write (owned by root), an impostor bound in it by
    /// another user. By default the client trusts only root or the directory's owner, so it refuses.
    @Test(.enabled(if: getuid() == 0, "needs root to run the impostor as another user"))
    func defaultClientRefusesAnImpostorInAWritableDirectory() throws {
        let open = dir.path + "/open"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        let path = open + "/tokenvault.sock"
        let server = try impostorAsNobody(at: path)
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }  // SIGTERM may be ignored: the in-process daemons trap it
        do {
            _ = try TokenVaultClient(socketPath: path, timeout: 2).getBlocking("acme/ads")
            Issue.record("the client took a token from an impostor")
        } catch let e as TokenVaultClient.Error {
            #expect(e.code == "impostor", "\(e)")
        }
    }

    /// A directory above the socket's that others can write (not sticky), or a symlink on the path owned
    /// by another user: whoever controls it could swap the socket's directory. `serve` refuses both, and
    /// the client refuses a server reached through such a path.
    @Test func pathAboveTheSocketDirectoryMustBeOutOfOthersReach() async throws {
        let vault = try makeVault(dir)
        let shared = dir.path + "/shared"
        mkdir(shared, 0o777)
        chmod(shared, 0o777)
        mkdir(shared + "/tv", 0o755)
        do { _ = try SocketPath.prepare(shared + "/tv/tv.sock"); Issue.record("a world-writable grandparent was accepted") } catch {
            #expect("\(error)".contains("not sticky"), "\(error)")
        }
        chmod(shared, 0o1777)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(), socketPath: shared + "/tv/tv.sock")
        try await daemon.stop()
        if getuid() == 0 {
            let real = dir.path + "/real"
            mkdir(real, 0o755)
            let link = dir.path + "/link"
            symlink(real, link)
            lchown(link, 65534, 65534)
            do { _ = try SocketPath.prepare(link + "/tv.sock"); Issue.record("a symlink owned by another user was accepted") } catch {
                #expect("\(error)".contains("symbolic link owned by uid 65534"), "\(error)")
            }
            // The client's side of the same attack: an impostor (uid 65534) owning its directory and socket,
            // under a parent that others can write.
            chmod(shared, 0o777)
            mkdir(shared + "/imp", 0o755)
            chown(shared + "/imp", 65534, 65534)
            let path = shared + "/imp/tokenvault.sock"
            let server = try impostorAsNobody(at: path)
            defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }  // SIGTERM may be ignored: the in-process daemons trap it
            do {
                _ = try TokenVaultClient(socketPath: path, timeout: 2).getBlocking("acme/ads")
                Issue.record("the client took a token from an impostor under a writable parent")
            } catch let e as TokenVaultClient.Error {
                #expect(e.code == "impostor" && e.description.contains(shared), "\(e)")
            }
        }
    }

    // MARK: 2 and 6. audit flood by a caller no rule names; names as the CLI validates them

    /// A caller the policy does not name sends thousands of refused requests with 60 KiB names: the log
    /// grows by at most the refusal budget (32 records, then 8 a second) plus one summary a second, each
    /// record small, and every other caller is still served.
    @Test func refusalFloodIsBoundedAndSummarised() async throws {
        let vault = try makeVault(dir)
        let log = try AuditLog.open(for: vault)
        defer { log.close() }
        // Rules for someone else only: this process is a caller no rule names.
        let policy = try Policy.parse("[[allow]]\nuid = \(getuid() &+ 4242)\ntokens = [\"acme/*\"]\n")
        let daemon = try await RunningDaemon(vault: vault, policy: policy, audit: log, socketPath: dir.path + "/tv.sock")
        let before = auditBytes(vault)
        let started = Date()
        let c = try RawConnection(daemon.socketPath)
        let huge = String(repeating: "A", count: 60_000)
        var rateLimited = 0
        for i in 0..<3000 {
            let line: String
            switch i % 3 {
            case 0: line = #"{"op":"get","name":"\#(huge)","id":\#(i)}"#
            case 1: line = #"{"op":"get","name":"acme/ads","id":\#(i)}"#
            default: line = #"{"op":"list","id":\#(i)}"#
            }
            if errorCode(c.request(line)) == "rate_limited" { rateLimited += 1 }
        }
        let seconds = Date().timeIntervalSince(started)
        try await Task.sleep(nanoseconds: 1_500_000_000)  // the summary record of the last interval
        try await daemon.stop()
        log.close()
        let flood = try auditRecords(vault).filter { ($0["action"] as? String) != "audit_checkpoint" }
        let summaries = flood.filter { $0["action"] as? String == "refusals_suppressed" }
        let individual = flood.count - summaries.count
        let bound = 32 + Int(8 * (seconds + 2)) + 1
        #expect(individual <= bound, "\(individual) records for \(String(format: "%.1f", seconds)) s of flood; the bound is \(bound)")
        #expect(summaries.count <= Int(seconds + 3) && !summaries.isEmpty)
        #expect(rateLimited >= 3000 - bound)
        #expect(summaries.allSatisfy { ($0["reason"] as? String ?? "").contains("uid \(getuid())") })
        let grown = auditBytes(vault) - before
        #expect(grown < (bound + summaries.count + 4) * 2048, "the log grew by \(grown) bytes")
        // No record holds more than the capped name.
        #expect(flood.allSatisfy { (($0["token"] as? String) ?? "").utf8.count <= 300 })
    }

    /// `acme/ads\u0000/../../other/x` was served as acme/ads while the audit named the other: now it is
    /// refused as the CLI refuses it, and the record names what was asked, not a token that was served.
    @Test func nameWithNULIsRefusedNotServed() async throws {
        let vault = try makeVault(dir)
        let sink = RecordingSink()
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: sink, socketPath: dir.path + "/tv.sock")
        let c = try RawConnection(daemon.socketPath)
        for name in [#"acme/ads\u0000/../../other/x"#, #"acme/ads\n"#, "acme/ads*", "-acme", String(repeating: "a", count: 129)] {
            let reply = c.request(#"{"op":"get","name":"\#(name)","id":1}"#)
            #expect(errorCode(reply) == "bad_request", "\(name): \(String(describing: reply))")
            #expect(reply?["token"] == nil)
        }
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":2}"#)?["token"] as? String == "EAAB-acme-ads")
        try await daemon.stop()
        let events = sink.events.withLock { $0 }
        #expect(events.count == 6)
        #expect(events.prefix(5).allSatisfy { $0.outcome == .denied && $0.token != "acme/ads" && ($0.reason ?? "").hasPrefix("invalid name") })
    }

    // MARK: 8. slow clients and connection hogs

    /// A byte every 300 ms is not activity: only complete requests reset the idle timer.
    @Test func tricklingConnectionIsClosedAtTheIdleTimeout() async throws {
        let vault = try makeVault(dir)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(),
                                             socketPath: dir.path + "/tv.sock") { $0.idleTimeout = .seconds(1) }
        let c = try RawConnection(daemon.socketPath, timeout: 1)
        let started = Date()
        var closed = false
        for byte in Array(#"{"op":"ping","id":1,"pad":"\#(String(repeating: "x", count: 40))"#.utf8) {
            c.send([byte])
            usleep(300_000)
            var probe: UInt8 = 0
            let n = recv(c.fd, &probe, 1, Int32(MSG_DONTWAIT))
            if n == 0 { closed = true; break }
            if Date().timeIntervalSince(started) > 6 { break }
        }
        #expect(closed, "a connection that completes no request is closed")
        #expect(Date().timeIntervalSince(started) < 5)
        try await daemon.stop()
    }

    /// One uid holding connections open takes at most its own share: its next one is closed, while
    /// another uid still gets in.
    @Test func connectionCapIsPerUID() async throws {
        let vault = try makeVault(dir)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(),
                                             socketPath: dir.path + "/tv.sock") { $0.maxConnectionsPerUID = 3 }
        let held = try (0..<3).map { _ in try RawConnection(daemon.socketPath, timeout: 2) }
        for h in held { #expect(h.request(#"{"op":"ping"}"#)?["ok"] as? Bool == true) }
        let fourth = try RawConnection(daemon.socketPath, timeout: 2)
        #expect(fourth.request(#"{"op":"ping"}"#) == nil, "the fourth connection of one uid is closed")
        if getuid() == 0 {
            chmod(daemon.socketPath, 0o666)
            let out = try run("/usr/bin/setpriv", ["--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", """
                import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect("\(daemon.socketPath)")
                s.sendall(b'{"op":"ping"}\\n'); print(s.recv(200).decode().strip())
                """])
            #expect(out.contains("\"ok\":true"), "another uid is still served: \(out)")
        }
        try await daemon.stop()
    }

    // MARK: 4. metadata written by someone who holds no key

    /// An edited `scopes` column once spliced `"token":"<attacker's value>"` into the reply. Now the
    /// scopes are typed values and the metadata is bound to the sealed record: any edit fails closed.
    @Test func editedMetadataIsRefusedNeverSpliced() async throws {
        let vault = try makeVault(dir)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: RecordingSink(), socketPath: dir.path + "/tv.sock")
        let c = try RawConnection(daemon.socketPath)
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":0}"#)?["token"] as? String == "EAAB-acme-ads")
        let edits = [
            #"UPDATE tokens SET scopes = '["ads_read"],"token":"EVIL-TOKEN","x":[' WHERE name = 'acme/ads'"#,
            #"UPDATE tokens SET expires_at = 4102444800 WHERE name = 'acme/ads'"#,
            #"UPDATE tokens SET valid = 1, checked_at = 1 WHERE name = 'acme/ads'"#,
            #"UPDATE tokens SET kind = 'user' WHERE name = 'acme/ads'"#,
            #"UPDATE tokens SET meta_mac = NULL WHERE name = 'acme/ads'"#,
        ]
        for (i, edit) in edits.enumerated() {
            try sqlite(vault.home.databasePath, "CREATE TABLE keep AS SELECT * FROM tokens WHERE name = 'acme/ads'; \(edit)")
            let reply = c.request(#"{"op":"get","name":"acme/ads","id":\#(i + 1)}"#)
            #expect(errorCode(reply) == "unavailable", "\(edit): \(String(describing: reply))")
            #expect(reply?["token"] == nil)
            try restore(vault)
            #expect(c.request(#"{"op":"get","name":"acme/ads","id":99}"#)?["token"] as? String == "EAAB-acme-ads", "restored")
        }
        try await daemon.stop()
    }

    /// A re-seal (or any later change through the vault) must not bless metadata edited behind its back:
    /// the row's MAC is checked before the row is MAC'd again, and what is MAC'd is what the vault
    /// computed, not what a trigger left in the row.
    @Test func resealNeverBlessesEditedMetadata() async throws {
        let vault = try makeVault(dir)
        try sqlite(vault.home.databasePath, #"UPDATE tokens SET scopes = '["business_management"]', valid = 1 WHERE name = 'acme/ads'"#)
        #expect(throws: VaultError.self) { try vault.get(name: "acme/ads") }
        try vault.rotateMasterKey()
        try vault.beginReseal()
        #expect(throws: VaultError.self, "the re-seal stops at the edited row") { try vault.continueReseal() }
        #expect(throws: VaultError.self, "and the edited row is still refused") { try vault.get(name: "acme/ads") }

        // The quiet variant: a trigger that edits the metadata as the re-seal writes the row.
        let other = TempDir()
        let fresh = try makeVault(other)
        try sqlite(fresh.home.databasePath, """
            CREATE TRIGGER sneak AFTER UPDATE OF sealed ON tokens BEGIN
              UPDATE tokens SET kind = 'page', scopes = '["business_management"]' WHERE name = NEW.name; END;
            """)
        try fresh.rotateMasterKey()
        try fresh.beginReseal()
        _ = try? fresh.continueReseal()
        #expect(throws: VaultError.self, "what the trigger wrote fails the next read") { try fresh.get(name: "acme/ads") }
    }

    // MARK: 10. the audit directory deleted under a running daemon

    @Test func deletedAuditDirectoryFailsClosedUntilReopened() async throws {
        let vault = try makeVault(dir)
        let log = try AuditLog.open(for: vault)
        defer { log.close() }
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: log, socketPath: dir.path + "/tv.sock")
        let c = try RawConnection(daemon.socketPath)
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":0}"#)?["token"] as? String == "EAAB-acme-ads")
        try FileManager.default.removeItem(atPath: vault.home.auditDirectory)
        for i in 1...3 {
            let reply = c.request(#"{"op":"get","name":"acme/ads","id":\#(i)}"#)
            #expect(errorCode(reply) == "unavailable" && reply?["token"] == nil, "\(String(describing: reply))")
        }
        log.reopen()  // what SIGHUP does
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":9}"#)?["token"] as? String == "EAAB-acme-ads")
        #expect(access(AuditSegments.path(vault.home.auditDirectory, 1), F_OK) == 0, "a new segment holds the new records")
        try await daemon.stop()
    }

    // MARK: helpers

    /// An impostor run as uid 65534: binds `path` and answers every connection with a forged token, for
    /// at most 10 s. Returns once the socket exists.
    func impostorAsNobody(at path: String) throws -> Process {
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        server.arguments = ["--reuid", "65534", "--regid", "65534", "--clear-groups", "/usr/bin/python3", "-c", """
            import socket, time
            s = socket.socket(socket.AF_UNIX); s.bind("\(path)"); s.listen(8); s.settimeout(10)
            end = time.time() + 10
            while time.time() < end:
                try: c, _ = s.accept()
                except socket.timeout: break
                try: c.sendall(b'{"id":1,"ok":true,"name":"acme/ads","token":"ATTACKER","kind":"user"}\\n')
                except OSError: pass
                c.close()
            """]
        try server.run()
        // Ready once it accepts: the socket file exists between its bind and its listen already.
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            let connected = SocketPath.connectUnix(fd, path) == 0
            close(fd)
            if connected { break }
            usleep(20_000)
        }
        return server
    }

    func sqlite(_ db: String, _ sql: String) throws {
        let out = try run("/usr/bin/python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()", db, sql])
        #expect(!out.contains("Error"), "\(out)")
    }

    func restore(_ vault: Vault) throws {
        try sqlite(vault.home.databasePath, """
            DELETE FROM tokens WHERE name = 'acme/ads'; INSERT INTO tokens SELECT * FROM keep; DROP TABLE keep;
            """)
    }

    func auditBytes(_ vault: Vault) -> Int {
        AuditSegments.list(vault.home.auditDirectory).reduce(0) { total, i in
            var st = stat()
            return total + (stat(AuditSegments.path(vault.home.auditDirectory, i), &st) == 0 ? Int(st.st_size) : 0)
        }
    }

    func auditRecords(_ vault: Vault) throws -> [[String: Any]] {
        try AuditSegments.list(vault.home.auditDirectory).flatMap { i in
            try String(contentsOfFile: AuditSegments.path(vault.home.auditDirectory, i), encoding: .utf8)
                .split(separator: "\n").compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
    }
}

/// Polls a path's mode from another thread, the way a racing process would look at it.
final class Watcher: @unchecked Sendable {
    private let lock = NSLock()
    private var modes: [UInt32] = []
    private var running = true

    init(path: String) {
        Thread { [self] in
            while isRunning {
                var st = stat()
                if lstat(path, &st) == 0 { note(UInt32(st.st_mode & 0o7777)) }
            }
        }.start()
    }

    private var isRunning: Bool { lock.lock(); defer { lock.unlock() }; return running }

    private func note(_ mode: UInt32) {
        lock.lock(); defer { lock.unlock() }
        if modes.count < 64 { modes.append(mode) }
    }

    /// Stops watching; the modes seen (the first 64 looks that found something).
    func stop() -> [UInt32] {
        usleep(50_000)
        lock.lock(); defer { lock.unlock() }
        running = false
        return modes
    }
}

/// A plain socket server in this process that answers every line with a forged token.
final class ImpostorServer: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var count = 0
    private var stopped = false

    var requests: Int { lock.lock(); defer { lock.unlock() }; return count }

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, listen(fd, 8) == 0 else { throw ServeError("impostor cannot bind") }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let listener = self.fd
        Thread { [self] in
            while !self.isStopped {
                let c = accept(listener, nil, nil)
                if c < 0 { continue }
                var tv = timeval(tv_sec: 1, tv_usec: 0)
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var buf = [UInt8](repeating: 0, count: 4096)
                if recv(c, &buf, buf.count, 0) > 0 {
                    self.lock.lock(); self.count += 1; self.lock.unlock()
                    let reply = Array(#"{"id":1,"ok":true,"name":"acme/ads","token":"ATTACKER","kind":"user","expires_at":null,"scopes":[],"valid":null,"checked_at":null}"#.utf8) + [0x0a]
                    _ = reply.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                }
                close(c)
            }
        }.start()
    }

    private var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    func stop() {
        lock.lock(); stopped = true; lock.unlock()
        usleep(300_000)
        close(fd)
        unlink(path)
    }
}
