import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault run` and `get --proof` against a real daemon, as services with no vault code use them.
@Suite("Delivery: run and get --proof", .serialized)
struct DeliveryCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }
    var socket: String { home + "/tokenvault.sock" }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["app", "add", "acme", "--app-id", "1234567"], stdin: "app-secret-acme").status == 0)
        #expect(try cli.run(["put", "acme/ads", "--app", "acme"], stdin: "EAAB-first-value").status == 0)
        #expect(try cli.run(["put", "other/x"], stdin: "EAAB-not-yours").status == 0)
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\nproof = true\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
    }

    var env: [String: String] { ["TOKENVAULT_SOCKET": socket, "TOKENVAULT_SERVER_UID": "\(getuid())"] }

    @Test func runHandsOverTokensAndPassesTheExitOn() throws {
        let daemon = try cli.serve()
        defer { CLI.stop(daemon) }
        let r = try cli.run(["run", "--env", "T=acme/ads", "--file", "F=acme/ads", "--proof-env", "P=acme/ads", "--",
                             "/bin/sh", "-c", #"printf '%s|%s|%s|%s' "$T" "$F" "$(cat "$F")" "$P"; exit 7"#], env: env)
        #expect(r.status == 7, "the command's exit status is run's: \(r.all)")
        let parts = r.stdout.split(separator: "|").map(String.init)
        #expect(parts.count == 4)
        #expect(parts.first == "EAAB-first-value" && parts.dropFirst().first == "/dev/fd/100" && parts.dropFirst(2).first == "EAAB-first-value")
        #expect(parts.last == pythonHMAC(key: "app-secret-acme", message: "EAAB-first-value"), "the legacy proof")
        // Every read went through the daemon and is in its audit log as the caller's.
        let audit = try cli.run(["audit", "query", "--token", "acme/ads", "--json"])
        #expect(audit.stdout.contains(#""channel":"socket""#) && audit.stdout.contains("get+proof"), "\(audit.stdout)")
    }

    @Test func aRefusedReadStartsNothing() throws {
        let daemon = try cli.serve()
        defer { CLI.stop(daemon) }
        let marker = dir.path + "/started"
        let r = try cli.run(["run", "--env", "A=acme/ads", "--env", "B=other/x", "--", "/usr/bin/touch", marker], env: env)
        #expect(r.status == 8 && r.stderr.contains("may not read other/x"), "\(r.all)")
        #expect(access(marker, F_OK) != 0, "the command never started")
        let bad = try cli.run(["run", "--env", "1X=acme/ads", "--", "/bin/true"], env: env)
        #expect(bad.status != 0 && bad.stderr.contains("not an environment variable name"), "\(bad.all)")
        let signalWithEnv = try cli.run(["run", "--env", "T=acme/ads", "--watch", "--signal", "HUP", "--", "/bin/true"], env: env)
        #expect(signalWithEnv.status != 0 && signalWithEnv.stderr.contains("--file"), "\(signalWithEnv.all)")
    }

    @Test func aTokenFileIsAMemfdThatLeavesNothingBehindEvenWhenTheCommandIsKilled() throws {
        let daemon = try cli.serve()
        defer { CLI.stop(daemon) }
        let before = Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
        let tmpBefore = Set((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [])
        let r = try cli.run(["run", "--file", "F=acme/ads", "--", "/bin/sh", "-c", #"readlink "$F"; kill -KILL $$"#], env: env)
        #expect(r.status == 128 + SIGKILL || r.status == -1 || r.status == Int32(SIGKILL), "killed, as its command was: \(r.all)")
        #expect(r.stdout.hasPrefix("/memfd:tokenvault:F"), "RAM only, no path on any disk: \(r.stdout)")
        #expect(Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []) == before)
        let tmpAfter = Set((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [])
        #expect(tmpAfter.subtracting(tmpBefore).allSatisfy { $0.hasPrefix("tokenvault-test-") }, "no token file in /tmp")
    }

    @Test func runWatchRestartsOrSignalsOnAPutFromAnotherProcess() throws {
        let daemon = try cli.serve()
        defer { CLI.stop(daemon) }
        let out = dir.path + "/out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        // The command writes what it sees on start and on each SIGHUP.
        let script = #"trap 'echo "hup $(cat "$F")" >> "$OUT"' HUP; echo "start $(cat "$F")" >> "$OUT"; while :; do sleep 0.05; done"#
        let watching = try cli.launch(["run", "--file", "F=acme/ads", "--watch", "--signal", "HUP", "--", "/bin/sh", "-c", script],
                                      env: env.merging(["OUT": out]) { $1 })
        defer { CLI.stop(watching) }
        func lines() -> [String] { ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
        for _ in 0..<200 where lines().isEmpty { usleep(25_000) }
        #expect(lines() == ["start EAAB-first-value"])
        #expect(try cli.run(["put", "acme/ads", "--app", "acme", "--force"], stdin: "EAAB-second-value").status == 0)
        for _ in 0..<200 where lines().count < 2 { usleep(25_000) }
        #expect(lines() == ["start EAAB-first-value", "hup EAAB-second-value"], "the file is rewritten, then the signal sent")

        let restarted = dir.path + "/restarted"
        _ = FileManager.default.createFile(atPath: restarted, contents: nil)
        let restarting = try cli.launch(["run", "--env", "T=acme/ads", "--watch", "--", "/bin/sh", "-c",
                                         #"echo "$T" >> "$OUT"; exec sleep 30"#], env: env.merging(["OUT": restarted]) { $1 })
        defer { CLI.stop(restarting) }
        func started() -> [String] { ((try? String(contentsOfFile: restarted, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
        for _ in 0..<200 where started().isEmpty { usleep(25_000) }
        #expect(try cli.run(["put", "acme/ads", "--app", "acme", "--force"], stdin: "EAAB-third-value").status == 0)
        for _ in 0..<200 where started().count < 2 { usleep(25_000) }
        #expect(started() == ["EAAB-second-value", "EAAB-third-value"], "restarted with the new value in its environment")
    }

    @Test func getPrintsTheProofForTheShellOrAsJSON() throws {
        let daemon = try cli.serve()
        defer { CLI.stop(daemon) }
        let shell = try cli.run(["get", "acme/ads", "--proof", "timed"], env: env)
        #expect(shell.status == 0, "\(shell.all)")
        let lines = shell.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "TOKEN='EAAB-first-value'")
        let time = lines.first { $0.hasPrefix("APPSECRET_TIME=") }.map { String($0.dropFirst("APPSECRET_TIME=".count)) } ?? ""
        #expect(lines.contains("APPSECRET_PROOF='\(pythonHMAC(key: "app-secret-acme", message: "EAAB-first-value|\(time)"))'"))
        let json = try cli.run(["get", "acme/ads", "--proof", "legacy", "--json"], env: env)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(o["token"] as? String == "EAAB-first-value" && o["kind"] as? String == "other")
        #expect(o["appsecret_proof"] as? String == pythonHMAC(key: "app-secret-acme", message: "EAAB-first-value") && o["appsecret_time"] == nil)
        // Direct (no daemon, the key file): the same shape.
        let direct = try cli.run(["get", "acme/ads", "--proof", "legacy"])
        #expect(direct.stdout.contains("APPSECRET_PROOF='\(pythonHMAC(key: "app-secret-acme", message: "EAAB-first-value"))'"), "\(direct.all)")
        #expect(try cli.run(["get", "other/x"], env: env).status == 8, "$TOKENVAULT_SOCKET means through the daemon, under the policy")
    }
}

