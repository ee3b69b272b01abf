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

    /// The client; `warn`: say on stderr when the version is retired or retiring (the daemon logs it instead).
    func client(warn: Bool = true) throws -> GraphClient {
        var c = GraphConfiguration()
        if let text = graphURL ?? ProcessInfo.processInfo.environment["TOKENVAULT_GRAPH_URL"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let url = URL(string: text) else { throw CLIFailure(message: "error: --graph-url is not a URL", exit: .usage) }
            c.baseURL = url
        }
        if let d = dialogURL, let url = URL(string: d) { c.dialogURL = url }
        c.version = graphVersion ?? GraphConfiguration.defaultVersion
        if warn, let warning = GraphVersions.warning(for: c.version) { printErr("warning: \(warning)") }
        do { return try GraphClient(configuration: c) } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
    }
}

/// Turns Graph failures into worded CLI failures (``Exit/metaRefused``: Meta refused; ``Exit/failure``: could not reach it).
func graphReporting<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let e as GraphClientError {
        if case .appCredentialRejected(let api) = e {
            throw CLIFailure(message: "error: \(e)\n  meaning: the app's secret was reset, or the app removed or restricted (code \(api.code ?? 0))\n"
                             + "  to do: copy the app secret from the app dashboard and run `tokenvault app add NAME --app-id ID --force`", exit: .metaRefused)
        }
        if case .api(let api) = e {
            if api.isThrottling {
                let wait = api.retryAfter.map { " (Meta says: about \(Int($0 / 60)) min)" } ?? ""
                throw CLIFailure(message: "error: \(api)\n  meaning: Meta is throttling the app\n  to do: wait before calling again\(wait)", exit: .metaRefused)
            }
            let d = TokenDiagnosis.of(code: api.code, subcode: api.subcode)
            throw CLIFailure(message: "error: \(api)\n  meaning: \(d.reason)\n  to do: \(d.action)", exit: .metaRefused)
        }
        throw CLIFailure(message: "error: \(e)", exit: .failure)
    } catch let e as VaultError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    } catch let e as StoreError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    } catch let e as MetaTokenService.MetaInputError {
        throw CLIFailure(message: "error: \(e)", exit: .badInput)
    } catch let e as MetaTokenService.RefreshError {
        throw CLIFailure(message: "error: \(e)", exit: .badInput)
    }
}

/// `--require-scope SCOPE` (repeatable), for the commands that store a token.
struct RequiredScopes: ParsableArguments {
    @Option(name: .customLong("require-scope"), help: ArgumentHelp("A Meta permission the token must keep (repeatable); checks flag it scope_missing without.", valueName: "scope"))
    var scopes: [String] = []

