import Foundation
import VaultAudit
import VaultCore
import VaultPolicy
import VaultCrypto
import VaultStores
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
                throw CLIFailure(message: "error: the audit log cannot be opened: \(e); nothing was done", exit: .unavailable)
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
            throw CLIFailure(message: "error: the audit record could not be written (\(error)); nothing was disclosed", exit: .unavailable)
        }
    }

    /// Runs an admin action whose change commits inside `body`. `body` hands the hook it is given to the
    /// vault's `beforeCommit`, so the record is durable before anything changes: an audit log that cannot
    /// be written (a full disk) rolls the change back, exit 7. An action that commits nothing (an export)
    /// never calls the hook and is recorded once it is done. A failure is recorded too, best effort.
    func admin<T>(_ action: String, token: String? = nil, reason: String? = nil,
                  _ body: (_ beforeCommit: () throws -> Void) throws -> T) throws -> T {
        var recorded = false
        let beforeCommit = {
            let event = AuditEvent(action: action, channel: .cli, actor: Self.actor, token: token, outcome: .granted, reason: reason)
            do { try self.log.appendAndWait(event) } catch {
                throw CLIFailure(message: "error: the audit record could not be written (\(error)); nothing was changed", exit: .unavailable)
            }
            recorded = true
        }
        do {
            let result = try reporting { try body(beforeCommit) }
            if !recorded { try record(action, token: token, reason: reason) }
            return result
        } catch let failure as CLIFailure {
            let why = recorded ? "recorded as granted, then not committed: \(failure.message)" : failure.message
            try? record(action, token: token, outcome: .failed, reason: why)
            throw failure
        }
    }

    func close() { log.close() }

    /// What every command that records does around its work: open the audit log, run `body`, close the log
    /// (every record `body` wrote is durable by then, and the log is closed on every path out).
    static func around<T>(_ vault: Vault, _ body: (CLIAudit) throws -> T) throws -> T {
        let audit = try CLIAudit(vault)
        defer { audit.close() }
        return try body(audit)
    }
}

extension VaultOptions {
    /// Opens the vault and its audit log for one command (see ``CLIAudit/around(_:_:)``).
    func audited<T>(_ body: (Vault, CLIAudit) throws -> T) throws -> T {
        let v = try openVault()
        return try CLIAudit.around(v) { try body(v, $0) }
    }
}
