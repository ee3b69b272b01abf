import Foundation
import Logging
import NIOCore
import Synchronization
import VaultCore
import VaultCrypto
import VaultPolicy
import VaultWire

/// Answers protocol requests: policy, then store and crypto, then audit, then the reply.
///
/// It does its synchronous work (a policy lookup, one indexed SQLite read, one secretbox open) on the
/// caller's thread — the connection's event loop — so a read costs no thread hop until the audit
/// record is durable. `reply` is called exactly once, from the auditor's thread for audited requests.
public final class RequestProcessor: Sendable {
    let vault: Vault
    let audit: any AuditSink
    let logger: Logger
    private let policyBox: PolicyInForce
    private let limiter = RateLimiter()
    let refusals: RefusalBudget
    let tokenHMACs = TokenHMACCache()
    /// What was answered, for `tokenvault status`.
    public let counters = ReadCounters()
    /// The `watch` connections.
    let watches: WatchHub

    public convenience init(vault: Vault, policy: Policy, audit: any AuditSink, logger: Logger) {
        self.init(vault: vault, policy: policy, audit: audit, logger: logger, refusals: RefusalBudget())
    }

    init(vault: Vault, policy: Policy, audit: any AuditSink, logger: Logger, refusals: RefusalBudget) {
        self.refusals = refusals
        self.vault = vault
        self.audit = audit
        self.logger = logger
        let box = PolicyInForce(policy)
        self.policyBox = box
        self.watches = WatchHub(vault: vault, policy: { box.current }, logger: logger)
    }

    public var policy: Policy { policyBox.current }

    /// Puts a new policy in force (after it parsed).
    public func replacePolicy(_ policy: Policy) {
        policyBox.replace(policy)
    }

    /// Answers one request. `reads`, when given, is the calling event loop's held reader (see ``LoopReads``).
    public func process(_ request: Request, caller: Caller, reads: LoopReads? = nil, reply: @escaping @Sendable (Reply) -> Void) {
        switch request.operation {
        case .ping:
            reply(.pong)
        case .whoami:
            reply(.whoami(uid: caller.uid, gid: caller.gid, pid: caller.pid))
        case .list:
            list(request, caller: caller, reply: reply)
        case .get(let name, let proof):
            get(name: name, proof: proof, request: request, caller: caller, reader: reads?.forThisTick(), reply: reply)
        case .watch:
            // Only a connection can watch (it has somewhere to send events): ConnectionHandler calls watch(…).
            reply(.error(.badRequest, "watch needs a connection of its own"))
        }
    }

    /// Starts a `watch`: every pattern must be one the policy lets the caller read in full (else `denied`,
    /// audited, and nothing is watched); then the watcher is registered, its record made durable, and
    /// `.watching` answered. `id` is the connection's; `deliver` runs on `loop` with each batch of events.
    func watch(patterns: [String], request: Request, caller: Caller, id: ObjectIdentifier, loop: any EventLoop,
               deliver: @escaping @Sendable ([TokenChange]) -> Void, reply: @escaping @Sendable (Reply) -> Void) {
        let policy = self.policy
        let shown = patterns.map { AuditEvent.capped($0, bytes: 64) }.joined(separator: ", ")
        var event = AuditEvent(action: "watch", channel: .socket, actor: actor(caller), outcome: .granted, requestId: request.idText)
        event.reason = AuditEvent.capped("watching \(shown)", bytes: 512)
        for pattern in patterns {
            let bare = pattern.hasSuffix("*") ? String(pattern.dropLast()) + "x" : pattern
            if let why = Names.problem(bare) {
                event.outcome = .denied
                event.reason = AuditEvent.capped("invalid pattern \(AuditEvent.capped(pattern, bytes: 64)): \(why)", bytes: 512)
                return refused(event, .error(.badRequest, "\"\(AuditEvent.capped(pattern, bytes: 64))\" is not a token name or a prefix* pattern: \(why)"),
                               caller: caller, reply: reply)
            }
        }
        if rateLimited(policy, caller) {
            event.outcome = .rateLimited
            return refused(event, .error(.rateLimited, "uid \(caller.uid) exceeded its request rate"), caller: caller, reply: reply)
        }
        if let refusedPattern = patterns.first(where: { !policy.permitsAll(caller, pattern: $0) }) {
            event.outcome = .denied
            event.reason = AuditEvent.capped("may not read every name matching \(refusedPattern)", bytes: 512)
            return refused(event, .error(.denied, "uid \(caller.uid) may not read \(refusedPattern)"), caller: caller, reply: reply)
        }
        do {
            try watches.add(id, WatchHub.Watcher(caller: caller, patterns: patterns, loop: loop, deliver: deliver))
        } catch {
            event.outcome = .failed
            event.reason = "\(error)"
            return audited(event, .error(.unavailable, "the vault cannot be read right now"), reply: reply)
        }
        let watches = self.watches
        let logger = self.logger
        audit.append(event, secret: nil) { result in
            switch result {
            case .success:
                reply(.watching(patterns))
            case .failure(let error):
                watches.remove(id)
                logger.error("audit record could not be made durable; refusing the watch", metadata: ["error": "\(error)"])
                reply(.error(.unavailable, "the audit log cannot be written right now; nothing is watched"))
            }
        }
    }

