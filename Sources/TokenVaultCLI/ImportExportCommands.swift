import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif


// Moving in and backing up: `import` (.env, JSON Lines, sealed) and `export --sealed`.

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import tokens from a .env file, JSON Lines, or a sealed export, in one transaction.",
        discussion: """
            Reads stdin when no file is given. Nothing is imported if any line is bad or a name exists \
            (use --force). JSON Lines hold one {"name", "token", "kind", "app"} object a line.

            Examples:
              tokenvault import --prefix acme/ .env
              tokenvault import --format jsonl tokens.jsonl
              tokenvault import --sealed backup.tvx --export-passphrase-file pass.txt
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
        try vault.audited { v, audit in
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
        commandName: "export",
        abstract: "Write an encrypted backup of every token and app.",
        discussion: """
            The backup is sealed under a key derived from the passphrase (Argon2id), so it restores into \
            any vault with `tokenvault import --sealed`. Plain-text export is not offered.

            Example:
              tokenvault export --sealed --output backup.tvx \\
                --export-passphrase-file pass.txt
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
        try vault.audited { v, audit in
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
}
