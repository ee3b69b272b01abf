import Foundation
import TOMLKit

/// `<home>/tokenvault.toml`: every `serve` setting, each keyed by its long flag's name with `_` for `-`,
/// and sections where a setting has no flag. Flags override the file; the file overrides the defaults.
///
///     socket = "/run/tokenvault/tokenvault.sock"
///     socket_group = "ads"
///     policy = "/etc/tokenvault/policy.toml"
///     idle_timeout = 60                # seconds
///     max_connections = 4096
///     max_connections_per_uid = 1024
///     threads = 1
///     pin_threads = false              # true: each event loop and the audit flusher on a CPU of its own
///     log_level = "info"
///     notify_command = "mail -s 'TokenVault' ads-oncall@example.com"
///     check_interval = 86400           # seconds between Meta re-checks
///     warn_days = 7                    # notify this many days before expiry
///     graph_url = "https://graph.facebook.com"
///     graph_version = "v26.0"
///     store = "postgres://vault@db.internal/tokenvault?sslmode=verify-full&sslrootcert=/etc/tokenvault/db-ca.pem"
///     store_password_file = "/etc/tokenvault/db-password"
///     host_id = "ads-worker-3"
///
///     [meta]
///     login_redirect_uri = "https://ads.example.com/fb-callback"   # notifications carry a login link for the user
///     refresh = "system_user"          # refresh expiring tokens: "off", "system_user" or "all" (user tokens too)
///     refresh_days = 15                # that many days before expiry
///     remind_after = 259200            # seconds before a problem still open is notified again (0: never)
///     history_days = 400               # days of check history kept
///
///     [audit]
///     segment_size = 67108864          # bytes a segment grows to before the next one starts
///     syslog = true                    # also each record to the journal (or /dev/log), best effort
///     witness_command = "ssh witness@vault-witness 'cat >> ads-worker-3.jsonl'"   # signed statements, off the host
///
///     [metrics]
///     listen = "127.0.0.1:9464"        # or "unix:/run/tokenvault/metrics.sock"; off unless set
///     token_names = false              # true: per-token expiry gauges, named by token
///
/// An unknown key, a value of the wrong type or out of range, or a file that does not parse is an error
/// naming the file and the line.
struct DaemonConfig {
    /// One setting the file may hold: its key (`section.key` inside a section) and what values it takes.
    struct Setting {
        enum Kind { case string, path, integer(ClosedRange<Int>), choice([String]), boolean }
        let key: String
        let kind: Kind
        let help: String
    }