    private func actor(_ caller: Caller) -> AuditActor {
        AuditActor(uid: caller.uid, gid: caller.gid, pid: caller.pid, executable: caller.executable)
    }

    /// Writes the record, then replies: `reply` on success, `unavailable` when the record cannot be made durable.
    func audited(_ event: AuditEvent, secret: SecretBytes? = nil, _ answer: Reply, reply: @escaping @Sendable (Reply) -> Void) {
        let logger = self.logger
        let action = event.action  // not the whole event: the closure is built for every request
        let outcome = event.outcome
        let counters = self.counters
        audit.append(event, secret: secret) { result in
            switch result {
            case .success:
                switch outcome {
                case .granted: counters.count(granted: action.hasPrefix("get"))
                case .denied, .notFound, .rateLimited: counters.count(refused: true)
                case .failed: counters.count(failed: true)
                }
                reply(answer)
            case .failure(let error):
                counters.count(failed: true)
                logger.error("audit record could not be made durable; refusing the \(action)", metadata: ["error": "\(error)"])
                reply(.error(.unavailable, "the audit log cannot be written right now; nothing was disclosed"))
            }
        }
    }

    /// Records a refused request and sends its answer — or, past the caller's refusal budget (see
    /// ``RefusalBudget``), answers `rate_limited` at once and counts it for the next summary record.
    func refused(_ event: AuditEvent, _ answer: Reply, caller: Caller, reply: @escaping @Sendable (Reply) -> Void) {
        guard refusals.admit(uid: caller.uid, gid: caller.gid, pid: caller.pid) else {
            counters.count(refused: true)
            return reply(.error(.rateLimited, "uid \(caller.uid) is sending refused requests too fast; slow down "
                + "(they are counted in the audit log, not recorded one by one)"))
        }
        audited(event, answer, reply: reply)
    }

    /// Writes one record for the refusals answered without their own since the last call (the daemon calls
    /// this once a second, and at shutdown).
    public func recordSuppressedRefusals() {
        guard let summary = refusals.takeSummary(), let top = summary.uids.first else { return }
        let event = AuditEvent(action: "refusals_suppressed", channel: .socket, actor: AuditActor(uid: top.uid, gid: top.gid, pid: top.pid),
                               outcome: .rateLimited, reason: summary.reason)
        let logger = self.logger
        logger.warning("refused requests answered without their own audit record", metadata: ["summary": "\(summary.reason)"])
        audit.append(event, secret: nil) { result in
            if case .failure(let error) = result {
                logger.error("the summary of suppressed refusals could not be recorded", metadata: ["error": "\(error)"])
            }
        }
    }

    private func rateLimited(_ policy: Policy, _ caller: Caller) -> Bool {
        guard let rate = policy.rate(for: caller) else { return false }
        return !limiter.allow(uid: caller.uid, rate: rate)
    }

    private func list(_ request: Request, caller: Caller, reply: @escaping @Sendable (Reply) -> Void) {
        let policy = self.policy
        var event = AuditEvent(action: "list", channel: .socket, actor: actor(caller), outcome: .granted, requestId: request.idText)
        if rateLimited(policy, caller) {
            event.outcome = .rateLimited
            return refused(event, .error(.rateLimited, "uid \(caller.uid) exceeded its request rate"), caller: caller, reply: reply)
        }
        guard policy.names(caller) else {
            // No rule names this caller: an empty list, but on the refusal budget like a denied read.
            event.reason = "0 names (no policy rule names the caller)"
            return refused(event, .names([]), caller: caller, reply: reply)
        }
        do {
            let names = try policy.readableNames(by: caller, from: vault.names)
            event.reason = "\(names.count) names"
            audited(event, .names(names), reply: reply)
        } catch {
            event.outcome = .failed
            event.reason = "\(error)"
            audited(event, .error(.unavailable, "the vault cannot be read right now"), reply: reply)
        }
    }

