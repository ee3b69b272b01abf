import ArgumentParser
import Foundation
import VaultAudit
import VaultBench
import VaultCore
import VaultCrypto
import VaultDaemon
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure the daemon, and the floor beside it (see `make bench`).",
        subcommands: [Load.self, FloorCommand.self, AuditFill.self, ReadPath.self, Watch.self, Credential.self])

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "load",
            abstract: "Closed-loop load on a daemon: requests/s, latency percentiles, errors by code.",
            discussion: """
                Example:
                  tokenvault bench load --socket v/tokenvault.sock --clients 32 \\
                    --names-file names.txt --json
                """)

        @Option(help: "The daemon's socket.") var socket: String
        @Option(help: "Concurrent connections.") var clients = 8
        @Option(help: "Requests kept in flight per connection.") var pipeline = 1
        @Option(help: "Measured seconds.") var duration = 5.0
        @Option(help: "Warm-up seconds (not counted).") var warmup = 1.0
        @Option(help: "get, list or ping.") var op = "get"
        @Option(help: ArgumentHelp("Token names, one per line (taken round-robin).", valueName: "file")) var namesFile: String?
        @Option(help: "Ask for a proof: timed or legacy.") var proof: String?
        @Option(help: ArgumentHelp("Also run the same load against a raw echo server here, and print fractions of it.", valueName: "path"))
        var echoFloor: String?
        @Flag(help: "One JSON object instead of a table.") var json = false

        func run() throws {
            var o = LoadGenerator.Options(socketPath: socket)
            o.clients = clients
            o.pipeline = pipeline
            o.duration = duration
            o.warmup = warmup
            guard let operation = LoadGenerator.Operation(rawValue: op) else { throw ValidationError("--op: get, list or ping") }
            o.operation = operation
            o.proof = proof
            if let namesFile {
                o.names = (try String(contentsOfFile: namesFile, encoding: .utf8)).split(separator: "\n").map(String.init)
            }
            let result = try LoadGenerator(options: o).run()
            var floor: LoadGenerator.Result?
            if let echoFloor {
                let stop = try Floor.startEcho(path: echoFloor)
                defer { stop() }
                var e = o
                e.socketPath = echoFloor
                e.operation = .echo
                floor = try LoadGenerator(options: e).run()
            }
            if json {
                var object: [String: Any] = (try JSONSerialization.jsonObject(with: JSONEncoder().encode(result))) as? [String: Any] ?? [:]
                if let floor {
                    object["echo_floor"] = (try JSONSerialization.jsonObject(with: JSONEncoder().encode(floor))) as? [String: Any] ?? [:]
                    object["rps_fraction_of_echo"] = result.rps / max(floor.rps, 1)
                    object["p50_multiple_of_echo"] = result.p50 / max(floor.p50, 0.001)
                }
                print(Output.jsonLine(object))
                return
            }
            func row(_ label: String, _ r: LoadGenerator.Result) -> [String] {
                [label, String(r.clients), String(r.pipeline)] + [r.rps, r.p50, r.p90, r.p99, r.p999, r.max].map { String(format: "%.0f", $0) }
                    + [r.errors.isEmpty ? "0" : r.errors.map { "\($0.key)=\($0.value)" }.joined(separator: ",")]
            }
            var rows = [row(result.operation, result)]
            if let floor { rows.append(row("echo floor", floor)) }
            print(Output.table(["OP", "CLIENTS", "PIPELINE", "REQ/S", "P50 µs", "P90 µs", "P99 µs", "P99.9 µs", "MAX µs", "ERRORS"], rows))
            if let floor {
                print(String(format: "vault/echo: %.2f× the requests/s, %.1f× the p50", result.rps / max(floor.rps, 1), result.p50 / max(floor.p50, 0.001)))
            }
        }
    }

    struct FloorCommand: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "fsync", abstract: "The cost of write + fdatasync on a directory's filesystem.")

        @Option(help: "A directory on the filesystem to probe (the audit directory).") var dir: String

        func run() throws {
            print(String(format: "%.1f", try Floor.fdatasyncMicros(directory: dir)))
        }
    }

    struct AuditFill: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "audit-fill", abstract: "Append N synthetic read records to the vault's audit log (for `audit verify` benchmarks).")

        @OptionGroup var vault: VaultOptions
        @Option(help: "How many records.") var count = 1_000_000
        @Option(help: "Spread the records evenly over this many days up to now, from seven callers, about 2% refused (0: all now, one caller).")
        var days = 0

        func run() throws {
            let v = try vault.openVault()
            let log = try reporting { try AuditLog.open(for: v) }
            let actor = AuditActor(uid: 1001, gid: 1001, pid: 4242, executable: "/usr/bin/python3")
            let done = DispatchSemaphore(value: 0)
            let remaining = NSLock()
            nonisolated(unsafe) var left = count
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let span = Int64(days) * 86_400_000_000
            // Each record's token_hmac is that of a token whose value is its name (`echo -n tok-7 | tokenvault audit hash`).
            let keys = AuditKeys(auditKey: try reporting { try v.auditKey() })
            let hmacs = days > 0 ? (0..<1000).map { n in keys.tokenHMAC(SecretBytes(copying: Array("tok-\(n)".utf8))) } : []
            for i in 0..<count {
                var event = AuditEvent(action: "get", channel: .socket, actor: actor, token: "tok-\(i % 1000)", outcome: .granted,
                                       requestId: String(i))
                if days > 0 {
                    event.tokenHMAC = hmacs[i % 1000]
                    event.actor.uid = 1001 + UInt32(i % 7)
                    event.actor.executable = ["/usr/bin/python3", "/usr/local/bin/campaign-sync", "/usr/bin/node"][i % 3]
                    if i % 11 == 3 { event.action = "get+proof" }
                    if i % 53 == 7 { (event.outcome, event.reason) = (.denied, "no policy rule allows it") }
                }
                let time = now - span + (count > 1 ? Int64(Double(span) * Double(i) / Double(count - 1)) : 0)
                let completion: @Sendable (Result<Void, any Error>) -> Void = { _ in
                    remaining.lock()
                    left -= 1
                    let finished = left == 0
                    remaining.unlock()
                    if finished { done.signal() }
                }
                if days > 0 { log.append(event, secret: nil, timeMicros: time, completion: completion) }
                else { log.append(event, secret: nil, completion: completion) }
            }
            done.wait()
            log.close()
            printErr("appended \(count) records")
        }
    }

    struct ReadPath: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "read-path",
            abstract: "Time each stage of a socket get in-process (parse, policy, SQLite, open, encode), without the socket or the audit flush.",
            discussion: """
                Example:
                  tokenvault bench read-path --names-file names.txt --iterations 200000
                """)

        @OptionGroup var vault: VaultOptions
        @Option(help: ArgumentHelp("Token names, one per line (default: every token).", valueName: "file")) var namesFile: String?
        @Option(help: "Iterations per stage.") var iterations = 100_000

        func run() throws {
            let v = try vault.openVault()
            try reporting { try v.unlock() }
            let names = try namesFile.map { try String(contentsOfFile: $0, encoding: .utf8).split(separator: "\n").map(String.init) }
                ?? reporting { try v.names() }
            guard !names.isEmpty else { throw CLIFailure(message: "error: no tokens to read", exit: .badInput) }
            let rule = Policy.Rule(subject: .uid(getuid()), tokens: ["*"], proof: true)
            let stages = try reporting {
                try ReadPathProfile.measure(vault: v, policy: Policy(rules: [rule]), audit: ImmediateAudit(), names: names, iterations: iterations)
            }
            for stage in stages {
                print(stage.name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%9.0f ns", stage.nanosPerOp))
            }
        }
    }
}

