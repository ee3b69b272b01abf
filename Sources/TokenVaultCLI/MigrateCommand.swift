import ArgumentParser
import Foundation
import VaultAudit
import VaultCore
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Copy this vault to another store (SQLite to PostgreSQL, or back) and verify the copy.",
        discussion: """
            Copies tokens, apps, wrapped data keys, the Meta lifecycle's state, checkpoints and the audit chain \
            (this host's log and the store's copies of every host's) in one transaction, then proves the copy: \
            the counts match, every sealed value opens from the target, and this host's chain verifies against \
            the target's checkpoint. Nothing is decrypted to be copied. A target that already holds a vault is \
            refused without --force (which replaces what it holds). The source is left as it was: switch to the \
            target by setting store = "URL" in <home>/tokenvault.toml (or $TOKENVAULT_STORE), then restart the daemon.

            Example:
              URL='postgres://vault@db.internal/tokenvault?sslmode=verify-full'
              URL="$URL&sslrootcert=/etc/tokenvault/ca.pem"
              tokenvault migrate --to "$URL" \\
                --to-password-file /etc/tokenvault/db-password
            """)

    @OptionGroup var vault: VaultOptions
    @Option(help: ArgumentHelp("The target store: postgres://… or sqlite:PATH.", valueName: "url")) var to: String
    @Option(help: ArgumentHelp("A file (mode 0600) holding the target PostgreSQL's password.", valueName: "file")) var toPasswordFile: String?
    @Flag(help: "Replace what the target holds if it already holds a vault.") var force = false

    func run() throws {
        let target: StoreLocation
        do { target = try StoreLocation.parse(to, passwordFile: toPasswordFile) } catch let p as StoreLocation.Problem {
            throw CLIFailure(message: "error: \(p)", exit: .badInput)
        }
        let v = try vault.openVault()
        // Recorded first, in the chain the copy carries: the migration is in the audit trail it moves.
        let audit = try CLIAudit(v)
        try audit.record("migrate", reason: "to \(target)\(force ? " (replacing what it held)" : "")")
        audit.close()
        let summary: StoreMigration.Summary
        do {
            summary = try reporting { try StoreMigration.copy(v, to: target, force: force) { printErr($0) } }
        } catch let r as StoreMigration.Refused {
            throw CLIFailure(message: "error: \(r)", exit: .badInput)
        }
        // Prove the copy opens: a vault on the target, every sealed value opened.
        let copy = try reporting { try Vault.open(home: v.home, passphrase: vault.passphraseProvider, hostID: v.hostID, store: target) }
        let opened = try reporting { try StoreMigration.openEverything(copy) }
        // The anchor moves with the chain it vouches for (its file is named per host on a shared store).
        if copy.keyring.anchorPath != v.keyring.anchorPath, let anchor = try? v.keyring.readAnchor() {
            try reporting { try copy.keyring.updateAnchor { _ in anchor } }
        }
        let keys = AuditKeys(auditKey: try reporting { try copy.auditKey() })
        let report = AuditVerifier.verify(directory: v.home.auditDirectory, keys: keys, publicKey: nil,
                                          checkpoint: try reporting { try copy.auditCheckpoint() })
        if let problem = report.problem {
            throw CLIFailure(message: "error: the copy was made, but this host's audit chain does not verify against it: \(problem)", exit: .integrity)
        }
        let records = summary.auditRecords.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print("copied \(summary.tokens) tokens, \(summary.apps) apps, \(summary.dataKeys) data keys, \(summary.notifications) notification states, "
              + "\(summary.checkpoints) checkpoints and audit records (\(records.isEmpty ? "none" : records)) to \(target) "
              + String(format: "in %.1f s", summary.seconds))
        print("verified: counts match, \(opened) sealed values open from the target, this host's chain (\(report.records) records) verifies against its checkpoint")
        printErr("the source \(v.storeLocation) is unchanged; to switch, set store = \"\(target)\" in \(v.home.root)/tokenvault.toml and restart the daemon")
    }
}
