import Foundation
import VaultCore
import VaultCrypto
import VaultPostgres
import VaultSQLite

/// Which store a vault lives in: `--store URL`, else `$TOKENVAULT_STORE`, else `store =` in
/// `<home>/tokenvault.toml`, else SQLite at `<home>/vault.db`.
///
/// - `sqlite:PATH` — a SQLite file (the embedded default, one host).
/// - `postgres://USER@HOST[:PORT]/DB?sslmode=verify-full&sslrootcert=FILE`, or over a Unix socket
///   `postgres:///DB?host=/run/postgresql&user=USER` — PostgreSQL, shared by several hosts.
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(PostgresLocation)

    /// The default: `vault.db` in the home.
    public static func `default`(for home: VaultHome) -> StoreLocation { .sqlite(path: home.databasePath) }

    public struct Problem: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses a store URL. `passwordFile` is `--store-password-file` (PostgreSQL only).
    public static func parse(_ text: String, passwordFile: String? = nil) throws -> StoreLocation {
        if text.hasPrefix("sqlite:") {
            var path = String(text.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path.removeFirst(2) }  // sqlite:///abs/path
            guard !path.isEmpty else { throw Problem(description: "store URL \(text): it names no file (sqlite:PATH)") }
            if passwordFile != nil { throw Problem(description: "--store-password-file is for a PostgreSQL store; a SQLite store has no password") }
            return .sqlite(path: path)
        }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            do { return .postgres(try PostgresLocation.parse(text, passwordFile: passwordFile)) } catch let p as PostgresLocation.Problem {
                throw Problem(description: p.description)
            }
        }
        throw Problem(description: "store URL \(PostgresLocation.redacted(text)): use sqlite:PATH or postgres://USER@HOST/DB (see `tokenvault help init`)")
    }

    /// The store named by the flag, else the environment, else the config file's `store =`, else the default.
    public static func resolve(flag: String?, passwordFile: String?, configured: String?, home: VaultHome,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws -> StoreLocation {
        let named = flag ?? environment["TOKENVAULT_STORE"].flatMap { $0.isEmpty ? nil : $0 } ?? configured
        guard let named else {
            if passwordFile != nil { throw Problem(description: "--store-password-file is for a PostgreSQL store; no --store was named") }
            return .default(for: home)
        }
        return try parse(named, passwordFile: passwordFile)
    }

    /// The store as messages name it (never a password).
    public var description: String {
        switch self {
        case .sqlite(let path): return path
        case .postgres(let p): return p.description
        }
    }

    public var isShared: Bool {
        if case .postgres = self { return true }
        return false
    }

    /// Opens the store. `create` makes a missing SQLite file; `listen` starts a shared store's change
    /// listener (the daemon, which remembers rows).
    public func open(create: Bool, listen: Bool = false) throws -> any VaultStorage {
        switch self {
        case .sqlite(let path): return try SQLiteStore(path: path, create: create)
        case .postgres(let p): return try PostgresStore(location: p, listen: listen)
        }
    }
}

extension Vault {
    /// Creates a vault in `store` (default: SQLite at `<home>/vault.db`); see ``Vault/create(home:passphrase:strength:hostID:openStore:)``.
    public static func create(home: VaultHome, passphrase: SecretBytes? = nil, strength: PassphraseKDF.Strength = .moderate,
                              hostID: String = Vault.defaultHostID, store: StoreLocation? = nil) throws -> Vault {
        let location = store ?? .default(for: home)
        return try create(home: home, passphrase: passphrase, strength: strength, hostID: hostID) { _ in try location.open(create: true) }
    }

    /// Opens the vault in `store` (default: SQLite at `<home>/vault.db`).
    public static func open(home: VaultHome, passphrase: PassphraseProvider? = nil, hostID: String = Vault.defaultHostID,
                            store: StoreLocation? = nil, listen: Bool = false) throws -> Vault {
        let location = store ?? .default(for: home)
        return try open(home: home, passphrase: passphrase, hostID: hostID, store: try location.open(create: false, listen: listen))
    }
}
