import Foundation
import TestSupport
import GRDB
import VaultCore
import VaultStores
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif



/// A new vault in a temporary home, with a random master key.
func makeVault(_ dir: TempDir) throws -> (Vault, VaultHome) {
    let home = VaultHome(root: dir.path + "/home")
    return (try Vault.create(home: home), home)
}

/// Raw access to vault.db, playing the attacker who can write the database file but has no key.
func tamper(_ home: VaultHome, _ sql: String, _ arguments: StatementArguments = []) throws {
    var config = Configuration()
    config.foreignKeysEnabled = false
    let db = try DatabaseQueue(path: home.databasePath, configuration: config)
    try db.write { try $0.execute(sql: sql, arguments: arguments) }
}

func fileBytes(_ path: String) -> [UInt8] {
    (FileManager.default.contents(atPath: path)).map { [UInt8]($0) } ?? []
}

extension Array where Element == UInt8 {
    func contains(bytes needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        for i in 0...(count - needle.count) where self[i] == needle[0] && Array(self[i..<(i + needle.count)]) == needle {
            return true
        }
        return false
    }
}

func sqlInt(_ home: VaultHome, _ sql: String) throws -> Int? {
    try DatabaseQueue(path: home.databasePath).read { try Int.fetchOne($0, sql: sql) }
}

func sqlData(_ home: VaultHome, _ sql: String) throws -> Data? {
    try DatabaseQueue(path: home.databasePath).read { try Data.fetchOne($0, sql: sql) }
}