extension BenchCommand {
    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "watch",
            abstract: "Open N watching connections, put a token C times (audited, like `put --force`), and time each event from the commit.",
            discussion: """
                The put runs in this process against the vault the daemon serves, so the clock starts when the commit has returned. Prints one JSON object (latencies in µs).

                Example:
                  tokenvault bench watch --socket v/tokenvault.sock --watchers 1000 \\
                    --changes 20 --name bench/watched
                """)

        @OptionGroup var vault: VaultOptions
        @Option(help: "The daemon's socket.") var socket: String
        @Option(help: "Watching connections.") var watchers = 1000
        @Option(help: "Changes to time.") var changes = 20
        @Option(help: "The token to replace (it must exist and be readable through the socket by this uid).") var name: String

        func run() throws {
            let bench = WatchFanout(socketPath: socket, pattern: name, watchers: watchers)
            let result = try vault.audited { v, audit in
                let record = try v.show(name: name)
                let kind = TokenKind(rawValue: record.kind) ?? .other
                return try bench.run(changes: changes) { i in
                    let secret = SecretBytes(copying: Array("bench-watched-\(i)-\(UInt64.random(in: 0...UInt64.max))".utf8))
                    try audit.admin("put", token: name, reason: "replaced") { commit in
                        try v.put(name: name, secret: secret, kind: kind, app: record.app, replace: true, beforeCommit: commit)
                    }
                }
            }
            print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
        }
    }

    struct Credential: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "credential",
            abstract: "Read a credential from `serve --credential-socket` N times one after another, as systemd does (needs root).",
            discussion: """
                Each read binds systemd's abstract address \\0RANDOM/unit/UNIT/ID, connects and reads to EOF. Prints one JSON object.

                Example:
                  tokenvault bench credential --socket /run/tokenvault/credentials.sock \\
                    --unit adsync.service --id meta_token --count 1000
                """)

        @Option(help: "The credential socket.") var socket: String
        @Option(help: "The unit named in the peer address.") var unit: String
        @Option(help: "The credential id named in the peer address.") var id: String
        @Option(help: "Connections, one after another.") var count = 1000

        func run() throws {
            let client = CredentialClient(socketPath: socket, unit: unit, id: id)
            _ = try client.read()  // warm-up
            print(String(decoding: try JSONEncoder().encode(try client.run(connections: count)), as: UTF8.self))
        }
    }
}

/// An audit sink that records nothing and succeeds at once: `bench read-path` times the rest of a read.
private struct ImmediateAudit: AuditSink {
    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        completion(.success(()))
    }
}
