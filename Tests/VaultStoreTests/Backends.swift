import Foundation
import GRDB
import TestSupport
import VaultCore
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

/// The backends every store test runs against: SQLite (a file in a temporary home) and PostgreSQL (a
/// database of its own on the run's private cluster), so one suite states what any store must do.
enum Backend: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite, postgres

    var description: String { rawValue }

    /// The backends this run has: PostgreSQL whenever the cluster is up (`make test` always starts one).
    static var all: [Backend] { PostgresServer.isAvailable ? [.sqlite, .postgres] : [.sqlite] }
}

/// One store under test, with raw access for playing the admin or the attacker on it.
final class StoreFixture: @unchecked Sendable {
    let backend: Backend
    let dir = TempDir()
    let home: VaultHome
    let location: StoreLocation

    init(_ backend: Backend) throws {
        self.backend = backend
        home = VaultHome(root: dir.path + "/home")
        mkdir(home.root, 0o700)
        switch backend {
        case .sqlite: location = .sqlite(path: home.databasePath)
        case .postgres: location = try StoreLocation.parse(try PostgresServer.freshDatabase())
        }
    }

    /// A new connection to the store (another process, as far as the store can tell).
    func open(listen: Bool = false) throws -> any VaultStorage {
        try location.open(create: true, listen: listen)
    }

    func createVault(host: String = "host-a") throws -> Vault {
        try Vault.create(home: home, hostID: host, store: location)
    }

    func openVault(host: String = "host-a", listen: Bool = false) throws -> Vault {
        try Vault.open(home: home, hostID: host, store: location, listen: listen)
    }

    /// Runs SQL on the store behind the vault's back. `?` placeholders take blobs as hex.
    func raw(_ sql: String, blob: Data? = nil) throws {
        switch backend {
        case .sqlite:
            var config = Configuration()
            config.foreignKeysEnabled = false
            let db = try DatabaseQueue(path: home.databasePath, configuration: config)
            try db.write { try $0.execute(sql: sql, arguments: blob.map { [$0] } ?? []) }
        case .postgres:
            let text = blob.map { b in sql.replacingOccurrences(of: "?", with: "'\\x" + b.map { String(format: "%02x", $0) }.joined() + "'::bytea") } ?? sql
            try PostgresServer.psql(PostgresServer.database(of: urlText), text)
        }
    }

    /// One integer from raw SQL.
    func rawInt(_ sql: String) throws -> Int? {
        switch backend {
        case .sqlite: return try DatabaseQueue(path: home.databasePath).read { try Int.fetchOne($0, sql: sql) }
        case .postgres: return Int(try PostgresServer.psql(PostgresServer.database(of: urlText), sql))
        }
    }

    private var urlText: String {
        if case .postgres(let p) = location { return PostgresServer.url(database: p.database) }
        return ""
    }
}

/// Waits up to `seconds` for `condition`, polling every 5 ms; returns how long it took, or nil.
func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Double? {
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        if try condition() { return Date().timeIntervalSince(start) }
        usleep(5_000)
    }
    return try condition() ? Date().timeIntervalSince(start) : nil
}
