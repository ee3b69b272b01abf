import Foundation
import Logging
import ServiceLifecycle
import TestSupport
import Testing
import VaultAudit
import VaultCore
import VaultCrypto
import VaultPolicy
@testable import VaultDaemon
#if canImport(Glibc)
import Glibc
#endif

/// The credential socket, with the test playing systemd: it binds the abstract address systemd uses for
/// `LoadCredential=ID:PATH`, connects, and reads to EOF — as root, and as another user.
@Suite("systemd credential socket", .serialized)
struct CredentialServerTests {
    let dir = TempDir()

    static let policy = """
        [[credential]]
        unit = "adsync.service"
        id = "meta_token"
        token = "acme/ads"

        [[credential]]
        unit = "gone.service"
        id = "meta_token"
        token = "acme/gone"
        """

    /// What systemd does: bind `\0<random>/unit/<unit>/<id>`, connect, read everything. Prints the bytes
    /// read as hex, or `refused:` and the errno name when the connection itself fails.
    static let systemdPlayer = #"""
        import os, socket, sys
        path, unit, cid = sys.argv[1], sys.argv[2], sys.argv[3]
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(b"\0" + os.urandom(8).hex().encode() + b"/unit/" + unit.encode() + b"/" + cid.encode())
        try:
            s.connect(path)
        except OSError as e:
            print("refused:" + (os.strerror(e.errno))); sys.exit(0)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
        print("bytes:" + data.hex())
        """#

    func play(_ socket: String, unit: String, id: String, asUser uid: UInt32? = nil) throws -> String {
        var argv = ["/usr/bin/python3", "-c", Self.systemdPlayer, socket, unit, id]
        if let uid { argv = ["/usr/bin/setpriv", "--reuid", "\(uid)", "--regid", "\(uid)", "--clear-groups"] + argv }
        let r = try runProcess("/usr/bin/env", argv)
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func hex(_ s: String) -> String { "bytes:" + Array(s.utf8).map { String(format: "%02x", $0) }.joined() }

    @Test func systemdGetsTheTokenAndEveryoneElseNothingAndAllIsAudited() async throws {
        let vault = try makeVault(dir)
        let audit = try AuditLog.open(for: vault)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let processor = RequestProcessor(vault: vault, policy: try Policy.parse(Self.policy), audit: audit, logger: logger)
        let socket = dir.path + "/credentials.sock"
        let server = CredentialServer(socketPath: socket, processor: processor, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: server)], logger: logger))
        let task = Task { try await group.run() }
        defer { task.cancel() }
        var st = stat()
        for _ in 0..<200 where lstat(socket, &st) != 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(st.st_mode & 0o777 == 0o600, "only root and the daemon's user can connect at all")

        #expect(try play(socket, unit: "adsync.service", id: "meta_token") == hex("EAAB-acme-ads"))
        #expect(try play(socket, unit: "other.service", id: "meta_token") == "bytes:", "an unknown unit gets no bytes")
        #expect(try play(socket, unit: "adsync.service", id: "wrong_id") == "bytes:", "a wrong id gets no bytes")
        #expect(try play(socket, unit: "gone.service", id: "meta_token") == "bytes:", "a rule for a missing token gets no bytes")

        // Another user, once an admin has let everyone reach the socket: refused by the uid check.
        chmod(dir.path, 0o755)
        chmod(socket, 0o666)
        #expect(try play(socket, unit: "adsync.service", id: "meta_token", asUser: 65534) == "bytes:", "a non-root peer gets no bytes")

        await group.triggerGracefulShutdown()
        try await task.value
        #expect(access(socket, F_OK) != 0, "the socket is removed at shutdown")
        audit.close()
        let records = AuditQuery.entries(directory: vault.home.auditDirectory).filter { $0.channel == "credential" }
        #expect(records.map(\.outcome) == ["granted", "denied", "denied", "not_found", "denied"])
        try #require(records.count == 5)
        #expect(records[0].token == "acme/ads" && records[0].reason?.contains("unit adsync.service credential meta_token") == true)
        #expect(records[0].tokenHmac != nil)
        #expect(records[1].reason?.contains("no [[credential]] rule gives other.service") == true)
        #expect(records[4].uid == 65534 && records[4].reason?.contains("not as the service manager") == true)
    }

    @Test func systemdsPeerAddressIsParsedStrictly() {
        func parse(_ s: String) -> (String, String)? { CredentialServer.parseAddress(Array(s.utf8)).map { ($0.unit, $0.id) } }
        #expect(parse("0123abcd/unit/adsync.service/meta_token")! == ("adsync.service", "meta_token"))
        #expect(parse("r/unit/foo@bar.service/x.y")! == ("foo@bar.service", "x.y"))
        #expect(parse("/unit/adsync.service/meta_token") == nil)
        #expect(parse("r/unit/adsync.service/meta/token") == nil)
        #expect(parse("r/user/adsync.service/meta_token") == nil)
        #expect(parse("r/unit/adsync/meta_token") == nil, "a unit name has a type")
        #expect(parse("r/unit/adsync.service/..") == nil)
    }

    @Test func credentialRulesAreCheckedWhenThePolicyParses() {
        #expect(throws: PolicyError.self) { try Policy.parse("[[credential]]\nunit = \"adsync\"\nid = \"x\"\ntoken = \"a/b\"\n") }
        #expect(throws: PolicyError.self) { try Policy.parse("[[credential]]\nunit = \"a.service\"\nid = \"x/y\"\ntoken = \"a/b\"\n") }
        #expect(throws: PolicyError.self) { try Policy.parse("[[credential]]\nunit = \"a.service\"\nid = \"x\"\ntoken = \"a/*\"\n") }
        #expect(throws: PolicyError.self) { try Policy.parse("[[credential]]\nunit = \"a.service\"\nid = \"x\"\ntoken = \"a/b\"\nuid = 0\n") }
        let p = try? Policy.parse(Self.policy)
        #expect(p?.credential(unit: "adsync.service", id: "meta_token")?.token == "acme/ads")
        #expect(p?.rules.isEmpty == true, "credential rules grant no socket reads")
    }
}
