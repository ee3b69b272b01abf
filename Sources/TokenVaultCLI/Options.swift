import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

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
            throw CLIFailure(message: "error: \(p)", exit: .badInput)
        }
    }

    /// This host's name in a shared store: `--host-id`, else `host_id` in tokenvault.toml, else the name the
    /// home recorded (`<home>/host-id`, written on first use of a shared store), else the hostname. A home's
    /// audit chain is one host's, so a name that differs from the recorded one is refused.
    func hostID() throws -> String {
        let configured = try settings().hostID
        let recordedPath = vaultHome.root + "/host-id"
        let recorded = (try? String(contentsOfFile: recordedPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let id = hostId ?? configured ?? recorded ?? Vault.defaultHostID
        guard !id.isEmpty, id.utf8.count <= 64,
              id.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f }) else {
            throw CLIFailure(message: "error: host id \"\(id)\" must be 1 to 64 letters, digits, '.', '-' or '_'", exit: .badInput)
        }
        if let recorded, !recorded.isEmpty, recorded != id {
            throw CLIFailure(message: "error: this home is host \"\(recorded)\" in its store (\(recordedPath)), not \"\(id)\"; "
                + "a home's audit chain belongs to one host: drop --host-id, or use a home of its own for \"\(id)\"", exit: .badInput)
        }
        return id
    }

    /// Records this host's name in the home on first use of a shared store (see ``hostID()``).
    func recordHostID(_ id: String, for location: StoreLocation) {
        guard location.isShared else { return }
        let path = vaultHome.root + "/host-id"
        guard access(path, F_OK) != 0, access(vaultHome.root, W_OK) == 0 else { return }
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        let line = Array((id + "\n").utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Opens the vault; `listen` (the daemon) keeps a shared store's rows fresh through its change feed.
    func openVault(listen: Bool = false) throws -> Vault {
        let location = try storeLocation()
        let host = try hostID()
        let vault = try reporting { try Vault.open(home: vaultHome, passphrase: passphraseProvider, hostID: host, store: location, listen: listen) }
        recordHostID(host, for: location)
        return vault
    }

    private func trimSlash(_ s: String) -> String {
        s.count > 1 && s.hasSuffix("/") ? String(s.dropLast()) : s
    }
}

/// `--kind`, validated against the kinds the vault knows.
extension TokenKind: ExpressibleByArgument {}
extension PassphraseKDF.Strength: ExpressibleByArgument {}
