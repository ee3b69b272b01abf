import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key", abstract: "List, rotate and retire master keys.",
        discussion: """
            A running daemon picks up the new key without a restart. See Docs/OPERATIONS.md and \
            Docs/SCALING.md.

            Routine rotation:
              tokenvault key rotate
            After a suspected leak:
              tokenvault key rotate --reseal && tokenvault key retire OLD-ID
            Several hosts, one store (copy keys/NEW-ID to every host in between):
              tokenvault key new
              tokenvault key rotate --to NEW-ID [--reseal]
            """,
        subcommands: [ListKeys.self, New.self, Rotate.self, Retire.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "new",
            abstract: "Make a master key file that nothing uses yet (copy it to every host, then `key rotate --to ID`).")

        @OptionGroup var vault: VaultOptions
        @Flag(help: "Derive the key from a passphrase (from --new-passphrase-file or the terminal).") var passphrase = false
        @Option(help: ArgumentHelp("The new key's passphrase.", valueName: "file")) var newPassphraseFile: String?
        @Option(help: "Argon2id strength for --passphrase.") var kdf: PassphraseKDF.Strength = .moderate

        func run() throws {
            try vault.audited { v, audit in
                var secret: SecretBytes?
                if passphrase {
                    secret = try newPassphraseFile.map { try SecretInput.readFile($0, what: "passphrase") }
                        ?? SecretInput.prompt("New master key passphrase: ")
                }
                let id = try audit.admin("key_new") { commit in
                    let id = try v.createMasterKey(passphrase: secret, strength: kdf)
                    try commit()
                    return id
                }
                print(id)
                printErr("made master key \(id) in \(v.keyring.directory); nothing uses it yet. Copy \(v.keyring.path(id)) to every host's keyring, then run `tokenvault key rotate --to \(id)`")
            }
        }
    }

    struct ListKeys: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Show master keys and what each still protects.")

        @OptionGroup var vault: VaultOptions
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            let v = try vault.openVault()
            let keys = try reporting { try v.masterKeys() }
            if json {
                for k in keys {
                    print(Output.jsonLine(["id": k.id, "source": k.source?.rawValue ?? NSNull(), "state": k.state,
                                           "created": String(k.id.prefix(8)), "data_keys": k.dataKeys, "tokens": k.sealed]))
                }
                return
            }
            print(Output.table(["ID", "SOURCE", "CREATED", "STATE", "DATA KEYS", "TOKENS"], keys.map { k in
                let d = k.id.prefix(8)
                return [k.id, k.source?.rawValue ?? "-", "\(d.prefix(4))-\(d.dropFirst(4).prefix(2))-\(d.suffix(2))", k.state,
                        String(k.dataKeys), String(k.sealed)]
            }))
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate",
            abstract: "Make a new master key and re-wrap the data keys under it; --reseal also re-seals every token.",
            discussion: """
                Without --reseal: a new key file is written (temp, fsync, rename), then all data keys are re-wrapped \
                in one transaction. Tokens are untouched; the old key can then be retired.

                With --reseal: also a new data key, and every token and app secret re-sealed under it in batches \
                while the daemon keeps serving. If interrupted (even by kill -9), run it again to finish.
                """)

        @OptionGroup var vault: VaultOptions
        @Flag(help: "Also make a new data key and re-seal every token under it.") var reseal = false
        @Flag(help: "Derive the new master key from a passphrase (from --new-passphrase-file or the terminal).")
        var passphrase = false
        @Option(help: ArgumentHelp("The new key's passphrase.", valueName: "file")) var newPassphraseFile: String?
        @Option(help: "Argon2id strength for --passphrase.") var kdf: PassphraseKDF.Strength = .moderate
        @Option(help: "Tokens re-sealed per transaction.") var batch = 2000
        @Option(help: ArgumentHelp("Re-wrap under this key, already in the keyring (made by `key new` and copied to every host), instead of a new one.",
                                   valueName: "id"))
        var to: String?
        @Flag(help: "If another host (or process) is rotating, wait for it instead of stopping.") var wait = false

        func run() throws {
            try vault.audited { v, audit in
                // One rotation at a time across every host that shares the store.
                try reporting { try v.withRotationLock(wait: wait) { try rotate(v, audit) } }
            }
        }

        private func rotate(_ v: Vault, _ audit: CLIAudit) throws {
            let started = Date()
            var newKey: String?
            if reseal, try reporting({ try v.pendingReseal() }) > 0 {
                printErr("resuming an unfinished re-seal: \(try reporting { try v.pendingReseal() }) left")
            } else {
                var secret: SecretBytes?
                if passphrase {
                    secret = try newPassphraseFile.map { try SecretInput.readFile($0, what: "passphrase") }
                        ?? SecretInput.prompt("New master key passphrase: ")
                }
                newKey = try audit.admin("key_rotate", reason: to.map { "to master key \($0)" }) { commit in
                    try v.rotateMasterKey(passphrase: secret, strength: kdf, existing: to, beforeCommit: commit)
                }
                printErr("new master key \(newKey!); all data keys re-wrapped under it")
                if reseal { try reporting { _ = try v.beginReseal() } }
            }
            guard reseal else { return }
            let progress = Progress(started: Date())
            // Re-sealing changes no value a caller sees: it is recorded as it starts (a failure is recorded too).
            let count = try audit.admin("key_reseal", reason: newKey.map { "under master key \($0)" }) { commit in
                try commit()
                return try v.continueReseal(batchSize: max(1, batch)) { done, total in progress.show(done, total) }
            }
            progress.finish()
            printErr(String(format: "re-sealed %d tokens and app secrets in %.2f s", count, Date().timeIntervalSince(started)))
        }
    }

    struct Retire: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "retire",
            abstract: "Wipe and remove a master key that nothing depends on any more.",
            discussion: "Refused while a data key is wrapped under it (`tokenvault key list` shows the state). On a terminal it asks first; --yes does not.")

        @OptionGroup var vault: VaultOptions
        @Argument(help: "The key id.") var id: String
        @Flag(help: "Do not ask for confirmation.") var yes = false

        func run() throws {
            let v = try vault.openVault()
            try confirm("Wipe master key \(id)? Backups sealed under it will need their own copy of the key.", yes: yes)
            try CLIAudit.around(v) { audit in
                try audit.admin("key_retire", reason: "master key \(id)") { commit in try v.retireMasterKey(id: id, beforeCommit: commit) }
                printErr("retired master key \(id): its file was overwritten and removed")
            }
        }
    }
}

/// Progress of a long job: a bar with count and rate on a terminal, a plain line per step otherwise.
final class Progress {
    let started: Date
    let tty = isatty(2) == 1
    private var lastLine = Date.distantPast

    init(started: Date) { self.started = started }

    func show(_ done: Int, _ total: Int) {
        let rate = Double(done) / max(Date().timeIntervalSince(started), 0.001)
        if tty {
            let width = 30
            let filled = total > 0 ? min(width, done * width / total) : width
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data(String(format: "\r[%@] %d/%d  %.0f/s ", bar, done, total, rate).utf8))
        } else if Date().timeIntervalSince(lastLine) >= 1 || done == total {
            lastLine = Date()
            printErr(String(format: "re-sealed %d/%d (%.0f/s)", done, total, rate))
        }
    }

    func finish() {
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
