import ArgumentParser
import Foundation
import TokenVaultClient
import VaultRun
#if canImport(Glibc)
import Glibc
#endif

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a command with tokens read through the daemon, in its environment or in private files.",
        discussion: """
            Every token is read through the daemon, as you, under the policy, and audited, before the command starts; one refused read starts nothing. The command's exit status is run's; a signal sent to run is passed on to the command.

            --env VAR=NAME puts the token in $VAR. --file VAR=NAME puts it in a RAM file (a memfd) that only the command holds, with its path (/dev/fd/100 and up) in $VAR: nothing is written to disk and nothing is left behind when the command ends, however it ends. --proof-env VAR=NAME puts the token's appsecret_proof in $VAR (the legacy one, over the token alone: a timed proof lasts only five minutes).

            With --watch, a change to one of the tokens (a put, rm or Meta refresh, on any host) is read again: --restart (the default) stops the command with SIGTERM and starts it with the new values; --signal HUP rewrites the files in place and sends the signal (only with --file: a running process's environment cannot change).

            Examples:
              tokenvault run --env META_TOKEN=acme/ads -- ./sync-campaigns
              tokenvault run --file META_TOKEN_FILE=acme/ads \\
                --watch --signal HUP -- node worker.js
            """)

    @Option(help: ArgumentHelp("The daemon's socket (default $TOKENVAULT_SOCKET, else $TOKENVAULT_HOME/tokenvault.sock).", valueName: "path"))
    var socket: String?
    @Option(name: .customLong("env"), help: ArgumentHelp("Put token NAME in variable VAR.", valueName: "VAR=NAME"))
    var envBindings: [String] = []
    @Option(name: .customLong("file"), help: ArgumentHelp("Put token NAME in a private RAM file; its path in VAR.", valueName: "VAR=NAME"))
    var fileBindings: [String] = []
    @Option(name: .customLong("proof-env"), help: ArgumentHelp("Put token NAME's appsecret_proof in VAR.", valueName: "VAR=NAME"))
    var proofBindings: [String] = []
    @Flag(help: "Follow changes to the tokens (see --restart and --signal).") var watch = false
    @Option(help: ArgumentHelp("With --watch: rewrite the files and send this signal (HUP, USR1, … or a number).", valueName: "signal"))
    var signal: String?
    @Flag(help: "With --watch: restart the command on a change (the default).") var restart = false
    @Argument(parsing: .postTerminator, help: ArgumentHelp("The command and its arguments, after --.", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        if (signal != nil || restart) && !watch { throw ValidationError("--signal and --restart need --watch") }
        if signal != nil && restart { throw ValidationError("give --signal or --restart, not both") }
        if let signal, Self.signalNumber(signal) == nil { throw ValidationError("\(signal) is not a signal name or number") }
    }

    static func signalNumber(_ text: String) -> Int32? {
        let names: [String: Int32] = ["HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "TERM": SIGTERM, "USR1": SIGUSR1, "USR2": SIGUSR2,
                                      "WINCH": SIGWINCH, "ALRM": SIGALRM, "CONT": SIGCONT]
        let bare = text.uppercased().hasPrefix("SIG") ? String(text.uppercased().dropFirst(3)) : text.uppercased()
        if let n = names[bare] { return n }
        if let n = Int32(text), n > 0, n < 65 { return n }
        return nil
    }

    func run() throws {
        var bindings: [RunPlan.Binding] = []
        for (texts, delivery) in [(envBindings, RunPlan.Delivery.env), (fileBindings, .file), (proofBindings, .proofEnv)] {
            for text in texts {
                guard let b = RunPlan.binding(text, delivery) else {
                    throw CLIFailure(message: "error: --\(delivery.rawValue) takes VAR=NAME, not \(text)", exit: .badInput)
                }
                bindings.append(b)
            }
        }
        let onChange: RunPlan.OnChange = !watch ? .nothing : signal.flatMap(Self.signalNumber).map { .signal($0) } ?? .restart
        let plan = RunPlan(bindings: bindings, command: command, onChange: onChange)
        if let problem = plan.problem { throw CLIFailure(message: "error: \(problem)", exit: .badInput) }
        let supervisor = Supervisor(client: TokenVaultClient(socketPath: socket), plan: plan) { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        let outcome: Supervisor.Outcome
        do {
            outcome = try supervisor.run()
        } catch let e as RunError {
            switch e.kind {
            case .read(let cause): throw CLIFailure(message: "error: \(e)", exit: Exit.of(cause))
            case .plan: throw CLIFailure(message: "error: \(e)", exit: .badInput)
            case .spawn: throw CLIFailure(message: "error: \(e)", exit: .failure)
            }
        }
        Supervisor.finish(outcome)
    }
}
