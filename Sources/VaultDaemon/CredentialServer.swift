import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VaultCore
import VaultPolicy
import VaultWire
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault serve --credential-socket PATH`: the server systemd's `LoadCredential=ID:PATH` reads.
///
/// When a unit starts, systemd (v247+) connects from the abstract address `\0<random>/unit/<unit>/<ID>`,
/// sends nothing and reads the credential to EOF. The daemon answers only a peer whose `SO_PEERCRED` uid
/// is 0 (the service manager) and whose address names a unit and id that a `[[credential]]` rule of the
/// policy in force gives a token. The token's record (channel `credential`, the unit and id in its
/// reason) is durable before a byte is sent; anything else is closed with no bytes and recorded as
/// denied. The socket is mode 0600: only root and the daemon's own user can connect at all.
///
/// One thread accepts, one connection at a time (systemd starts units one after another), and leaves the
/// audit flusher to write and close each answer once its record is durable.
public final class CredentialServer: Service, Sendable {
    public let socketPath: String
    private let listeningDescriptor: CInt?
    private let processor: RequestProcessor
    private let logger: Logger
    private let listener = Mutex<Int32>(-1)

    /// `listeningDescriptor`: a socket systemd bound (socket activation), served as it is and left in place.
    public init(socketPath: String, listeningDescriptor: CInt? = nil, processor: RequestProcessor, logger: Logger) {
        self.socketPath = socketPath
        self.listeningDescriptor = listeningDescriptor
        self.processor = processor
        self.logger = logger
    }

    public func run() async throws {
        let fd = try listeningDescriptor ?? bind()
        listener.withLock { $0 = fd }
        logger.info("serving systemd credentials", metadata: ["socket": "\(socketPath)", "rules": "\(processor.policy.credentials.count)"])
        let thread = Thread { [self] in acceptLoop(fd) }
        thread.name = "tokenvault-credentials"
        thread.start()
        try? await gracefulShutdown()
        Glibc.shutdown(fd, Int32(SHUT_RDWR))  // wakes accept(2)
        if listeningDescriptor == nil { unlink(socketPath) }
    }

    private func bind() throws -> Int32 {
        let placement = try SocketPath.prepare(socketPath)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { SocketPath.abandon(placement); throw ServeError("socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(placement.stagingPath.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path) }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            SocketPath.abandon(placement)
            throw ServeError("cannot listen on \(socketPath): \(why)")
        }
        do {
            _ = try SocketPath.publish(placement, group: nil, mode: 0o600)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    private func acceptLoop(_ listening: Int32) {
        while true {
            let fd = accept(listening, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if errno == EMFILE || errno == ENFILE { usleep(10_000); continue }
                break  // shut down
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            answer(fd)
        }
        close(listening)
    }

    /// The unit and credential id in systemd's peer address `\0<random>/unit/<unit>/<id>`, or nil.
    static func requester(of fd: Int32) -> (unit: String, id: String)? {
        var addr = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        let pathLength = Int(length) - MemoryLayout<sa_family_t>.size
        guard rc == 0, pathLength > 1 else { return nil }
        let bytes = withUnsafeBytes(of: &addr.sun_path) { Array($0.prefix(pathLength)) }
        guard bytes.first == 0 else { return nil }  // systemd binds an abstract address
        return parseAddress(Array(bytes.dropFirst()))
    }

    /// Parses `<random>/unit/<unit>/<id>` (the abstract name without its leading NUL).
    static func parseAddress(_ name: [UInt8]) -> (unit: String, id: String)? {
        let parts = name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 4, !parts[0].isEmpty, parts[1].elementsEqual("unit".utf8),
              let unit = String(validating: parts[2], as: UTF8.self), let id = String(validating: parts[3], as: UTF8.self),
              CredentialRule.isUnitName(unit), CredentialRule.isCredentialID(id) else { return nil }
        return (unit, id)
    }

    private func answer(_ fd: Int32) {
        let peer = PeerCredentials.of(fd: fd)
        let caller = Caller.resolve(uid: peer?.uid ?? UInt32.max, gid: peer?.gid ?? UInt32.max, pid: peer?.pid ?? 0)
        let requester = Self.requester(of: fd)
        let described = requester.map { "unit \($0.unit) credential \($0.id)" } ?? "no systemd unit address"
        var event = AuditEvent(action: "credential", channel: .credential,
                               actor: AuditActor(uid: caller.uid, gid: caller.gid, pid: caller.pid, executable: caller.executable),
                               outcome: .granted, reason: described)
        let done: @Sendable (Reply) -> Void = { reply in
            if case .token(let t) = reply {
                t.secret.withUnsafeBytes { raw in
                    var sent = 0
                    while sent < raw.count {
                        let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                        if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                        sent += n
                    }
                }
            }
            close(fd)
        }
        func deny(_ why: String) {
            event.outcome = .denied
            event.reason = AuditEvent.capped("\(described): \(why)", bytes: 512)
            processor.refused(event, .error(.denied, why), caller: caller, reply: done)
        }
        guard let peer, peer.uid == 0 else {
            return deny("the peer runs as uid \(peer.map { String($0.uid) } ?? "unknown"), not as the service manager (uid 0)")
        }
        guard let (unit, id) = requester else {
            return deny("the peer's address is not systemd's …/unit/UNIT/ID")
        }
        guard let rule = processor.policy.credential(unit: unit, id: id) else {
            return deny("no [[credential]] rule gives \(unit) a credential \(id)")
        }
        event.token = rule.token
        let opened: OpenedToken
        do {
            opened = try processor.vault.get(name: rule.token)
        } catch let e as StoreError {
            if case .notFound = e {
                event.outcome = .notFound
                return processor.audited(event, .error(.notFound, ""), reply: done)
            }
            event.outcome = .failed
            event.reason = AuditEvent.capped("\(described): \(e)", bytes: 512)
            return processor.audited(event, .error(.unavailable, ""), reply: done)
        } catch {
            event.outcome = .failed
            event.reason = AuditEvent.capped("\(described): \(error)", bytes: 512)
            logger.error("credential read failed", metadata: ["token": "\(rule.token)", "unit": "\(unit)", "error": "\(error)"])
            return processor.audited(event, .error(.unavailable, ""), reply: done)
        }
        event.tokenHMAC = processor.tokenHMACs.hmac(for: opened.record) { processor.audit.tokenHMAC(of: opened.secret) }
        processor.audited(event, secret: opened.secret, .token(.init(opened, proof: nil)), reply: done)
    }
}