    func validate() throws {
        do { try MetaTokenService.validateScopes(scopes) } catch { throw ValidationError("--require-scope: \(error)") }
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
            Scopes a token must keep, and its checks so far:
              tokenvault meta require acme/ads ads_read ads_management
              tokenvault meta history acme/ads
            """,
        subcommands: [Exchange.self, Login.self, Extend.self, Refresh.self, Check.self, Require.self, History.self])

    /// The service behind the meta commands, auditing on the CLI channel.
    static func service(_ vault: VaultOptions, _ graph: GraphOptions, notify: String? = nil, warnDays: Int = 7) throws -> (MetaTokenService, CLIAudit) {
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        let service = MetaTokenService(vault: v, graph: try graph.client(), audit: audit.log, actor: CLIAudit.actor, channel: .cli,
                                       notifier: notify.map { Notifier(command: $0) }, warnDays: warnDays)
        return (service, audit)
    }

    static func describe(_ o: MetaTokenService.CheckOutcome) -> String {
        var text = "\(o.name): \(o.info.isValid ? "valid" : "INVALID"), \(o.state)"
        if !o.evaluation.missing.isEmpty { text += " (missing \(o.evaluation.missing.joined(separator: ",")))" }
        if o.evaluation.appMismatch { text += " (issued for app \(o.info.appId ?? "?"))" }
        if let t = o.info.type { text += ", \(t)" }
        if let e = o.info.expiresAt { text += e == 0 ? ", never expires" : ", expires \(Output.date(e))" }
        if let scopes = o.info.scopes, !scopes.isEmpty { text += ", scopes \(scopes.joined(separator: ","))" }
        if let d = o.diagnosis { text += "\n  meaning: \(d.reason)\n  to do: \(d.action)" }
        return text
    }

    /// A step that replaces a stored token with Meta's answer (extend, refresh), then shows its check.
    static func replace(_ vault: VaultOptions, _ graph: GraphOptions, done: String,
                        _ step: (MetaTokenService) async throws -> MetaTokenService.CheckOutcome?) async throws {
        let (service, audit) = try MetaCommand.service(vault, graph)
        defer { audit.close() }
        let outcome = try await graphReporting { try await step(service) }
        printErr(done)
        if let outcome { print(MetaCommand.describe(outcome)) }
    }

    /// After a login: what the user granted and declined (`GET /me/permissions`) against what was asked.
    static func reportPermissions(_ service: MetaTokenService, name: String, app: String, asked: [String]) async {
        guard let permissions = try? await service.permissions(name: name) else {
            printErr("note: could not read the token's permissions from Meta (GET /me/permissions)")
            return
        }
        let granted = permissions.filter { $0.status == "granted" }.map(\.permission)
        let declined = permissions.filter { $0.status == "declined" }.map(\.permission)
        let expired = permissions.filter { $0.status == "expired" }.map(\.permission)
        print("permissions: granted \(granted.isEmpty ? "none" : granted.joined(separator: ","))"
              + (declined.isEmpty ? "" : "; declined \(declined.joined(separator: ","))")
              + (expired.isEmpty ? "" : "; expired \(expired.joined(separator: ","))"))
        let missing = asked.filter { !granted.contains($0) }
        if !missing.isEmpty {
            print("asked for \(missing.joined(separator: ",")), which the user did not grant: "
                  + "ask again with `tokenvault meta login \(name) --app \(app) --rerequest --force`")
        }
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
        @Option(help: ArgumentHelp("The state the redirect carried, from a link `meta login --redirect-uri` made: it must be this token's.", valueName: "state"))
        var state: String?
        @OptionGroup var required: RequiredScopes
        @Flag(help: "Replace an existing token of that name.") var force = false

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph)
            defer { audit.close() }
            if let state {
                let problem = try reporting { try LoginState.problem(state, vault: service.vault, name: name, app: app, redirectURI: redirectUri,
                                                                        now: MetaTokenService.now) }
                if let problem { throw CLIFailure(message: "error: --state: \(problem); nothing was stored", exit: .badInput) }
            }
            let outcome = try await graphReporting {
                try await service.exchange(name: name, app: app, code: code, redirectURI: redirectUri, kind: kind, replace: force,
                                           requireScopes: required.scopes)
            }
            printErr("stored \(name)")
            if let outcome { print(MetaCommand.describe(outcome)) }
            if state != nil { await MetaCommand.reportPermissions(service, name: name, app: app, asked: required.scopes) }
        }
    }

    struct Login: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "login",
            abstract: "Log a user in through Meta's login dialog and store the token.",
            discussion: """
                Prints the dialog URL (open it in a browser on this machine), waits on a loopback redirect URI, \
                checks `state`, exchanges the code and stores the token. Add http://localhost:PORT/callback to the \
                app's valid OAuth redirect URIs (use --port to fix the port). Then it reads what the user granted \
                and declined (GET /me/permissions) and says what is missing.

                For a token owner who is not at this host, --redirect-uri https://… (one of the app's redirect URIs) \
                prints the link to send them and stops; the redirect carries `code` and `state`, which `meta exchange \
                NAME --app APP --code CODE --state STATE --redirect-uri URI` completes (the state is bound to NAME, \
                for 7 days).

                Ask again for a permission the user declined:
                  tokenvault meta login acme/ads --app acme --rerequest --force
                For someone else, by mail:
                  tokenvault meta login acme/ads --app acme \\
                    --redirect-uri https://ads.example.com/fb-callback
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "The name to store the token under.") var name: String
        @Option(help: "The app (see `tokenvault app add`).") var app: String
        @Option(help: "The loopback port to listen on (0: any free port).") var port: UInt16 = 0
        @Option(help: "Permissions to ask for, comma-separated (required scopes are added).") var scopes = "ads_read,ads_management"
        @Option(help: "Seconds to wait for the redirect.") var timeout = 300
        @Option(help: "The token's kind.") var kind: TokenKind = .user
        @Flag(help: "Ask again for permissions the user declined before (auth_type=rerequest).") var rerequest = false
        @Option(help: ArgumentHelp("A Facebook Login for Business configuration (it replaces --scopes).", valueName: "id")) var configId: String?
        @Option(help: ArgumentHelp("An https redirect URI of the app, for a user elsewhere: print the link and stop.", valueName: "url"))
        var redirectUri: String?
        @OptionGroup var required: RequiredScopes
        @Flag(help: "Replace an existing token of that name.") var force = false

