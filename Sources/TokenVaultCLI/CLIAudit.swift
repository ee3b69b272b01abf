import Foundation
import VaultAudit
import VaultCore
import VaultPolicy
import VaultCrypto
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// Audit records for what the CLI does: reads and admin actions, on the `cli` channel, written and
/// flushed before the command reports success (and, for `get`, before the token is printed).
struct CLIAudit {
    let log: AuditLog

    init(_ vault: Vault) throws {
        log = try reporting {
            do { return try AuditLog.open(for: vault) } catch let e as AuditWriteError {
                throw CLIFailure(message: "error: the audit log cannot be opened: \(e); nothing was done", code: 7)
            }
        }
    }

    static var actor: AuditActor {
        AuditActor(uid: getuid(), gid: getgid(), pid: getpid(), executable: Caller.executable(of: getpid()))
    }

    /// Records one event and waits until it is durable; a failure is the documented exit code 7.
    func record(_ action: String, token: String? = nil, outcome: AuditOutcome = .granted, reason: String? = nil,
                secret: SecretBytes? = nil) throws {
        let event = AuditEvent(action: action, channel: .cli, actor: Self.actor, token: token, outcome: outcome, reason: reason)
        do {
            try log.appendAndWait(event, secret: secret)
        } catch {
            throw CLIFailure(message: "error: the audit record could not be written (\(error)); nothing was disclosed", code: 7)
        }
    }

    /// Runs an admin action and records its outcome; the action's own error is rethrown after the record.
    func admin<T>(_ action: String, token: String? = nil, reason: String? = nil, _ body: () throws -> T) throws -> T {
        do {
            let result = try reporting(body)
            try record(action, token: token, reason: reason)
            return result
        } catch let failure as CLIFailure {
            try? record(action, token: token, outcome: .failed, reason: failure.message)
            throw failure
        }
    }

    func close() { log.close() }
}
