import Dispatch
import Synchronization
import VaultCrypto

/// Who did something, as the kernel (socket) or the process itself (CLI) reports it.
public struct AuditActor: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public var executable: String?

    public init(uid: UInt32, gid: UInt32, pid: Int32, executable: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.executable = executable
    }
}

public enum AuditChannel: String, Sendable, Codable {
    case socket, cli
    /// The daemon acting on its own (re-checks, notifications, policy reloads).
    case daemon
    /// systemd reading a `LoadCredential=` credential from the credential socket.
    case credential
}

public enum AuditOutcome: String, Sendable, Codable, CaseIterable {
    /// A read that disclosed a token (or a list of names), or an admin action that succeeded.
    case granted
    case denied
    case notFound = "not_found"
    case rateLimited = "rate_limited"
    /// The vault could not do it: a key, the store or the token's integrity failed.
    case failed
}

/// One thing worth a record: a read (granted or refused) or an admin action.
public struct AuditEvent: Sendable {
    public var action: String
    public var channel: AuditChannel
    public var actor: AuditActor
    public var token: String?
    public var outcome: AuditOutcome
    public var reason: String?
    public var requestId: String?
    /// The disclosed token's keyed hash, when the caller already has it from ``AuditSink/tokenHMAC(of:)``
    /// (the daemon caches it per sealed value); otherwise the sink computes it from the secret it is given.
    public var tokenHMAC: [UInt8]?

    public init(action: String, channel: AuditChannel, actor: AuditActor, token: String? = nil,
                outcome: AuditOutcome, reason: String? = nil, requestId: String? = nil) {
        self.action = action
        self.channel = channel
        self.actor = actor
        self.token = token
        self.outcome = outcome
        self.reason = reason
        self.requestId = requestId
    }
}

extension AuditEvent {
    /// The most of a string field one record keeps, in UTF-8 bytes: whatever a request carries, a
    /// record stays small (the audit formatter applies these to every record).
    public enum Limit {
        public static let action = 64
        public static let token = 256
        public static let reason = 512
        public static let requestId = 128
        public static let executable = 512
    }

    /// `s` cut to at most `bytes` UTF-8 bytes (on a character boundary), with `…(+N bytes)` saying how much was cut.
    public static func capped(_ s: String, bytes: Int) -> String {
        let utf8 = s.utf8
        guard utf8.count > bytes else { return s }
        var end = utf8.index(utf8.startIndex, offsetBy: bytes)
        while end > utf8.startIndex, (utf8[end] & 0xC0) == 0x80 { end = utf8.index(before: end) }
        let kept = String(decoding: utf8[..<end], as: UTF8.self)
        return kept + "…(+\(utf8.count - kept.utf8.count) bytes)"
    }
}

/// Where every decision goes before its answer leaves the process.
///
/// `append` must call `completion` exactly once: with success only after the record is durable, with
/// a failure when it cannot be made durable — and then the caller discloses nothing (fail closed).
/// `secret`, when given, is the token the event disclosed: the sink may keep a keyed hash of it, never the bytes.
public protocol AuditSink: Sendable {
    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void)

    /// The keyed hash this sink records for a disclosed token (`token_hmac`), or nil if it records none.
    /// A caller that reads the same sealed value often may cache it and pass it in ``AuditEvent/tokenHMAC``.
    func tokenHMAC(of secret: SecretBytes) -> [UInt8]?
}

extension AuditSink {
    public func tokenHMAC(of secret: SecretBytes) -> [UInt8]? { nil }

    /// The synchronous form, for the CLI: returns once the record is durable, or throws.
    public func appendAndWait(_ event: AuditEvent, secret: SecretBytes? = nil) throws {
        let box = ResultBox()
        append(event, secret: secret) { result in
            box.result.withLock { $0 = result }
            box.done.signal()
        }
        box.done.wait()
        try box.result.withLock { $0 ?? .success(()) }.get()
    }
}

/// A one-shot result handed from the sink's thread to the waiting thread.
private final class ResultBox: Sendable {
    let done = DispatchSemaphore(value: 0)
    let result = Mutex<Result<Void, any Error>?>(nil)
}