        func validate() throws {
            if let r = redirectUri, URL(string: r)?.scheme?.lowercased() != "https" {
                throw ValidationError("--redirect-uri must be an https URL (one of the app's valid OAuth redirect URIs)")
            }
            if let c = configId, c.isEmpty || !c.allSatisfy(\.isNumber) { throw ValidationError("--config-id must be a configuration's numeric id") }
        }

        func run() async throws {
            let (service, audit) = try MetaCommand.service(vault, graph)
            defer { audit.close() }
            let appId = try reporting { try service.vault.apps().first { $0.name == app }?.appId }
            guard let appId else { throw CLIFailure(message: "error: \(VaultError.unknownApp(app))", exit: .badInput) }
            var asked = scopes.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            for s in required.scopes where !asked.contains(s) { asked.append(s) }
            if let redirectUri {
                let state = try reporting { try LoginState.make(vault: service.vault, name: name, app: app, redirectURI: redirectUri,
                                                                           now: MetaTokenService.now) }
                let url = service.graph.loginDialogURL(appId: appId, redirectURI: redirectUri, state: state, scopes: asked,
                                                       rerequest: rerequest, configId: configId)
                print("Send this link to the token's owner:\n\(url.absoluteString)")
                printErr("""
                    The redirect to \(redirectUri) carries code=… and state=…; with them, within 7 days:
                      tokenvault meta exchange \(name) --app \(app) --redirect-uri \(redirectUri) --state STATE --code CODE\(required.scopes.map { " --require-scope \($0)" }.joined())\(force ? " --force" : "")
                    """)
                return
            }
            let redirect: LoopbackRedirect
            do { redirect = try LoopbackRedirect(port: port) } catch { throw CLIFailure(message: "error: \(error)", exit: .failure) }
            let url = service.graph.loginDialogURL(appId: appId, redirectURI: redirect.redirectURI, state: redirect.state,
                                                   scopes: asked, rerequest: rerequest, configId: configId)
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
                try await service.exchange(name: name, app: app, code: code, redirectURI: redirect.redirectURI, kind: kind, replace: force,
                                           requireScopes: required.scopes)
            }
            printErr("stored \(name)")
            if let outcome { print(MetaCommand.describe(outcome)) }
            await MetaCommand.reportPermissions(service, name: name, app: app, asked: configId == nil ? asked : required.scopes)
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
            try await MetaCommand.replace(vault, graph, done: "replaced \(name) with a long-lived token") { try await $0.extend(name: name) }
        }
    }

    struct Refresh: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "refresh",
            abstract: "Get a fresh token from Meta before this one lapses; it replaces the old one atomically.",
            discussion: """
                A system-user token is exchanged with set_token_expires_in_60_days=true (a new 60-day token); a \
                user token with fb_exchange_token, while Meta allows it. The daemon does this by itself for \
                expiring system-user tokens (meta.refresh); services reading through `watch` see a `refreshed` event.
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var graph: GraphOptions
        @Argument(help: "The token's name.") var name: String

        func run() async throws {
            try await MetaCommand.replace(vault, graph, done: "refreshed \(name)") { try await $0.refresh(name: name) }
        }
    }

    struct Require: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "require",
            abstract: "Set the Meta permissions a token must keep (and the ad accounts or pages they must cover).",
            discussion: """
                Replaces the token's required scopes (none given: no longer any). A check that finds one missing \
                from `scopes`, or a --target missing from a required scope's `granular_scopes`, puts the token in \
                state scope_missing and notifies once; when it is back, `resolved`.

                Example:
                  tokenvault meta require acme/ads ads_read ads_management --target act_101
                """)

        @OptionGroup var vault: VaultOptions
        @Argument(help: "The token's name.") var name: String
        @Argument(help: "The permissions, e.g. ads_read ads_management.") var scopes: [String] = []
        @Option(help: ArgumentHelp("A target id (act_…, a page id) each required scope must cover (repeatable; replaces the targets).", valueName: "id"))
        var target: [String] = []
        @Flag(help: "Require no target any more.") var clearTargets = false

        func validate() throws {
            do { try MetaTokenService.validateScopes(scopes) } catch { throw ValidationError("\(error)") }
            if !target.isEmpty && scopes.isEmpty { throw ValidationError("--target needs the scopes that must cover it") }
            if !target.isEmpty && clearTargets { throw ValidationError("--target and --clear-targets contradict each other") }
        }

        func run() throws {
            try vault.audited { v, audit in
                // No --target: the targets stay as they were (say --clear-targets to drop them); none without scopes.
                let targets: [String]? = clearTargets || scopes.isEmpty ? [] : target.isEmpty ? nil : target
                let current = try reporting { try MetaTokenService.states(of: v)[name]?.targets }
                let kept = targets ?? current ?? []
                let reason = MetaTokenService.requirement(scopes, kept)
                try audit.admin("meta_require", token: name, reason: reason) { commit in
                    do {
                        try MetaTokenService.require(vault: v, name: name, scopes: scopes, targets: targets) { _ in try commit() }
                    } catch let e as MetaTokenService.MetaInputError {
                        throw CLIFailure(message: "error: \(e)", exit: .badInput)
                    }
                }
                printErr("\(name) \(reason); the next check judges it by that")
            }
        }
    }

    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "history",
            abstract: "List a token's checks, oldest first: verdict, state, scopes, expiries and errors.")

        @OptionGroup var vault: VaultOptions
        @Argument(help: "The token's name.") var name: String
        @Option(help: "At most this many (the newest).") var limit = 1000
        @Flag(help: "One JSON object per check.") var json = false

        func run() throws {
            let v = try vault.openVault()
            _ = try reporting { try v.show(name: name) }
            let checks = try reporting { try MetaTokenService.history(of: v, name: name, limit: max(1, limit)) }
            if json {
                for c in checks {
                    var o: [String: Any] = ["token": c.token, "checked_at": c.checkedAt, "verdict": c.verdict, "state": c.state,
                                            "expires_at": c.expiresAt as Any? ?? NSNull(), "data_access_expires_at": c.dataAccessExpiresAt as Any? ?? NSNull(),
                                            "error": c.error as Any? ?? NSNull()]
                    o["scopes"] = (try? JSONSerialization.jsonObject(with: Data(c.scopes.utf8))) ?? []
                    print(Output.jsonLine(o))
                }
                return
            }
            if checks.isEmpty { printErr("\(name) has not been checked yet"); return }
            print(Output.table(["CHECKED", "VERDICT", "STATE", "EXPIRES", "SCOPES", "ERROR"], checks.map { c in
                [Output.date(c.checkedAt), c.verdict, c.state, c.verdict == "failed" ? "-" : Output.date(c.expiresAt == 0 ? nil : c.expiresAt, never: "never"),
                 MetaTokenState.list(json: c.scopes).joined(separator: ","), c.error.map { String($0.prefix(60)) } ?? ""]
            }))
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
                        let m = try reporting { try service.state(of: name) }
                        print(Output.jsonLine(Output.json(record, meta: m)))
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
