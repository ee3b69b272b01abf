import ArgumentParser
import Foundation
import VaultCore
import VaultCrypto

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

    func openVault() throws -> Vault {
        try reporting { try Vault.open(home: vaultHome, passphrase: passphraseProvider) }
    }

    private func trimSlash(_ s: String) -> String {
        s.count > 1 && s.hasSuffix("/") ? String(s.dropLast()) : s
    }
}

/// `--kind`, validated against the kinds the vault knows.
extension TokenKind: ExpressibleByArgument {}
extension PassphraseKDF.Strength: ExpressibleByArgument {}
