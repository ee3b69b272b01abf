import Foundation
import TOMLKit

/// `<home>/tokenvault.toml`: daemon settings an admin keeps in a file instead of on the command line.
///
///     notify_command = "mail -s 'TokenVault' ads-oncall@example.com"
///     check_interval = 86400      # seconds between Meta re-checks
///     warn_days = 7               # notify this many days before expiry
///     graph_url = "https://graph.facebook.com"
///     graph_version = "v25.0"
struct DaemonConfig {
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
        for key in table.keys {
            switch key {
            case "notify_command": c.notifyCommand = table[key]?.string
            case "check_interval": c.checkInterval = table[key]?.int
            case "warn_days": c.warnDays = table[key]?.int
            case "graph_url": c.graphURL = table[key]?.string
            case "graph_version": c.graphVersion = table[key]?.string
            default: throw CLIFailure(message: "error: \(path): unknown setting \"\(key)\"", code: 2)
            }
        }
        return c
    }
}
