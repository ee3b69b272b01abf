import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a vault: its home, keyring, first master key and database.",
        discussion: """
            Example: tokenvault init --home /var/lib/tokenvault
            With --passphrase the master key is derived from a passphrase (Argon2id) and only its salt \
            and limits are written to the keyring; the passphrase comes from --passphrase-file or the terminal.
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
        abstract: "Store a token. The token is read from stdin or --from-file, never from the command line.",
        discussion: """
            Example: printf '%s' "$TOKEN" | tokenvault put acme/ads --kind system_user --app acme
            One trailing newline is dropped. An existing token is replaced only with --force.
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name, e.g. acme/ads.") var name: String
    @Option(help: "user, system_user, page, app or other.") var kind: TokenKind = .other
    @Option(help: "The app the token belongs to (see `tokenvault app add`).") var app: String?
    @Option(help: ArgumentHelp("Read the token from this file instead of stdin.", valueName: "file")) var fromFile: String?
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
    }

    func run() throws {
        let secret = try fromFile.map { try SecretInput.readFile($0, what: "token") } ?? SecretInput.readStdin(what: "token for \(name)")
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        defer { audit.close() }
        let existed = (try? v.show(name: name)) != nil
        try audit.admin("put", token: name, reason: existed ? "replaced" : "created") { commit in
            try v.put(name: name, secret: secret, kind: kind, app: app, replace: force, beforeCommit: commit)
        }
        printErr("\(existed ? "replaced" : "stored") \(name)")
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a token (and nothing else) to stdout.",
        discussion: """
            Example: curl -H "Authorization: Bearer $(tokenvault get acme/ads)" ...
            A newline follows the token only when stdout is a terminal.
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Option(help: ArgumentHelp("Read through the daemon on this socket instead of opening the vault (no key file needed).",
                               valueName: "path"))
    var socket: String?

    func run() throws {
        if let socket {
            let token = try readThroughDaemon(socket: socket, name: name)
            FileHandle.standardOutput.write(Data(token.utf8))
            if isatty(1) == 1 { print("") }
            return
        }
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        defer { audit.close() }
        let opened: OpenedToken
        do {
            opened = try reporting {
                try Names.validate(name)  // as the daemon does: what is looked up and audited is exactly this name
                return try v.get(name: name)
            }
        } catch let failure as CLIFailure {
            try audit.record("get", token: name, outcome: failure.code == 3 ? .notFound : .failed, reason: failure.message)
            throw failure
        }
        // Durable before disclosure: the token is printed only once its record is on disk.
        try audit.record("get", token: name, secret: opened.secret)
        writeStdout(opened.secret)
        if isatty(1) == 1 { print("") }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List stored tokens with their metadata (never their values).",
        discussion: "Example: tokenvault list acme/   (names that start with acme/; acme/* works too)")

    @OptionGroup var vault: VaultOptions
    @Argument(help: "Only names that start with this (a trailing * is allowed).") var prefix: String?
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        let v = try vault.openVault()
        let start = prefix.map { $0.hasSuffix("*") ? String($0.dropLast()) : $0 } ?? ""
        let records = try reporting { try v.list() }.filter { $0.name.hasPrefix(start) }
        if json {
            for r in records { print(Output.jsonLine(Output.json(r))) }
            return
        }
        if records.isEmpty { printErr(start.isEmpty ? "no tokens stored" : "no tokens stored under \(start)"); return }
        print(Output.table(
            ["NAME", "KIND", "APP", "VALID", "EXPIRES", "CHECKED"],
            records.map { r in
                [r.name, r.kind, r.app ?? "-", Output.valid(r.valid),
                 r.checkedAt == nil ? "-" : Output.date(r.expiresAt == 0 ? nil : r.expiresAt, never: "never"),
                 Output.date(r.checkedAt)]
            }))
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one token's metadata (never its value).")

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The token's name.") var name: String
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        let v = try vault.openVault()
        let r = try reporting { try v.show(name: name) }
        if json { print(Output.jsonLine(Output.json(r))); return }
        let rows: [(String, String)] = [
            ("name", r.name), ("kind", r.kind), ("app", r.app ?? "-"), ("meta type", r.tokenType ?? "-"),
            ("valid", Output.valid(r.valid)), ("scopes", r.scopes),
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
        let audit = try CLIAudit(v)
        defer { audit.close() }
        try audit.admin("rm", token: name) { commit in try v.remove(name: name, beforeCommit: commit) }
        printErr("removed \(name)")
    }
}

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
            let audit = try CLIAudit(v)
            defer { audit.close() }
            try audit.admin("app_rm", reason: "app \(name)") { commit in try v.removeApp(name: name, beforeCommit: commit) }
            printErr("removed app \(name)")
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an app; its secret is read from stdin.",
            discussion: "Example: tokenvault app add acme --app-id 138483919580948 < app-secret.txt")

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
            let v = try vault.openVault()
            let audit = try CLIAudit(v)
            defer { audit.close() }
            try audit.admin("app_add", reason: "app \(app) (id \(appId))") { commit in
                try v.addApp(name: app, appId: appId, secret: secret, replace: force, beforeCommit: commit)
            }
            printErr("stored app \(app)")
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

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import tokens from a .env file, JSON Lines, or a sealed export, in one transaction.",
        discussion: """
            Examples:
              tokenvault import --prefix acme/ .env
              tokenvault import --format jsonl tokens.jsonl     # {"name":..,"token":..,"kind":..,"app":..}
              tokenvault import --sealed backup.tvx --export-passphrase-file pass.txt
            Reads stdin when no file is given. Nothing is imported if any line is bad or a name exists (use --force).
            """)

    @OptionGroup var vault: VaultOptions
    @Argument(help: "The file to read (default: stdin).") var file: String?
    @Option(help: "env, jsonl or sealed (default: guessed from the name and content).") var format: String?
    @Flag(help: "Same as --format sealed.") var sealed = false
    @Option(help: "Put this in front of every name from a .env file, e.g. acme/.") var prefix = ""
    @Option(help: "The kind of tokens that do not say.") var kind: TokenKind = .other
    @Option(help: "The app of tokens that do not say.") var app: String?
    @Option(help: ArgumentHelp("The sealed export's passphrase (default: asked on the terminal).", valueName: "file"))
    var exportPassphraseFile: String?
    @Flag(help: "Replace tokens that already exist.") var force = false

    func run() throws {
        var content = try readInput()
        defer { wipe(&content) }
        let chosen: ImportFormat
        if sealed { chosen = .sealed } else if let format {
            guard let f = ImportFormat(rawValue: format) else {
                throw CLIFailure(message: "error: --format must be env, jsonl or sealed", exit: .usage)
            }
            chosen = f
        } else {
            chosen = ImportFormat.detect(path: file, content: content)
        }
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        defer { audit.close() }
        let count: Int = try audit.admin("import", reason: "format \(chosen.rawValue)") { commit in
            switch chosen {
            case .env: return try v.put(ImportFormat.parseEnv(content, prefix: prefix, kind: kind, app: app), replace: force, beforeCommit: commit)
            case .jsonl: return try v.put(ImportFormat.parseJSONLines(content, kind: kind, app: app), replace: force, beforeCommit: commit)
            case .sealed:
                let pass = try exportPassphraseFile.map { try SecretInput.readFile($0, what: "passphrase") }
                    ?? SecretInput.prompt("Export passphrase: ", flag: "--export-passphrase-file")
                return try v.importSealed(content, passphrase: pass, replace: force, beforeCommit: commit)
            }
        }
        printErr("imported \(count) token\(count == 1 ? "" : "s") (\(chosen.rawValue))")
    }

    private func readInput() throws -> [UInt8] {
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CLIFailure(message: "error: cannot read \(file)", exit: .failure)
            }
            return [UInt8](data)
        }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        defer { wipe(&chunk) }
        while true {
            let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw CLIFailure(message: "error: cannot read stdin", exit: .failure) }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            if out.count > 64 * 1024 * 1024 { throw CLIFailure(message: "error: input larger than 64 MiB", exit: .badInput) }
        }
        return out
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an encrypted backup of every token and app.",
        discussion: """
            Example: tokenvault export --sealed --output backup.tvx --export-passphrase-file pass.txt
            The backup is sealed under a key derived from the passphrase (Argon2id), so it restores into \
            any vault with `tokenvault import --sealed`. Plain-text export is not offered.
            """)

    @OptionGroup var vault: VaultOptions
    @Flag(help: "Required: write a sealed (encrypted) export.") var sealed = false
    @Option(help: ArgumentHelp("Write here (created 0600) instead of stdout.", valueName: "file")) var output: String?
    @Option(help: ArgumentHelp("The passphrase for the export (default: asked twice on the terminal).", valueName: "file"))
    var exportPassphraseFile: String?
    @Option(help: "Argon2id strength: interactive, moderate or sensitive.") var kdf: PassphraseKDF.Strength = .moderate

    func validate() throws {
        guard sealed else {
            throw ValidationError("only sealed exports exist: add --sealed (plain-text exports would put every token on disk)")
        }
    }

    func run() throws {
        let pass: SecretBytes
        if let exportPassphraseFile {
            pass = try SecretInput.readFile(exportPassphraseFile, what: "passphrase")
        } else {
            pass = try SecretInput.prompt("Export passphrase: ", flag: "--export-passphrase-file")
            guard pass.constantTimeEquals(try SecretInput.prompt("Again: ", flag: "--export-passphrase-file")) else {
                throw CLIFailure(message: "error: the passphrases differ; nothing was written", exit: .badInput)
            }
        }
        guard pass.count >= 8 else { throw CLIFailure(message: "error: an export passphrase needs at least 8 characters", exit: .badInput) }
        let v = try vault.openVault()
        let audit = try CLIAudit(v)
        defer { audit.close() }
        let bytes = try audit.admin("export", reason: "sealed export") { _ in try v.exportSealed(passphrase: pass, strength: kdf) }
        if let output {
            let fd = open(output, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw CLIFailure(message: "error: cannot create \(output): \(String(cString: strerror(errno))) (it must not exist yet)", exit: .failure)
            }
            defer { close(fd) }
            let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) == $0.count } && fsync(fd) == 0
            guard ok else { throw CLIFailure(message: "error: writing \(output) failed", exit: .failure) }
            printErr("wrote sealed export to \(output)")
        } else {
            FileHandle.standardOutput.write(Data(bytes))
        }
    }
}
