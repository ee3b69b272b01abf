import VaultCrypto

/// What went wrong in the vault, and what to do about it. No case carries a token, a secret or key bytes.
public enum VaultError: Error, Equatable, Sendable {
    /// `home` is the vault home (its `vault.db`), or the URL of a shared store that already holds a vault.
    case alreadyInitialised(home: String)
    case invalidName(String, why: String)
    case invalidSecret(why: String)
    case insecurePermissions(path: String, mode: UInt32, fix: String)
    case keyringMissing(path: String)
    case missingMasterKey(id: String, keyring: String)
    case wrongMasterKey(id: String, path: String)
    case wrongPassphrase(id: String)
    case passphraseRequired(id: String)
    case badKeyFile(path: String, why: String)
    case integrity(what: String, name: String)
    case unknownApp(String)
    /// A Meta action (check, extend, proof) on a token stored without an app.
    case noApp(token: String, action: String)
    /// A sealed export's passphrase does not open it (or the file was changed).
    case wrongExportPassphrase
    case importFailed(line: Int, why: String)
    case badExport(why: String)
    case io(path: String, why: String)

    /// The process exit code the CLI uses for this error (documented in the README).
    public var exitCode: Int32 {
        switch self {
        case .alreadyInitialised: return 4
        case .invalidName, .invalidSecret, .unknownApp, .noApp, .importFailed, .badExport: return 2
        case .insecurePermissions, .keyringMissing, .missingMasterKey, .wrongMasterKey, .wrongPassphrase,
             .passphraseRequired, .badKeyFile, .wrongExportPassphrase: return 5
        case .integrity: return 6
        case .io: return 1
        }
    }
}

extension VaultError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .alreadyInitialised(let home):
            if home.hasPrefix("postgres") {
                return "the store \(home) already holds a vault; nothing was changed. A second host needs no `init`: give it a copy of the keyring and its policy, and point --store at the same database"
            }
            return "a vault already exists at \(home.hasSuffix(".db") ? home : home + "/vault.db"); nothing was changed"
        case .invalidName(let name, let why):
            return "invalid name \"\(name)\": \(why)"
        case .invalidSecret(let why):
            return "secret rejected: \(why)"
        case .insecurePermissions(let path, let mode, let fix):
            return "\(path) is accessible by other users (mode \(String(mode, radix: 8))); refusing to use it. Fix: \(fix)"
        case .keyringMissing(let path):
            return "keyring directory \(path) does not exist: point --keys / $TOKENVAULT_KEYS at the vault's keyring"
        case .missingMasterKey(let id, let keyring):
            return "master key \(id) is not in the keyring \(keyring): restore its file from a backup, or point --keys / $TOKENVAULT_KEYS at the right keyring"
        case .wrongMasterKey(let id, let path):
            return "key file \(path) does not unlock this vault's data key (it is not master key \(id)); restore the right key file from a backup"
        case .wrongPassphrase(let id):
            return "the passphrase does not unlock master key \(id)"
        case .passphraseRequired(let id):
            return "master key \(id) is passphrase-protected: give --passphrase-file FILE or run on a terminal to be asked"
        case .badKeyFile(let path, let why):
            return "key file \(path): \(why)"
        case .integrity(let what, let name):
            return "\(what) \(name) failed its integrity check: its sealed bytes were changed or copied from another record. Nothing was disclosed; restore it from a backup or store it again"
        case .unknownApp(let app):
            return "no app named \(app): add it first with `tokenvault app add \(app) --app-id ID`"
        case .importFailed(let line, let why):
            return "import failed at line \(line): \(why); nothing was imported"
        case .noApp(let token, let action):
            return "\(token) was stored without an app, so \(action): store it again with its app, "
                + "`tokenvault put \(token) --app APP --force` (after `tokenvault app add APP --app-id ID` if the app is new)"
        case .wrongExportPassphrase:
            return "the passphrase does not open this sealed export (or the file was changed); nothing was imported"
        case .badExport(let why):
            return "not a usable sealed export: \(why); nothing was imported"
        case .io(let path, let why):
            return "\(path): \(why)"
        }
    }
}

extension StoreError {
    public var exitCode: Int32 {
        switch self {
        case .notInitialised: return 4
        case .permissionDenied: return 8
        case .notFound: return 3
        case .alreadyExists, .inUse: return 2
        case .busy, .diskFull, .damaged, .io, .unavailable, .locked, .rejected: return 1
        }
    }
}