    private func get(name: String, proof: Request.Proof?, request: Request, caller: Caller, reader: (any HeldTokenReader)?,
                     reply: @escaping @Sendable (Reply) -> Void) {
        let policy = self.policy
        var event = AuditEvent(action: proof == nil ? "get" : "get+proof", channel: .socket, actor: actor(caller),
                               token: name, outcome: .granted, requestId: request.idText)
        // Exactly the names the CLI accepts: what is looked up, served and audited is this string, unchanged.
        if let why = Names.problem(name) {
            event.outcome = .denied
            event.token = AuditEvent.capped(name, bytes: 64)
            event.reason = "invalid name: \(why)"
            return refused(event, .error(.badRequest, "\"name\" is not a valid token name: \(why)"), caller: caller, reply: reply)
        }
        if rateLimited(policy, caller) {
            event.outcome = .rateLimited
            return refused(event, .error(.rateLimited, "uid \(caller.uid) exceeded its request rate"), caller: caller, reply: reply)
        }
        let decision = policy.permits(caller, name: name)
        guard decision.allowed else {
            event.outcome = .denied
            event.reason = "no policy rule allows it"
            return refused(event, .error(.denied, "uid \(caller.uid) may not read \(name)"), caller: caller, reply: reply)
        }
        if proof != nil && !decision.proof {
            event.outcome = .denied
            event.reason = "no policy rule grants proofs"
            return refused(event, .error(.denied, "uid \(caller.uid) may not ask for proofs for \(name)"), caller: caller, reply: reply)
        }
        let opened: OpenedToken
        do {
            opened = try vault.get(name: name, reader: reader)
        } catch let e as StoreError {
            if case .notFound = e {
                event.outcome = .notFound
                return audited(event, .error(.notFound, "no token named \(name)"), reply: reply)
            }
            event.outcome = .failed
            event.reason = "\(e)"
            return audited(event, .error(.unavailable, "the vault cannot be read right now"), reply: reply)
        } catch let e as VaultError {
            event.outcome = .failed
            event.reason = "\(e)"
            logger.error("read failed", metadata: ["token": "\(name)", "error": "\(e)"])
            let message: String
            if case .integrity = e {
                message = "token \(name) failed its integrity check; an admin must restore it"
            } else {
                message = "a key needed to open \(name) is not available"
            }
            return audited(event, .error(.unavailable, message), reply: reply)
        } catch {
            event.outcome = .failed
            event.reason = "\(error)"
            return audited(event, .error(.internal, "unexpected error reading \(name); report it with the daemon's log"), reply: reply)
        }
        var proofValue: (hex: String, time: Int64?)?
        if let proof {
            guard let app = opened.record.app else {
                event.outcome = .failed
                event.reason = "proof asked for a token with no app"
                return audited(event, .error(.badRequest, "token \(name) has no app, so no appsecret_proof can be made"), reply: reply)
            }
            do {
                proofValue = try vault.appsecretProof(token: opened.secret, app: app, timed: proof == .timed)
            } catch {
                event.outcome = .failed
                event.reason = "\(error)"
                return audited(event, .error(.unavailable, "the app secret of \(app) cannot be opened"), reply: reply)
            }
        }
        event.tokenHMAC = tokenHMACs.hmac(for: opened.record) { audit.tokenHMAC(of: opened.secret) }
        audited(event, secret: opened.secret, .token(.init(opened, proof: proofValue)), reply: reply)
    }
}

extension Reply.TokenReply {
    /// The reply for an opened token: its metadata as typed values (``Vault/open`` checked them).
    convenience init(_ opened: OpenedToken, proof: (hex: String, time: Int64?)?) {
        let r = opened.record
        self.init(name: r.name, secret: opened.secret, kind: r.kind, expiresAt: r.expiresAt, scopes: Vault.scopes(of: r),
                  valid: r.valid, checkedAt: r.checkedAt, proof: proof)
    }
}

/// The policy in force, shared by the read path and the watchers (replaced on SIGHUP).
final class PolicyInForce: Sendable {
    private let policy: Mutex<Policy>
    init(_ policy: Policy) { self.policy = Mutex(policy) }
    var current: Policy { policy.withLock { $0 } }
    func replace(_ new: Policy) { policy.withLock { $0 = new } }
}
