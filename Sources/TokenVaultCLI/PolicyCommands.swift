import ArgumentParser
import Foundation
import VaultCore
import VaultDaemon
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Check the socket policy and make the daemon re-read it.",
        subcommands: [Check.self, Reload.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Explain whether a caller may read a token.",
            discussion: """
                Exit 0 when allowed, 8 when denied.

                Example:
                  tokenvault policy check --uid 1001 acme/ads
                """)

        @OptionGroup var vault: VaultOptions
        @Option(help: "The caller's uid.") var uid: UInt32
        @Option(help: "The caller's gid (default: the uid's primary group).") var gid: UInt32?
        @Option(help: ArgumentHelp("The policy file (default: <home>/policy.toml).", valueName: "file")) var policy: String?
        @Argument(help: "The token name.") var name: String

        func run() throws {
            let path = policy ?? vault.vaultHome.policyPath
            let loaded: Policy
            do { loaded = try Policy.load(path: path) } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
            let primary = gid ?? Accounts.primaryGid(uid: uid) ?? uid
            let caller = Caller(uid: uid, gid: primary, pid: 0, supplementaryGroups: Caller.groups(ofUid: uid, primary: primary))
            let decision = loaded.decide(caller, name: name)
            print(decision.explanation)
            if let rate = loaded.rate(for: caller) { print("rate limit: \(rate) requests/s") }
            if !decision.allowed { throw ExitCode(Exit.denied.rawValue) }
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reload",
            abstract: "Check the policy file, then make the running daemon re-read it (SIGHUP).",
            discussion: "A file that does not parse is reported with its line and the daemon keeps its old policy.")

        @OptionGroup var vault: VaultOptions
        @Option(help: ArgumentHelp("The daemon's socket (default: <home>/tokenvault.sock).", valueName: "path")) var socket: String?
        @Option(help: ArgumentHelp("The policy file (default: <home>/policy.toml).", valueName: "file")) var policy: String?

        func run() throws {
            let path = policy ?? vault.vaultHome.policyPath
            let parsed: Policy
            do { parsed = try Policy.load(path: path) } catch {
                throw CLIFailure(message: "error: \(error); the daemon keeps its current policy", exit: .badInput)
            }
            let socketPath = socket ?? vault.vaultHome.socketPath
            guard let pid = DaemonProbe.pid(socketPath: socketPath), pid > 0 else {
                throw CLIFailure(message: "error: no daemon answers on \(socketPath)", exit: .unavailable)
            }
            guard kill(pid, SIGHUP) == 0 else {
                throw CLIFailure(message: "error: cannot signal the daemon (pid \(pid)): \(String(cString: strerror(errno)))", exit: .failure)
            }
            print("policy \(path) (\(parsed.rules.count) rules) sent to the daemon, pid \(pid)")
        }
    }
}
