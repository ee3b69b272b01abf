import ArgumentParser
import Foundation
import MetaGraph
import VaultCore

/// The flags `serve` takes that `tokenvault.toml` can also hold (see ``DaemonConfig``). None has a default
/// here: a value given is a flag, the rest come from the file or the defaults (``ServeSettings``).
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The socket (default: <home>/tokenvault.sock, or the socket systemd passes).", valueName: "path"))
    var socket: String?
    @Option(help: ArgumentHelp("Also serve systemd's LoadCredential=ID:PATH on this socket (root peers, [[credential]] rules).", valueName: "path"))
    var credentialSocket: String?
    @Option(help: ArgumentHelp("The policy file (default: <home>/policy.toml).", valueName: "file")) var policy: String?
    @Option(help: ArgumentHelp("Give the socket this group (name or gid), so members can connect.", valueName: "group"))
    var socketGroup: String?
    @Option(help: "Close connections idle this many seconds (default 60).") var idleTimeout: Int?
    @Option(help: "Refuse connections beyond this many (default 4096).") var maxConnections: Int?
    @Option(help: "Refuse a uid's connections beyond this many, so one caller cannot lock the others out (default 1024).")
    var maxConnectionsPerUid: Int?
    @Option(help: "Event-loop threads (default: one per core but one, left to the audit flusher).") var threads: Int?
    @Option(help: ArgumentHelp("Keep each event loop and the audit flusher on a CPU of its own: steadier under heavy load, slower for a lone client (default false).",
                               valueName: "true|false"))
    var pinThreads: Bool?
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).") var logLevel: String?
    @Option(help: ArgumentHelp("Run this when a Meta token needs an admin (JSON on stdin).", valueName: "command"))
    var notifyCommand: String?
    @Option(help: "Seconds between Meta re-checks of each token (default 86400; sooner near expiry).") var checkInterval: Int?
    @Option(help: "Notify this many days before a token or its data access expires (default 7).") var warnDays: Int?

    /// The flags given, by their key in the file.
    var given: [String: String] {
        var out: [String: String] = [:]
        out["socket"] = socket
        out["credential_socket"] = credentialSocket
        out["policy"] = policy
        out["socket_group"] = socketGroup
        out["idle_timeout"] = idleTimeout.map(String.init)
        out["max_connections"] = maxConnections.map(String.init)
        out["max_connections_per_uid"] = maxConnectionsPerUid.map(String.init)
        out["threads"] = threads.map(String.init)
        out["pin_threads"] = pinThreads.map(String.init)
        out["log_level"] = logLevel
        out["notify_command"] = notifyCommand
        out["check_interval"] = checkInterval.map(String.init)
        out["warn_days"] = warnDays.map(String.init)
        return out
    }
}

/// Every `serve` setting's effective value and where it came from: a flag, the environment, the file (with
/// its line), or the default.
struct ServeSettings {
    struct Entry {
        let key: String
        let value: String?
        let source: String
    }

    let entries: [Entry]

    static func resolve(vault: VaultOptions, serve: ServeOptions, graph: GraphOptions) throws -> ServeSettings {
        let file = try vault.settings()
        let env = ProcessInfo.processInfo.environment.filter { !$0.value.isEmpty }
        let home = vault.vaultHome
        var flags = serve.given
        flags["store"] = vault.store
        flags["store_password_file"] = vault.storePasswordFile
        flags["host_id"] = vault.hostId
        flags["graph_url"] = graph.graphURL
        flags["graph_version"] = graph.graphVersion
        let environment: [String: (variable: String, value: String?)] = [
            "store": ("TOKENVAULT_STORE", env["TOKENVAULT_STORE"]),
            "graph_url": ("TOKENVAULT_GRAPH_URL", env["TOKENVAULT_GRAPH_URL"]),
        ]
        let defaults: [String: String?] = [
            "socket": home.socketPath, "policy": home.policyPath, "socket_group": nil,
            "idle_timeout": "60", "max_connections": "4096", "max_connections_per_uid": "1024",
            "threads": String(max(1, ProcessInfo.processInfo.activeProcessorCount - 1)), "pin_threads": "false", "log_level": "info",
            "notify_command": nil, "check_interval": "86400", "warn_days": "7",
            "graph_url": GraphConfiguration.defaultBaseURL.absoluteString, "graph_version": GraphConfiguration.defaultVersion,
            "store": "sqlite:" + home.root + "/vault.db", "store_password_file": nil, "host_id": Vault.defaultHostID,
            "audit.segment_size": String(64 << 20), "audit.index": "true", "audit.syslog": "false", "audit.syslog_socket": nil, "audit.witness_command": nil, "audit.witness_journal": "false", "metrics.listen": nil, "metrics.token_names": "false",
            "meta.login_redirect_uri": nil, "meta.refresh": "system_user", "meta.refresh_days": "15", "meta.remind_after": "259200",
            "meta.history_days": "400",
        ]
        var entries: [Entry] = []
        for setting in DaemonConfig.settings {
            let key = setting.key
            let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
            if let v = flags[key] {
                entries.append(Entry(key: key, value: v, source: "flag \(flag)"))
            } else if let e = environment[key], let v = e.value {
                entries.append(Entry(key: key, value: v, source: "$\(e.variable)"))
            } else if let v = file.string(key) {
                entries.append(Entry(key: key, value: v, source: file.source(key) ?? file.path))
            } else {
                entries.append(Entry(key: key, value: defaults[key] ?? nil, source: "default"))
            }
        }
        return ServeSettings(entries: entries)
    }

    func string(_ key: String) -> String? { entries.first { $0.key == key }?.value }
    func int(_ key: String) -> Int? { string(key).flatMap { Int($0) } }
    func source(_ key: String) -> String { entries.first { $0.key == key }?.source ?? "default" }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show the settings `serve` would run with.",
        subcommands: [ConfigShow.self])
}

struct ConfigShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print each effective `serve` setting and where it came from.",
        discussion: """
            A flag beats the environment ($TOKENVAULT_STORE, $TOKENVAULT_GRAPH_URL), which beats \
            <home>/tokenvault.toml, which beats the default. Give the same flags as `serve` to see what \
            they change. No secret is printed: the store URL holds none, and a password file is named, \
            never read.

            Example:
              tokenvault config show --home /var/lib/tokenvault
            """)

    @OptionGroup var vault: VaultOptions
    @OptionGroup var serve: ServeOptions
    @OptionGroup var graph: GraphOptions
    @Flag(help: "One JSON object per setting: key, value, source.") var json = false

    func run() throws {
        let settings = try ServeSettings.resolve(vault: vault, serve: serve, graph: graph)
        if json {
            for e in settings.entries {
                var object: [String: Any] = ["key": e.key, "source": e.source]
                object["value"] = e.value ?? NSNull()
                print(Output.jsonLine(object))
            }
            return
        }
        let width = settings.entries.map(\.key.count).max() ?? 0
        let valueWidth = min(60, settings.entries.map { ($0.value ?? "(none)").count }.max() ?? 0)
        for e in settings.entries {
            let value = e.value ?? "(none)"
            print(e.key.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                  + value.padding(toLength: max(valueWidth, value.count), withPad: " ", startingAt: 0) + "  " + e.source)
        }
    }
}