    static let settings: [Setting] = [
        Setting(key: "socket", kind: .path, help: "the socket services connect to"),
        Setting(key: "credential_socket", kind: .path, help: "systemd LoadCredential= socket (off unless set)"),
        Setting(key: "socket_group", kind: .string, help: "group given the socket (mode 0660)"),
        Setting(key: "policy", kind: .path, help: "the policy file"),
        Setting(key: "idle_timeout", kind: .integer(1...86_400), help: "seconds before an idle connection is closed"),
        Setting(key: "max_connections", kind: .integer(1...1_000_000), help: "connections beyond this are refused"),
        Setting(key: "max_connections_per_uid", kind: .integer(1...1_000_000), help: "one uid's connections beyond this are refused"),
        Setting(key: "threads", kind: .integer(1...256), help: "event-loop threads"),
        Setting(key: "pin_threads", kind: .boolean, help: "keep each event loop and the audit flusher on a CPU of its own (default false)"),
        Setting(key: "log_level", kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), help: "log level"),
        Setting(key: "notify_command", kind: .string, help: "run when a Meta token needs an admin (JSON on stdin)"),
        Setting(key: "check_interval", kind: .integer(60...31_536_000), help: "seconds between Meta re-checks of each token"),
        Setting(key: "warn_days", kind: .integer(0...365), help: "days before expiry to notify"),
        Setting(key: "graph_url", kind: .string, help: "the Graph API's base URL"),
        Setting(key: "graph_version", kind: .string, help: "the Graph API version"),
        Setting(key: "store", kind: .string, help: "the store (sqlite:PATH or a postgres:// URL)"),
        Setting(key: "store_password_file", kind: .path, help: "file holding the PostgreSQL password"),
        Setting(key: "host_id", kind: .string, help: "this host's name in a shared store"),
        Setting(key: "meta.login_redirect_uri", kind: .string, help: "an https redirect URI of the app: notifications carry a login link"),
        Setting(key: "meta.refresh", kind: .choice(["off", "system_user", "all"]), help: "which expiring tokens the daemon refreshes (default system_user)"),
        Setting(key: "meta.refresh_days", kind: .integer(1...59), help: "days before expiry to refresh (default 15)"),
        Setting(key: "meta.remind_after", kind: .integer(0...31_536_000), help: "seconds before an open problem is notified again (default 259200; 0: never)"),
        Setting(key: "meta.history_days", kind: .integer(1...3650), help: "days of check history kept (default 400)"),
        Setting(key: "audit.segment_size", kind: .integer(1 << 20 ... 1 << 40), help: "bytes an audit segment grows to"),
        Setting(key: "audit.index", kind: .boolean, help: "index each finished segment for queries (default true)"),
        Setting(key: "audit.syslog", kind: .boolean, help: "also send each record to the journal or syslog, best effort"),
        Setting(key: "audit.witness_command", kind: .string, help: "run with each witness statement on stdin (JSON), off the host"),
        Setting(key: "audit.witness_journal", kind: .boolean, help: "also send each witness statement to the journal or syslog"),
        Setting(key: "audit.syslog_socket", kind: .path, help: "the socket for audit.syslog (default: the journal's, else /dev/log)"),
        Setting(key: "metrics.listen", kind: .string, help: "Prometheus metrics on unix:PATH or a loopback HOST:PORT (off unless set)"),
        Setting(key: "metrics.token_names", kind: .boolean, help: "metrics name tokens (each one's expiry); off by default"),
    ]

    /// The file's values, by key, as text (integers in decimal), with the line each is on.
    private(set) var values: [String: (value: String, line: Int)] = [:]
    let path: String

    var store: String? { values["store"]?.value }
    var storePasswordFile: String? { values["store_password_file"]?.value }
    var hostID: String? { values["host_id"]?.value }
    var notifyCommand: String? { values["notify_command"]?.value }
    var checkInterval: Int? { int("check_interval") }
    var warnDays: Int? { int("warn_days") }
    var graphURL: String? { values["graph_url"]?.value }
    var graphVersion: String? { values["graph_version"]?.value }

    func string(_ key: String) -> String? { values[key]?.value }
    func int(_ key: String) -> Int? { values[key].flatMap { Int($0.value) } }
    /// Where a value came from, for `config show`.
    func source(_ key: String) -> String? { values[key].map { "\(path):\($0.line)" } }

    init(path: String) { self.path = path }

    static func load(path: String) throws -> DaemonConfig {
        var c = DaemonConfig(path: path)
        guard let data = FileManager.default.contents(atPath: path) else { return c }
        let text = String(decoding: data, as: UTF8.self)
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw CLIFailure(message: "error: \(path):\(e.source.begin.line): \(e.description)", exit: .badInput)
        }
        let lines = KeyLines(text)
        func fail(_ key: String, _ why: String) -> CLIFailure {
            CLIFailure(message: "error: \(path):\(lines.line(of: key)): \(why)", exit: .badInput)
        }
        var entries: [(String, TOMLValueConvertible)] = []
        for (key, value) in table {
            if let section = value.table {
                guard section.isEmpty || settings.contains(where: { $0.key.hasPrefix(key + ".") }) else {
                    throw fail(key, "unknown section [\(key)]")
                }
                for (inner, v) in section { entries.append(("\(key).\(inner)", v)) }
            } else {
                entries.append((key, value))
            }
        }
        for (key, value) in entries {
            guard let setting = settings.first(where: { $0.key == key }) else {
                let dashed = key.replacingOccurrences(of: "-", with: "_")
                let near = settings.map(\.key).first { $0 == dashed || $0.hasSuffix("." + key) }
                throw fail(key, "unknown setting \"\(key)\"" + (near.map { " (did you mean \"\($0)\"?)" } ?? ""))
            }
            let text: String
            switch setting.kind {
            case .string, .path:
                guard let s = value.string else { throw fail(key, "\(key) must be a string, in quotes") }
                guard !s.isEmpty else { throw fail(key, "\(key) is empty") }
                if case .path = setting.kind, !s.hasPrefix("/") { throw fail(key, "\(key) must be an absolute path, not \"\(s)\"") }
                text = s
            case .integer(let range):
                guard let n = value.int else { throw fail(key, "\(key) must be a whole number") }
                guard range.contains(n) else { throw fail(key, "\(key) must be \(range.lowerBound) to \(range.upperBound), not \(n)") }
                text = String(n)
            case .boolean:
                guard let b = value.bool else { throw fail(key, "\(key) must be true or false") }
                text = b ? "true" : "false"
            case .choice(let options):
                guard let s = value.string, options.contains(s) else {
                    throw fail(key, "\(key) must be one of \(options.joined(separator: ", "))")
                }
                text = s
            }
            c.values[key] = (text, lines.line(of: key))
        }
        return c
    }
}

/// The line each key of a TOML file is on (TOMLKit reports lines for syntax errors only), `section.key`
/// inside a `[section]`; line 1 when a key is not found the simple way (a quoted or dotted key).
struct KeyLines {
    private var lines: [String: Int] = [:]

    init(_ text: String) {
        var section = ""
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[") {
                let name = line.prefix { $0 != "#" }.trimmingCharacters(in: CharacterSet(charactersIn: "[] "))
                if lines[name] == nil { lines[name] = i + 1 }
                section = name + "."
                continue
            }
            guard let eq = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            if lines[section + key] == nil { lines[section + key] = i + 1 }
        }
    }

    func line(of key: String) -> Int { lines[key] ?? 1 }
}
