import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
import VaultStores

/// Where the vault is: shared by every command.
struct VaultOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The vault home (default: $TOKENVAULT_HOME, else ./.tokenvault).", valueName: "dir"))
    var home: String?

    @Option(name: .long, help: ArgumentHelp(
        "The keyring directory (default: $TOKENVAULT_KEYS, else a systemd $CREDENTIALS_DIRECTORY, else <home>/keys).",
        valueName: "dir"))
    var keys: String?

    @Option(name: .long, help: ArgumentHelp(
        "A file holding the passphrase of a passphrase-protected master key (default: $TOKENVAULT_PASSPHRASE_FILE; on a terminal you are asked).",
        valueName: "file"))
    var passphraseFile: String?

    @Option(name: .long, help: ArgumentHelp(
        "The store: sqlite:PATH or postgres://USER@HOST/DB?sslmode=verify-full&sslrootcert=FILE (default: $TOKENVAULT_STORE, else store in <home>/tokenvault.toml, else <home>/vault.db).",
        valueName: "url"))
    var store: String?

    @Option(name: .long, help: ArgumentHelp(
        "A file (mode 0600) holding the PostgreSQL password; else PGPASSFILE or ~/.pgpass. Never put it in the URL.",
        valueName: "file"))
    var storePasswordFile: String?

    @Option(name: .long, help: ArgumentHelp(
        "This host's name in a shared store and its audit records (default: the hostname).", valueName: "name"))
    var hostId: String?

    var vaultHome: VaultHome {
        let env = ProcessInfo.processInfo.environment
        let root = home ?? env["TOKENVAULT_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "./.tokenvault"
        let keyDir = keys ?? env["TOKENVAULT_KEYS"].flatMap { $0.isEmpty ? nil : $0 }
            ?? env["CREDENTIALS_DIRECTORY"].flatMap { $0.isEmpty ? nil : $0 }
        return VaultHome(root: trimSlash(root), keys: keyDir.map(trimSlash))
    }

    var passphraseSource: String? {
        passphraseFile ?? ProcessInfo.processInfo.environment["TOKENVAULT_PASSPHRASE_FILE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The passphrase provider: the file if one was named, else a prompt on the terminal.
    var passphraseProvider: PassphraseProvider {
        let file = passphraseSource
        return { purpose in
            if let file { return try SecretInput.readFile(file, what: "passphrase") }
            return try SecretInput.prompt("Passphrase for \(purpose): ")
        }
    }

    /// The settings `<home>/tokenvault.toml` gives every command (the store, the host's name).
    func settings() throws -> DaemonConfig {
        try DaemonConfig.load(path: vaultHome.root + "/tokenvault.toml")
    }

    /// The store this command uses, and this host's name in it.
    func storeLocation() throws -> StoreLocation {
        let s = try settings()
        do {
            return try StoreLocation.resolve(flag: store, passwordFile: storePasswordFile ?? s.storePasswordFile, configured: s.store,
                                             home: vaultHome)
        } catch let p as StoreLocation.Problem {
            throw CLIFailure(message: "error: \(p)", code: 2)
        }
    }

    func hostID() throws -> String {
        let configured = try settings().hostID
        let id = hostId ?? configured ?? Vault.defaultHostID
        guard !id.isEmpty, id.utf8.count <= 64, id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 0x22 && $0 != 0x5c }) else {
            throw CLIFailure(message: "error: --host-id \"\(id)\" must be 1 to 64 printable ASCII characters, no spaces or quotes", code: 2)
        }
        return id
    }

    /// Opens the vault; `listen` (the daemon) keeps a shared store's rows fresh through its change feed.
    func openVault(listen: Bool = false) throws -> Vault {
        let location = try storeLocation()
        let host = try hostID()
        return try reporting { try Vault.open(home: vaultHome, passphrase: passphraseProvider, hostID: host, store: location, listen: listen) }
    }

    private func trimSlash(_ s: String) -> String {
        s.count > 1 && s.hasSuffix("/") ? String(s.dropLast()) : s
    }
}

/// `--kind`, validated against the kinds the vault knows.
extension TokenKind: ExpressibleByArgument {}
extension PassphraseKDF.Strength: ExpressibleByArgument {}
