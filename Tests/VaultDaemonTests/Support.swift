import Foundation
import TestSupport
import Logging
import ServiceLifecycle
import Synchronization
import VaultAudit
import VaultCore
import VaultStores
import VaultCrypto
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire
#if canImport(Glibc)
import Glibc
#endif



/// An audit sink that records events, and can be told to fail or to hold completions.
final class RecordingSink: AuditSink, @unchecked Sendable {
    let events = Mutex<[AuditEvent]>([])
    let failing = Atomic<Bool>(false)
    let holding = Atomic<Bool>(false)
    let held = Mutex<[@Sendable () -> Void]>([])

    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        if failing.load(ordering: .relaxed) {
            completion(.failure(AuditWriteErrorForTests()))
            return
        }
        events.withLock { $0.append(event) }
        if holding.load(ordering: .relaxed) {
            held.withLock { $0.append { completion(.success(())) } }
        } else {
            completion(.success(()))
        }
    }

    /// Completes held records in reverse order: the latest first.
    func releaseReversed() {
        let all = held.withLock { h -> [@Sendable () -> Void] in defer { h = [] }; return h }
        for c in all.reversed() { c() }
    }
}

struct AuditWriteErrorForTests: Error {}

/// A vault with a few tokens and an app, in a temporary home.
func makeVault(_ dir: TempDir) throws -> Vault {
    let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
    try vault.addApp(name: "acme", appId: "1234567", secret: secret("app-secret-acme"))
    try vault.put(name: "acme/ads", secret: secret("EAAB-acme-ads"), kind: .systemUser, app: "acme")
    try vault.put(name: "acme/page", secret: secret("EAAB-acme-page\"quote\\"), kind: .page)
    try vault.put(name: "other/x", secret: secret("EAAB-other"), kind: .user)
    return vault
}

let allowRoot = """
    [[allow]]
    uid = 0
    tokens = ["acme/*"]
    proof = true
    """

/// A daemon running in this process on a temporary socket.
final class RunningDaemon: @unchecked Sendable {
    let server: VaultServer
    let group: ServiceGroup
    let task: Task<Void, Error>
    let socketPath: String

    init(vault: Vault, policy: Policy, audit: any AuditSink, socketPath: String, configure: (inout VaultServer.Configuration) -> Void = { _ in }) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var config = VaultServer.Configuration(socketPath: socketPath)
        configure(&config)
        let processor = RequestProcessor(vault: vault, policy: policy, audit: audit, logger: logger)
        server = VaultServer(configuration: config, processor: processor, logger: logger)
        group = ServiceGroup(configuration: .init(services: [.init(service: server)], logger: logger))
        let g = group
        task = Task { try await g.run() }
        self.socketPath = socketPath
        try await server.waitUntilServing()
    }

    var processor: RequestProcessor { server.processor }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }
}

/// A raw client connection, for sending exactly the bytes a test wants.
final class RawConnection {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(_ path: String, timeout: Int = 5) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard SocketPath.connectUnix(fd, path) == 0 else {
            close(fd)
            throw ServeError("connect failed: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// The next line, or nil when the connection closed (or nothing came in time).
    func readLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0a) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    func json() -> [String: Any]? {
        guard let line = readLine() else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    func request(_ line: String) -> [String: Any]? {
        send(line + "\n")
        return json()
    }
}

func errorCode(_ reply: [String: Any]?) -> String? {
    (reply?["error"] as? [String: Any])?["code"] as? String
}
