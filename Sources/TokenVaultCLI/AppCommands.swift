import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif


// `tokenvault app`: the Meta apps whose secrets sign proofs and debug_token calls.

struct AppCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "app", abstract: "Manage Meta apps (their secrets sign proofs and debug_token calls).",
        subcommands: [Add.self, ListApps.self, RemoveApp.self])

    struct RemoveApp: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm", abstract: "Delete an app and its sealed secret (refused while a token belongs to it).",
            discussion: "On a terminal it asks first; --yes does not.")

        @OptionGroup var vault: VaultOptions
        @Argument(help: "The app's name.") var name: String
        @Flag(help: "Do not ask for confirmation.") var yes = false

        func run() throws {
            let v = try vault.openVault()
            guard let app = try reporting({ try v.apps() }).first(where: { $0.name == name }) else {
                throw CLIFailure(message: "error: no app named \(name) (`tokenvault app list` shows them)", exit: .notFound)
            }
            if app.tokens > 0 {
                throw CLIFailure(message: "error: app \(name) is still used by \(app.tokens) token\(app.tokens == 1 ? "" : "s"); remove them or store them under another app first", exit: .badInput)
            }
            try confirm("Delete app \(name) (app id \(app.appId)) and its secret?", yes: yes)
            try CLIAudit.around(v) { audit in
                try audit.admin("app_rm", reason: "app \(name)") { commit in try v.removeApp(name: name, beforeCommit: commit) }
                printErr("removed app \(name)")
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Add an app; its secret is read from stdin.",
            discussion: """
                Example:
                  tokenvault app add acme --app-id 138483919580948 < app-secret.txt
                """)

        @OptionGroup var vault: VaultOptions
        @Argument(help: "The vault's name for the app.") var app: String
        @Option(help: "Meta's numeric app id.") var appId: String
        @Flag(help: "Replace an existing app of that name.") var force = false
        @Argument(help: .hidden) var extra: [String] = []

        func validate() throws {
            if !extra.isEmpty {
                throw ValidationError("app add takes the app secret on stdin, never on the command line; nothing was stored")
            }
        }

        func run() throws {
            let secret = try SecretInput.readStdin(what: "app secret for \(app)")
            try vault.audited { v, audit in
                try audit.admin("app_add", reason: "app \(app) (id \(appId))") { commit in
                    try v.addApp(name: app, appId: appId, secret: secret, replace: force, beforeCommit: commit)
                }
                printErr("stored app \(app)")
            }
        }
    }

    struct ListApps: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List apps (never their secrets).")

        @OptionGroup var vault: VaultOptions
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            let v = try vault.openVault()
            let apps = try reporting { try v.apps() }
            if json {
                for a in apps {
                    print(Output.jsonLine(["name": a.name, "app_id": a.appId, "tokens": a.tokens, "created_at": a.createdAt]))
                }
                return
            }
            if apps.isEmpty { printErr("no apps stored"); return }
            print(Output.table(["APP", "APP ID", "TOKENS", "CREATED"],
                               apps.map { [$0.name, $0.appId, String($0.tokens), Output.date($0.createdAt)] }))
        }
    }
}
