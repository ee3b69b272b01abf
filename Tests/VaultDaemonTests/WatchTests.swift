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

/// `watch` on a real socket: events for changes committed by another connection to the store, only for
/// names the caller may read now, never a token, and refusals that leave an ordinary connection.
@Suite("watch", .serialized)
struct WatchTests {
    let dir = TempDir()
    var socketPath: String { dir.path + "/tv.sock" }

    func start(policy: String = allowRoot) async throws -> (RunningDaemon, Vault, AuditLog) {
        let vault = try makeVault(dir)
        let audit = try AuditLog.open(for: vault)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(policy), audit: audit, socketPath: socketPath)
        return (daemon, vault, audit)
    }

    /// Another connection to the same store, as the CLI in another process would have.
    func writer() throws -> Vault {
        try Vault.open(home: VaultHome(root: dir.path + "/home"))
    }

    @Test func changesCommittedElsewhereAreToldWithoutTheToken() async throws {
        let (daemon, _, _) = try await start()
        let c = try RawConnection(socketPath)
        let ack = c.request(#"{"op":"watch","names":["acme/*"],"id":"w"}"#)
        #expect(ack?["ok"] as? Bool == true && ack?["id"] as? String == "w" && ack?["watching"] as? [String] == ["acme/*"])
        let w = try writer()
        try w.put(name: "other/x", secret: secret("EAAB-other-2"), replace: true)  // not readable: no event
        try w.put(name: "acme/ads", secret: secret("EAAB-new-value"), kind: .systemUser, app: "acme", replace: true)
        let replaced = c.readLine()
        #expect(replaced == #"{"event":"changed","name":"acme/ads","change":"replaced"}"#)
        try w.remove(name: "acme/page")
        try w.put(name: "acme/new", secret: secret("EAAB-brand-new"))
        try w.replaceSecret(name: "acme/new", secret: secret("EAAB-extended"), expiresAt: nil)
        #expect(c.json()?["change"] as? String == "removed")
        let created = c.json()
        #expect(created?["name"] as? String == "acme/new" && created?["change"] as? String == "replaced")
        #expect(c.json()?["change"] as? String == "refreshed")
        // Later requests on a watching connection are dropped, not answered.
        c.send(#"{"op":"ping","id":9}"# + "\n")
        try w.put(name: "acme/ads", secret: secret("EAAB-third"), kind: .systemUser, app: "acme", replace: true)
        let next = c.readLine() ?? ""
        #expect(next.contains(#""name":"acme/ads""#) && !next.contains("EAAB"))
        try await daemon.stop()
        #expect(c.readLine() == nil, "a graceful stop closes watching connections")
    }

    @Test func aPatternThePolicyDoesNotCoverIsDeniedAuditedAndTheConnectionGoesOn() async throws {
        let (daemon, vault, audit) = try await start()
        let c = try RawConnection(socketPath)
        // Pipelined behind the refused watch: answered after it, in order.
        c.send(#"{"op":"watch","names":["acme/ads","other/*"],"id":1}"# + "\n" + #"{"op":"ping","id":2}"# + "\n")
        let refused = c.json()
        #expect(errorCode(refused) == "denied" && refused?["id"] as? Int == 1)
        #expect(((refused?["error"] as? [String: Any])?["message"] as? String)?.contains("other/*") == true)
        #expect(c.json()?["id"] as? Int == 2)
        #expect(errorCode(c.request(#"{"op":"watch","names":["*"]}"#)) == "denied", "acme/* does not cover every name")
        #expect(errorCode(c.request(#"{"op":"watch","names":["ac*"]}"#)) == "denied", "ac* is wider than acme/*")
        #expect(errorCode(c.request(#"{"op":"watch","names":"acme/*"}"#)) == "bad_request")
        #expect(errorCode(c.request(#"{"op":"watch","names":[]}"#)) == "bad_request")
        #expect(errorCode(c.request(#"{"op":"watch","names":["bad name"]}"#)) == "bad_request")
        #expect(c.request(#"{"op":"watch","names":["acme/x/*","acme/ads"]}"#)?["ok"] as? Bool == true, "narrower patterns are fine")
        try await daemon.stop()
        audit.close()
        let records = AuditQuery.entries(directory: vault.home.auditDirectory).filter { $0.action == "watch" }
        #expect(records.map(\.outcome) == ["denied", "denied", "denied", "denied", "granted"])
        #expect(records.first?.reason?.contains("other/*") == true)
    }

    @Test func aWatcherHearsOnlyWhatThePolicyInForceLetsItRead() async throws {
        let (daemon, _, _) = try await start()
        let c = try RawConnection(socketPath)
        #expect(c.request(#"{"op":"watch","names":["acme/*"]}"#)?["ok"] as? Bool == true)
        // The policy changes under the watcher: acme/ads is no longer the caller's to read.
        daemon.processor.replacePolicy(try Policy.parse("""
            [[allow]]
            uid = 0
            tokens = ["acme/page"]
            """))
        let w = try writer()
        try w.put(name: "acme/ads", secret: secret("EAAB-hidden-change"), kind: .systemUser, app: "acme", replace: true)
        try w.put(name: "acme/page", secret: secret("EAAB-visible-change"), kind: .page, replace: true)
        let only = c.json()
        #expect(only?["name"] as? String == "acme/page", "the change to acme/ads is not told once the policy forbids it")
        try await daemon.stop()
    }

    @Test func theSwiftClientWatchesAsAnAsyncSequence() async throws {
        let (daemon, _, _) = try await start()
        let client = TokenVaultClient(socketPath: socketPath, expectedServerUID: getuid())
        await #expect(throws: TokenVaultClient.Error.self) {
            for try await _ in client.watch(["other/*"]) {}
        }
        let changes = client.watch(["acme/ads"])
        let writer = try writer()
        let task = Task {
            var seen: [TokenVaultClient.Change] = []
            for try await change in changes {
                seen.append(change)
                if seen.count == 2 { break }
            }
            return seen
        }
        // The watch is acknowledged before watch(_:) returns its stream: these changes are not missed.
        try await Task.sleep(for: .milliseconds(50))
        try writer.put(name: "acme/ads", secret: secret("EAAB-v2"), kind: .systemUser, app: "acme", replace: true)
        try writer.remove(name: "acme/ads")
        let seen = try await task.value
        #expect(seen == [.init(name: "acme/ads", kind: .replaced), .init(name: "acme/ads", kind: .removed)])
        try await daemon.stop()
    }

    @Test func aWatcherThatNeverReadsIsDisconnectedAndOthersStillHear() async throws {
        let (daemon, _, _) = try await start()
        let slow = try RawConnection(socketPath)
        var small: Int32 = 4096
        setsockopt(slow.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        #expect(slow.request(#"{"op":"watch","names":["acme/*"]}"#)?["ok"] as? Bool == true)
        let fast = try RawConnection(socketPath)
        #expect(fast.request(#"{"op":"watch","names":["acme/ads"]}"#)?["ok"] as? Bool == true)
        let w = try writer()
        // Enough events to fill the slow one's socket and its queue (each put is one event for it).
        let burst = (0..<(3 * ConnectionHandler.maxQueuedEvents)).map {
            ImportEntry(name: "acme/burst-\($0)", secret: secret("EAAB-b"))
        }
        try w.put(burst, replace: false)
        try w.put(name: "acme/ads", secret: secret("EAAB-after"), kind: .systemUser, app: "acme", replace: true)
        #expect(fast.json()?["name"] as? String == "acme/ads")
        // The slow watcher's connection ends: after what was buffered, EOF rather than a stall.
        var lines = 0
        while slow.readLine() != nil { lines += 1 }
        #expect(lines < burst.count + 1, "the slow watcher was cut off, not sent everything")
        try await daemon.stop()
    }
}
