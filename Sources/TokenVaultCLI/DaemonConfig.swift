import Foundation
import TOMLKit

/// `<home>/tokenvault.toml`: daemon settings an admin keeps in a file instead of on the command line.
///
///     notify_command = "mail -s 'TokenVault' ads-oncall@example.com"
///     check_interval = 86400      # seconds between Meta re-checks
///     warn_days = 7               # notify this many days before expiry
///     graph_url = "https://graph.facebook.com"
///     graph_version = "v25.0"
///     store = "postgres://vault@db.internal/tokenvault?sslmode=verify-full&sslrootcert=/etc/tokenvault/db-ca.pem"
///     store_password_file = "/etc/tokenvault/db-password"
///     host_id = "ads-worker-3"
struct DaemonConfig {
    var store: String?
    var storePasswordFile: String?
    var hostID: String?
    var notifyCommand: String?
    var checkInterval: Int?
    var warnDays: Int?
    var graphURL: String?
    var graphVersion: String?

    static func load(path: String) throws -> DaemonConfig {
        guard let data = FileManager.default.contents(atPath: path) else { return DaemonConfig() }
        let table: TOMLTable
        do { table = try TOMLTable(string: String(decoding: data, as: UTF8.self)) } catch let e as TOMLParseError {
            throw CLIFailure(message: "error: \(path):\(e.source.begin.line): \(e.description)", code: 2)
        }
        var c = DaemonConfig()
        func string(_ key: String) throws -> String {
            guard let value = table[key]?.string else { throw CLIFailure(message: "error: \(path): \(key) must be a string", code: 2) }
            return value
        }
        for key in table.keys {
            switch key {
            case "notify_command": c.notifyCommand = table[key]?.string
            case "check_interval": c.checkInterval = table[key]?.int
            case "warn_days": c.warnDays = table[key]?.int
            case "graph_url": c.graphURL = table[key]?.string
            case "graph_version": c.graphVersion = table[key]?.string
            case "store": c.store = try string(key)
            case "store_password_file": c.storePasswordFile = try string(key)
            case "host_id": c.hostID = try string(key)
            default: throw CLIFailure(message: "error: \(path): unknown setting \"\(key)\"", code: 2)
            }
        }
        return c
    }
}
