import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault serve` as admins run it: a separate process, signals and all.
@Suite("tokenvault serve, policy and audit commands")
struct DaemonCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var socketPath: String { home + "/tokenvault.sock" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads", "--kind", "system_user"], "EAAB-serve-canary-5521"),
                              (["put", "other/x"], "EAAB-other")] as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\n".write(toFile: dir.path + "/vault/policy.toml", atomically: true, encoding: .utf8)
    }

    func startDaemon() throws -> Process { try cli.serve() }

    func stop(_ p: Process) { CLI.stop(p) }

    @Test func sighupReloadsAndABrokenFileKeepsTheOldPolicy() throws {
        let daemon = try startDaemon()
        defer { stop(daemon) }
        #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).stdout == "EAAB-serve-canary-5521")
        #expect(try cli.run(["get", "other/x", "--socket", socketPath]).status == 8)

        // A broken file: `policy reload` refuses it with its line; a raw SIGHUP makes the daemon reject it.
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"*\"\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        let refused = try cli.run(["policy", "reload"])
        #expect(refused.status == 2 && refused.stderr.contains("policy.toml:3"))
        kill(daemon.processIdentifier, SIGHUP)
        usleep(300_000)
        #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).status == 0, "old policy still in force")
        #expect(try cli.run(["get", "other/x", "--socket", socketPath]).status == 8)

        try "[[allow]]\nuid = \(getuid())\ntokens = [\"*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        #expect(try cli.run(["policy", "reload"]).status == 0)
        usleep(300_000)
        #expect(try cli.run(["get", "other/x", "--socket", socketPath]).stdout == "EAAB-other")
        let reloads = try cli.run(["audit", "query", "--action", "policy_reload", "--json"]).stdout.split(separator: "\n")
        #expect(reloads.count == 2 && reloads[0].contains("\"outcome\":\"failed\"") && reloads[1].contains("\"outcome\":\"granted\""))
    }

    @Test func sigtermLeavesNoSocketFile() throws {
        let daemon = try startDaemon()
        #expect(access(socketPath, F_OK) == 0)
        stop(daemon)
        #expect(daemon.terminationStatus == 0)
        #expect(access(socketPath, F_OK) != 0)
    }

    @Test func policyCheckExplains() throws {
        let allowed = try cli.run(["policy", "check", "--uid", String(getuid()), "acme/ads"])
        #expect(allowed.status == 0 && allowed.stdout.contains("allowed by the rule for uid \(getuid()) at line 1"))
        let denied = try cli.run(["policy", "check", "--uid", "4321", "acme/ads"])
        #expect(denied.status == 8 && denied.stdout.contains("default deny"))
    }

    @Test func everyActionIsAuditedExactlyOnceAndNoTokenReachesTheLog() throws {
        let daemon = try startDaemon()
        #expect(try cli.run(["get", "acme/ads"]).status == 0)
        #expect(try cli.run(["get", "acme/missing"]).status == 3)
        #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).status == 0)
        #expect(try cli.run(["get", "other/x", "--socket", socketPath]).status == 8)
        #expect(try cli.run(["app", "add", "acme", "--app-id", "42"], stdin: "app-secret-canary-31").status == 0)
        #expect(try cli.run(["rm", "other/x"]).status == 0)
        #expect(try cli.run(["import", "--format", "jsonl"], stdin: #"{"name":"n1","token":"EAAB-import-canary"}"#).status == 0)
        // A busy run through the socket.
        for _ in 0..<50 { _ = try cli.run(["get", "acme/ads", "--socket", socketPath]) }
        stop(daemon)

        let records = try cli.run(["audit", "query", "--json"]).stdout.split(separator: "\n").map(String.init)
        func count(_ action: String, _ channel: String, _ outcome: String) -> Int {
            records.filter { $0.contains("\"channel\":\"\(channel)\",\"action\":\"\(action)\"") && $0.contains("\"outcome\":\"\(outcome)\"") }.count
        }
        #expect(count("init", "cli", "granted") == 1)  // from init() above
        #expect(count("put", "cli", "granted") == 2)  // from init() above
        #expect(count("get", "cli", "granted") == 1)
        #expect(count("get", "cli", "not_found") == 1)
        #expect(count("get", "socket", "granted") == 51)
        #expect(count("get", "socket", "denied") == 1)
        #expect(count("app_add", "cli", "granted") == 1)
        #expect(count("rm", "cli", "granted") == 1)
        #expect(count("import", "cli", "granted") == 1)
        #expect(records.count == 60)

        for name in try FileManager.default.contentsOfDirectory(atPath: home + "/audit") {
            let bytes = FileManager.default.contents(atPath: home + "/audit/" + name) ?? Data()
            let text = String(decoding: bytes, as: UTF8.self)
            for canary in ["EAAB-serve-canary", "app-secret-canary", "EAAB-import-canary", "EAAB-other"] {
                #expect(!text.contains(canary), "\(canary) found in audit/\(name)")
            }
        }
        let verified = try cli.run(["audit", "verify"])
        #expect(verified.status == 0 && verified.stdout.hasPrefix("OK: 60 records"))

        // token_hmac finds the reads of a leaked token.
        let hash = try cli.run(["audit", "hash"], stdin: "EAAB-serve-canary-5521").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try cli.run(["audit", "query", "--token-hmac", hash, "--json"]).stdout.split(separator: "\n").count == 52)

        // An auditor with only the public key.
        let pub = dir.path + "/audit.pub"
        try cli.run(["audit", "pubkey"]).stdout.write(toFile: pub, atomically: true, encoding: .utf8)
        #expect(try cli.run(["audit", "verify", "--pubkey", pub]).status == 0)

        // Tamper with a copy's record: verify names it and exits 6.
        let segment = home + "/audit/audit-000001.jsonl"
        var lines = try String(contentsOfFile: segment, encoding: .utf8).components(separatedBy: "\n")
        lines[3] = lines[3].replacingOccurrences(of: "\"outcome\":\"granted\"", with: "\"outcome\":\"denied\"")
        try lines.joined(separator: "\n").write(toFile: segment, atomically: false, encoding: .utf8)
        let bad = try cli.run(["audit", "verify"])
        #expect(bad.status == 6 && bad.stdout.contains("audit-000001.jsonl:4 (seq 4)"))

        let report = dir.path + "/report.html"
        #expect(try cli.run(["audit", "report", "--html", report]).status == 0)
        #expect(try String(contentsOfFile: report, encoding: .utf8).contains("FAILED"))
    }

    @Test func pythonClientTestsPassAgainstTheRealDaemon() throws {
        let clients = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("clients/python").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-m", "unittest", "-v", "test_tokenvault_client.py", "test_tokenvault_facebook.py"]
        p.currentDirectoryURL = URL(fileURLWithPath: clients)
        p.environment = ProcessInfo.processInfo.environment.merging(["TOKENVAULT_BIN": CLI.binary]) { $1 }
        let err = Pipe()
        p.standardError = err
        try p.run()
        let output = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(output)")
        #expect(output.contains("test_reads_token_and_proofs") && output.contains("OK"))
        #expect(output.contains("test_a_request_carries_the_vaults_timed_proof") || !pythonHasFacebookBusiness())
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/node") || FileManager.default.isExecutableFile(atPath: "/usr/local/bin/node"), "needs Node.js (`node`): .ci/run installs it"))
    func nodeClientTestsPassAgainstTheRealDaemon() throws {
        let client = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("clients/node").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["node", "--test", "test/"]
        p.currentDirectoryURL = URL(fileURLWithPath: client)
        p.environment = ProcessInfo.processInfo.environment.merging(["TOKENVAULT_BIN": CLI.binary]) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(output)")
        #expect(output.contains("# fail 0") && !output.contains("# SKIP set TOKENVAULT_BIN"), "\(output)")
    }
}
