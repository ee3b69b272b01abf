import ArgumentParser
import Foundation
import MetaGraph
import MetaLifecycle
import VaultAudit
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

/// Where the Graph API is: `--graph-url` / `$TOKENVAULT_GRAPH_URL`, `--graph-version`.
struct GraphOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Graph API base URL (default: $TOKENVAULT_GRAPH_URL, else https://graph.facebook.com).", valueName: "url"))
    var graphURL: String?
    @Option(help: ArgumentHelp("Graph API version (default: \(GraphConfiguration.defaultVersion)).", valueName: "version"))
    var graphVersion: String?
    @Option(help: ArgumentHelp("Where the login dialog lives (default: https://www.facebook.com).", valueName: "url"))
    var dialogURL: String?

    func client() throws -> GraphClient {
        var c = GraphConfiguration()
        if let text = graphURL ?? ProcessInfo.processInfo.environment["TOKENVAULT_GRAPH_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let url = URL(string: text) else { throw CLIFailure(message: "error: --graph-url is not a URL", exit: .usage) }
            c.baseURL = url
        }
        if let d = dialogURL, let url = URL(string: d) { c.dialogURL = url }
        c.version = graphVersion ?? GraphConfiguration.defaultVersion
        do { return try GraphClient(configuration: c) } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
    }
}

/// Turns Graph failures into worded CLI failures (``Exit/metaRefused``: Meta refused; ``Exit/failure``: could not reach it).
func graphReporting<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let e as GraphClientError {
        if case .api(let api) = e {
            let d = TokenDiagnosis.of(code: api.code, subcode: api.subcode)
            throw CLIFailure(message: "error: \(api)\n  meaning: \(d.reason)\n  to do: \(d.action)", exit: .metaRefused)
        }
        throw CLIFailure(message: "error: \(e)", exit: .failure)
    } catch let e as VaultError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    } catch let e as StoreError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    }
}

