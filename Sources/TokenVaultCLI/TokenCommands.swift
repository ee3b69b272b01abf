import ArgumentParser
import Foundation
import MetaLifecycle
import TokenVaultClient
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif


// The token commands: init, put, get, list, show, rm.

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a vault: its home, keyring, first master key and database.",
        discussion: """
            With --passphrase the master key is derived from a passphrase (Argon2id) and only its salt \
            and limits are written to the keyring; the passphrase comes from --passphrase-file or the terminal.

            Example:
              tokenvault init --home /var/lib/tokenvault
            """)

    @OptionGroup var vault: VaultOptions
    @Flag(help: "Derive the master key from a passphrase instead of writing a key file.")
    var passphrase = false
    @Option(help: "Argon2id strength for --passphrase: interactive, moderate or sensitive.")
    var kdf: PassphraseKDF.Strength = .moderate

    func run() throws {
        let home = vault.vaultHome
        var secret: SecretBytes?
        if passphrase {
            if let file = vault.passphraseSource {
                secret = try SecretInput.readFile(file, what: "passphrase")
            } else {
                let first = try SecretInput.prompt("New vault passphrase: ")
                let again = try SecretInput.prompt("Again: ")
                guard first.constantTimeEquals(again) else {
                    throw CLIFailure(message: "error: the passphrases differ; nothing was created", exit: .badInput)
                }
                secret = first
            }
            guard let s = secret, s.count >= 8 else {
                throw CLIFailure(message: "error: a vault passphrase needs at least 8 characters; nothing was created", exit: .badInput)
            }
        }
        let location = try vault.storeLocation()
        let host = try vault.hostID()
        let created = try reporting { try Vault.create(home: home, passphrase: secret, strength: kdf, hostID: host, store: location) }
        vault.recordHostID(host, for: location)
        let key = try reporting { try created.keyring.entries().last?.id ?? "?" }
        // The first record: from here on the vault has an audit key, a checkpoint and an anchor, so a log
        // deleted later is caught by `audit verify` (a vault never audited has none of them).
        let audit = try CLIAudit(created)
        try audit.record("init", reason: "master key \(key)")
        audit.close()
        print("initialised vault at \(home.root)\(location.isShared ? " in \(location)" : "")")
        print("keyring \(home.keysDirectory), master key \(key)\(passphrase ? " (passphrase)" : "")")
    }
}

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Store a token. The token is read from stdin or --from-file, never from the command line.",
        discussion: """
            The token is read from stdin (one trailing newline is dropped), never from the command line. An \
            existing token is replaced only with --force.

            Example:
              printf '%s' "$TOKEN" | tokenvault put acme/ads --kind system_user \\
                --app acme
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name, e.g. acme/ads.") var name: String
    @Option(help: "user, system_user, page, app or other.") var kind: TokenKind = .other
    @Option(help: "The app the token belongs to (see `tokenvault app add`).") var app: String?
    @Option(help: ArgumentHelp("Read the token from this file instead of stdin.", valueName: "file")) var fromFile: String?
    @Option(name: .customLong("require-scope"), help: ArgumentHelp("A Meta permission the token must keep (repeatable); checks flag it scope_missing without.", valueName: "scope"))
    var requireScopes: [String] = []
    @Flag(help: "Replace an existing token of that name.") var force = false
    @Argument(help: .hidden) var extra: [String] = []

    func validate() throws {
        if !extra.isEmpty {
            // The value is deliberately not repeated: it may be the secret.
            throw ValidationError("""
                put takes no value on the command line: arguments are visible to every user through `ps` and \
                land in shell history. Pipe the token on stdin or use --from-file FILE. Nothing was stored; \
                if that argument was a real token, treat it as exposed.
                """)
        }
        do { try MetaTokenService.validateScopes(requireScopes) } catch { throw ValidationError("--require-scope: \(error)") }
    }

    func run() throws {
        let secret = try fromFile.map { try SecretInput.readFile($0, what: "token") } ?? SecretInput.readStdin(what: "token for \(name)")
        try vault.audited { v, audit in
            let existed = (try? v.show(name: name)) != nil
            try audit.admin("put", token: name, reason: existed ? "replaced" : "created") { commit in
                try v.put(name: name, secret: secret, kind: kind, app: app, replace: force, beforeCommit: commit)
            }
            if !requireScopes.isEmpty {
                do {
                    try audit.admin("meta_require", token: name, reason: "requires " + requireScopes.joined(separator: ",")) { commit in
                        try MetaTokenService.require(vault: v, name: name, scopes: requireScopes, targets: nil) { _ in try commit() }
                    }
                } catch {
                    throw CLIFailure(message: "error: \(name) was stored, but its required scopes were not: \(error); "
                                     + "run `tokenvault meta require \(name) \(requireScopes.joined(separator: " "))`", exit: .failure)
                }
            }
            printErr("\(existed ? "replaced" : "stored") \(name)" + (requireScopes.isEmpty ? "" : ", requiring \(requireScopes.joined(separator: ","))"))
        }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Print a token (and nothing else) to stdout.",
        discussion: """
            A newline follows the token only when stdout is a terminal. With --socket, or when $TOKENVAULT_SOCKET is set, the token is read through the daemon, as the caller's uid, under the policy; otherwise the vault is opened directly (the key file is needed).

            With --proof, the token and its appsecret_proof are printed as shell-quoted lines (TOKEN=…, APPSECRET_PROOF=…, and APPSECRET_TIME=… for a timed proof), for eval; with --json, the daemon's reply object (the token, its metadata and the proof) on one line.

            Examples:
              curl -H "Authorization: Bearer $(tokenvault get acme/ads)" ...
              export TOKENVAULT_SOCKET=/run/tokenvault/tokenvault.sock
              eval "$(tokenvault get acme/ads --proof timed)"
              curl -G https://graph.facebook.com/v24.0/me \\
                -d "appsecret_proof=$APPSECRET_PROOF" \\
                -d "appsecret_time=$APPSECRET_TIME" \\
                -H "Authorization: Bearer $TOKEN"
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Option(help: ArgumentHelp("Read through the daemon on this socket instead of opening the vault (no key file needed; default $TOKENVAULT_SOCKET).",
                               valueName: "path"))
    var socket: String?
    @Option(help: ArgumentHelp("Also print an appsecret_proof: timed (over token|time) or legacy (over the token).", valueName: "kind"))
    var proof: ProofKind?
    @Flag(help: "Print one JSON object: name, token, kind, expires_at, scopes, valid, checked_at and the proof.")
    var json = false

    enum ProofKind: String, ExpressibleByArgument, CaseIterable {
        case timed, legacy
    }

    func run() throws {
        if let socket = socket ?? ProcessInfo.processInfo.environment["TOKENVAULT_SOCKET"].flatMap({ $0.isEmpty ? nil : $0 }) {
            let token = try throughDaemon(socket: socket) {
                try $0.getBlocking(name, proof: proof.map { TokenVaultClient.Proof(rawValue: $0.rawValue)! })
            }
            return print(token)
        }
        try vault.audited { v, audit in
            let opened: OpenedToken
            do {
                opened = try reporting {
                    try Names.validate(name)  // as the daemon does: what is looked up and audited is exactly this name
                    return try v.get(name: name)
                }
            } catch let failure as CLIFailure {
                try audit.record("get", token: name, outcome: failure.code == Exit.notFound.rawValue ? .notFound : .failed, reason: failure.message)
                throw failure
            }
            guard proof != nil || json else {
                // Durable before disclosure: the token is printed only once its record is on disk.
                try audit.record("get", token: name, secret: opened.secret)
                writeStdout(opened.secret)
                if isatty(1) == 1 { Swift.print("") }
                return
            }
            var made: (hex: String, time: Int64?)?
            if let proof {
                guard let app = opened.record.app else {
                    throw CLIFailure(message: "error: \(name) has no app (store it with --app), so no appsecret_proof can be made", exit: .badInput)
                }
                made = try reporting { try v.appsecretProof(token: opened.secret, app: app, timed: proof == .timed) }
            }
            try audit.record(proof == nil ? "get" : "get+proof", token: name, secret: opened.secret)
            let r = opened.record
            print(TokenVaultClient.Token(
                name: r.name, token: opened.secret.unsafeStringCopy(), kind: r.kind, expiresAt: r.expiresAt == 0 ? nil : r.expiresAt,
                scopes: Vault.scopes(of: r), valid: r.valid, checkedAt: r.checkedAt, appsecretProof: made?.hex, appsecretTime: made?.time))
        }
    }

    /// The token alone, its JSON object, or its shell lines.
    private func print(_ t: TokenVaultClient.Token) {
        if json {
            var object: [String: Any] = ["name": t.name, "token": t.token, "kind": t.kind, "expires_at": t.expiresAt ?? NSNull(),
                                         "scopes": t.scopes, "valid": t.valid ?? NSNull(), "checked_at": t.checkedAt ?? NSNull()]
            if let p = t.appsecretProof { object["appsecret_proof"] = p }
            if let time = t.appsecretTime { object["appsecret_time"] = time }
            Swift.print(Output.jsonLine(object))
        } else if proof != nil {
            var lines = "TOKEN=\(Output.shellQuoted(t.token))\nAPPSECRET_PROOF=\(Output.shellQuoted(t.appsecretProof ?? ""))\n"
            if let time = t.appsecretTime { lines += "APPSECRET_TIME=\(time)\n" }
            FileHandle.standardOutput.write(Data(lines.utf8))
        } else {
            FileHandle.standardOutput.write(Data(t.token.utf8))
            if isatty(1) == 1 { Swift.print("") }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List stored tokens with their metadata (never their values).",
        discussion: """
            Names that start with acme/ (acme/* works too):
              tokenvault list acme/
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "Only names that start with this (a trailing * is allowed).") var prefix: String?
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        let v = try vault.openVault()
        let start = prefix.map { $0.hasSuffix("*") ? String($0.dropLast()) : $0 } ?? ""
        let records = try reporting { try v.list() }.filter { $0.name.hasPrefix(start) }
        let states = try reporting { try MetaTokenService.states(of: v) }
        if json {
            for r in records { print(Output.jsonLine(Output.json(r, meta: states[r.name]))) }
            return
        }
        if records.isEmpty { printErr(start.isEmpty ? "no tokens stored" : "no tokens stored under \(start)"); return }
        print(Output.table(
            ["NAME", "KIND", "APP", "STATE", "EXPIRES", "CHECKED"],
            records.map { r in
                [r.name, r.kind, r.app ?? "-", states[r.name]?.state ?? TokenState.unchecked.rawValue,
                 r.checkedAt == nil ? "-" : Output.date(r.expiresAt == 0 ? nil : r.expiresAt, never: "never"),
                 Output.date(r.checkedAt)]
            }))
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one token's metadata (never its value).")

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        let v = try vault.openVault()
        let r = try reporting { try v.show(name: name) }
        let m = try reporting { try MetaTokenService.states(of: v)[name] }
        if json { print(Output.jsonLine(Output.json(r, meta: m))); return }
        let required = m.map { $0.required.joined(separator: ",") + ($0.targets.isEmpty ? "" : " on " + $0.targets.joined(separator: ",")) } ?? ""
        let rows: [(String, String)] = [
            ("name", r.name), ("kind", r.kind), ("app", r.app ?? "-"), ("meta type", r.tokenType ?? "-"),
            ("state", (m?.state ?? TokenState.unchecked.rawValue) + (m?.appMismatch == true ? " (issued for app \(m?.appId ?? "?"))" : "")),
            ("valid", Output.valid(r.valid)), ("scopes", r.scopes), ("required scopes", required.isEmpty ? "-" : required),
            ("facebook user", m?.userId ?? "-"), ("issued", Output.date(m?.issuedAt)),
            ("expires", r.checkedAt == nil ? "-" : Output.date(r.expiresAt, never: "never")),
            ("data access expires", Output.date(r.dataAccessExpiresAt)),
            ("checked", Output.date(r.checkedAt)), ("last error", r.lastError ?? "-"),
            ("created", Output.date(r.createdAt)), ("updated", Output.date(r.updatedAt)),
        ]
        for (k, value) in rows { print("\(k.padding(toLength: 20, withPad: " ", startingAt: 0)) \(value)") }
    }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Delete a token.",
        discussion: "On a terminal it asks first; --yes does not. Every daemon stops serving it at its next read.")

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Flag(help: "Do not ask for confirmation.") var yes = false

    func run() throws {
        let v = try vault.openVault()
        _ = try reporting { try v.show(name: name) }  // not found: say so before asking
        try confirm("Delete token \(name)? Services reading it will be refused.", yes: yes)
        try CLIAudit.around(v) { audit in
            try audit.admin("rm", token: name) { commit in try v.remove(name: name, beforeCommit: commit) }
            printErr("removed \(name)")
        }
    }
}