struct MetaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "meta", abstract: "Get, extend and check Meta (Facebook) access tokens.",
        discussion: """
            User tokens:
              tokenvault meta login acme/ads --app acme
            Long-lived:
              tokenvault meta extend acme/ads
            System user tokens:
              tokenvault put acme/sys --kind system_user --app acme < token.txt
            Validity (exit 10 when a checked token is invalid):
              tokenvault meta check
            """,
        subcommands: [Exchange.self, Login.self, Extend.self, Check.self])

    /// The service behind the meta commands, auditing on the CLI channel.
    static func service(_ vault: VaultOptions, _ graph: GraphOptions, notify: String? = nil, warnDays: Int = 7) throws -> (MetaTokenService, CLIAudit) {
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        let service = MetaTokenService(vault: v, graph: try graph.client(), audit: audit.log, actor: CLIAudit.actor, channel: .cli,
                                       notifier: notify.map { Notifier(command: $0) }, warnDays: warnDays)
        return (service, audit)
    }

    static func describe(_ o: MetaTokenService.CheckOutcome) -> String {
        var text = "\(o.name): \(o.info.isValid ? "valid" : "INVALID")"
        if let t = o.info.type { text += ", \(t)" }
        if let e = o.info.expiresAt { text += e == 0 ? ", never expires" : ", expires \(Output.date(e))" }
        if let scopes = o.info.scopes, !scopes.isEmpty { text += ", scopes \(scopes.joined(separator: ","))" }
        if let d = o.diagnosis { text += "\n  meaning: \(d.reason)\n  to do: \(d.action)" }
        return text
    }

    struct Exchange: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "exchange",
            abstract: "Exchange an authorization code (from the login redirect) for a token and store it.",
            discussion: """
                Example:
                  tokenvault meta exchange acme/ads --app acme --code AQB... \\
                    --redirect-uri https://example.com/cb
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "The name to store the token under.") var name: String
        @Option(help: "The app (see `tokenvault app add`).") var app: String
        @Option(help: "The one-time authorization code.") var code: String
        @Option(help: "The redirect URI the login dialog used.") var redirectUri: String
        @Option(help: "The token's kind.") var kind: TokenKind = .user
        @Flag(help: "Replace an existing token of that name.") var force = false

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph)
            defer { audit.close() }
            let outcome = try await graphReporting {
                try await service.exchange(name: name, app: app, code: code, redirectURI: redirectUri, kind: kind, replace: force)
            }
            printErr("stored \(name)")
            if let outcome { print(MetaCommand.describe(outcome)) }
        }
    }

    struct Login: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "login",
            abstract: "Log a user in through Meta's login dialog and store the token.",
            discussion: """
                Prints the dialog URL (open it in a browser on this machine), waits on a loopback redirect URI, \
                checks `state`, exchanges the code and stores the token. Add http://localhost:PORT/callback to the \
                app's valid OAuth redirect URIs (use --port to fix the port).
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "The name to store the token under.") var name: String
        @Option(help: "The app (see `tokenvault app add`).") var app: String
        @Option(help: "The loopback port to listen on (0: any free port).") var port: UInt16 = 0
        @Option(help: "Permissions to ask for, comma-separated.") var scopes = "ads_read,ads_management"
        @Option(help: "Seconds to wait for the redirect.") var timeout = 300
        @Option(help: "The token's kind.") var kind: TokenKind = .user
        @Flag(help: "Replace an existing token of that name.") var force = false

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph)
            defer { audit.close() }
            let appId = try reporting { try service.vault.apps().first { $0.name == app }?.appId }
            guard let appId else { throw CLIFailure(message: "error: \(VaultError.unknownApp(app))", exit: .badInput) }
            let redirect: LoopbackRedirect
            do { redirect = try LoopbackRedirect(port: port) } catch { throw CLIFailure(message: "error: \(error)", exit: .failure) }
            let url = service.graph.loginDialogURL(appId: appId, redirectURI: redirect.redirectURI, state: redirect.state,
                                                   scopes: scopes.split(separator: ",").map(String.init))
            print("Open this URL in a browser on this machine and grant access:\n\(url.absoluteString)")
            printErr("waiting for the redirect on \(redirect.redirectURI) …")
            fflush(nil)
            let timeout = self.timeout
            let code: String
            do {
                code = try await withCheckedThrowingContinuation { c in
                    DispatchQueue.global().async {
                        c.resume(with: Result { try redirect.waitForCode(timeout: TimeInterval(timeout)) { printErr("refused: \($0)") } })
                    }
                }
            } catch {
                throw CLIFailure(message: "error: \(error); nothing was stored", exit: .failure)
            }
            let outcome = try await graphReporting {
                try await service.exchange(name: name, app: app, code: code, redirectURI: redirect.redirectURI, kind: kind, replace: force)
            }
            printErr("stored \(name)")
            if let outcome { print(MetaCommand.describe(outcome)) }
        }
    }

    struct Extend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "extend",
            abstract: "Exchange a stored user token for a long-lived one (about 60 days); it replaces the old one atomically.")

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "The token's name.") var name: String

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph)
            defer { audit.close() }
            let outcome = try await graphReporting { try await service.extend(name: name) }
            printErr("replaced \(name) with a long-lived token")
            if let outcome { print(MetaCommand.describe(outcome)) }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check tokens with Meta (debug_token) and store validity, expiry and scopes.",
            discussion: """
                Checks the named tokens, or every token stored with --app. With --notify-command, a token whose \
                state changed (turned invalid, expiring soon, data access expiring) is reported to the command as \
                JSON on stdin, once per change; a failed delivery is recorded and retried next time.

                Exit 0 when every checked token is valid, 10 when one is not; a token that could not be checked \
                gives its own code (11 Meta refused, 1 Meta unreachable, 2 no app).
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "Token names (default: every token with an app).") var names: [String] = []
        @Option(help: ArgumentHelp("Run this for each state change, with the details as JSON on stdin.", valueName: "command"))
        var notifyCommand: String?
        @Option(help: "Warn this many days before expiry.") var warnDays = 7
        @Flag(help: "One JSON object per token.") var json = false

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph, notify: notifyCommand, warnDays: warnDays)
            defer { audit.close() }
            let targets = names.isEmpty ? try reporting { try service.vault.list().filter { $0.app != nil }.map(\.name) } : names
            var anyInvalid = false
            var firstFailure: Exit?
            for name in targets {
                do {
                    let o = try await graphReporting { try await service.check(name: name) }
                    anyInvalid = anyInvalid || !o.info.isValid
                    if json {
                        let record = try reporting { try service.vault.show(name: name) }
                        print(Output.jsonLine(Output.json(record).merging(["state": o.state]) { $1 }))
                    } else {
                        print(MetaCommand.describe(o))
                    }
                } catch let f as CLIFailure {
                    firstFailure = firstFailure ?? Exit.of(f.code)
                    printErr("\(name): \(f.message)")
                }
            }
            if notifyCommand != nil {
                let (sent, failed) = await service.deliverDueNotifications()
                if sent + failed > 0 { printErr("notifications: \(sent) delivered, \(failed) failed (retried next time)") }
            }
            // A token that could not be checked: the exit code says why, as for one token (Meta refused: 11,
            // Meta unreachable: 1, stored without an app: 2).
            if let firstFailure { throw ExitCode(firstFailure.rawValue) }
            if anyInvalid { throw ExitCode(Exit.tokenInvalid.rawValue) }
        }
    }
}

struct Proof: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proof",
        abstract: "Print an appsecret_proof for a token, so a script never needs the app secret.",
        discussion: """
            Prints {"appsecret_proof":…,"appsecret_time":…} (timed, the default) or the legacy proof over the token alone.

            Example (the query string a Graph call needs):
              tokenvault proof acme/ads | jq -r \\
                '"appsecret_proof=\\(.appsecret_proof)&appsecret_time=\\(.appsecret_time)"'
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Flag(help: "The legacy proof: HMAC over the token alone.") var legacy = false

    func run() throws {
        try vault.audited { v, audit in
            let opened = try reporting { try v.get(name: name) }
            guard let app = opened.record.app else {
                throw CLIFailure(message: "error: \(name) has no app (store it with --app), so no appsecret_proof can be made", exit: .badInput)
            }
            let proof = try reporting { try v.appsecretProof(token: opened.secret, app: app, timed: !legacy) }
            try audit.record(legacy ? "proof_legacy" : "proof", token: name)
            var out: [String: Any] = ["appsecret_proof": proof.hex]
            if let time = proof.time { out["appsecret_time"] = time }
            print(Output.jsonLine(out))
        }
    }
}
