import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("tokenvault command line")
struct CLITests {
    let dir = TempDir()
    var cli: CLI { CLI(home: dir.path + "/vault") }

    init() throws {
        let r = try CLI(home: dir.path + "/vault").run(["init"])
        precondition(r.status == 0, "init failed: \(r.all)")
    }

    @Test func putGetPrintsOnlyTheTokenAndDropsOneNewline() throws {
        #expect(try cli.run(["put", "acme/ads", "--kind", "system_user"], stdin: "EAAB-cli-1\n").status == 0)
        let got = try cli.run(["get", "acme/ads"])
        #expect(got.status == 0)
        #expect(got.stdout == "EAAB-cli-1", "stdout is not a terminal: exactly the token, no newline")
        #expect(got.stderr.isEmpty)
    }

    @Test func benchReadPathTimesEachStageAndPrintsNoToken() throws {
        #expect(try cli.run(["bench", "read-path"]).status != 0, "an empty vault has nothing to read")
        #expect(try cli.run(["put", "acme/ads"], stdin: "EAAB-bench-canary\n").status == 0)
        let r = try cli.run(["bench", "read-path", "--iterations", "2000"])
        #expect(r.status == 0, "\(r.all)")
        let stages = r.stdout.split(separator: "\n")
        #expect(stages.count == 7)
        for stage in stages { #expect(stage.hasSuffix(" ns") && Double(stage.dropLast(3).split(separator: " ").last ?? "") != nil) }
        #expect(!r.all.contains("EAAB-bench-canary"))
    }

    @Test func secretOnArgvIsImpossible() throws {
        let r = try cli.run(["put", "acme/ads", "EAAB-on-argv-secret"], stdin: "EAAB-from-stdin\n")
        #expect(r.status == 64)
        #expect(!r.all.contains("EAAB-on-argv-secret"), "the argument must not be echoed back")
        #expect(r.stderr.contains("stdin"))
        #expect(try cli.run(["get", "acme/ads"]).status == 3, "nothing was stored")
        let app = try cli.run(["app", "add", "acme", "--app-id", "1234", "app-secret-on-argv"], stdin: "s\n")
        #expect(app.status == 64 && !app.all.contains("app-secret-on-argv"))
    }

    @Test func showListAndErrorsNeverPrintTheToken() throws {
        let token = "EAAB-canary-never-printed-4d1e"
        #expect(try cli.run(["app", "add", "acme", "--app-id", "1234"], stdin: "app-secret-canary-88\n").status == 0)
        #expect(try cli.run(["put", "acme/ads", "--app", "acme"], stdin: token + "\n").status == 0)
        var outputs: [CLI.Result] = []
        for args in [["list"], ["list", "--json"], ["show", "acme/ads"], ["show", "acme/ads", "--json"], ["app", "list"],
                     ["app", "list", "--json"], ["put", "acme/ads"], ["get", "missing"], ["rm", "missing"]] {
            outputs.append(try cli.run(args, stdin: token + "\n"))
        }
        for r in outputs {
            #expect(!r.all.contains(token))
            #expect(!r.all.contains("app-secret-canary"))
        }
        #expect(outputs[0].stdout.contains("acme/ads"))
        let json = try JSONSerialization.jsonObject(with: Data(outputs[3].stdout.utf8)) as? [String: Any]
        #expect(json?["name"] as? String == "acme/ads" && json?["app"] as? String == "acme")
        #expect(outputs[6].status == 2 && outputs[6].stderr.contains("--force"))
    }

    @Test func documentedExitCodes() throws {
        #expect(try cli.run(["get", "missing"]).status == 3)
        #expect(try cli.run(["put", "bad*name"], stdin: "x").status == 2)
        #expect(try cli.run(["init"]).status == 4)
        #expect(try CLI(home: dir.path + "/nowhere").run(["list"]).status == 4)
        #expect(try cli.run(["put", "a"], stdin: "x").status == 0)
        let keys = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/vault/keys").filter { $0.count == 17 }  // key ids, not the audit anchor or its lock
        chmod(dir.path + "/vault/keys/" + keys[0], 0o644)
        let insecure = try cli.run(["get", "a"])
        #expect(insecure.status == 5 && insecure.stderr.contains("chmod 600"))
        chmod(dir.path + "/vault/keys/" + keys[0], 0o600)
        #expect(try cli.run(["rm", "a"]).status == 0)
        #expect(try cli.run(["get", "a"]).status == 3)
    }

    @Test func importEnvAndSealedRoundTripThroughFiles() throws {
        let env = dir.path + "/prod.env"
        try "# comment\n\nexport ADS='EAAB-env-1'\nPAGES=\"EAAB-env-2\"\n".write(toFile: env, atomically: true, encoding: .utf8)
        let imported = try cli.run(["import", "--prefix", "acme/", "--kind", "user", env])
        #expect(imported.status == 0 && imported.stderr.contains("imported 2 tokens"))
        #expect(try cli.run(["get", "acme/PAGES"]).stdout == "EAAB-env-2")

        let pass = dir.path + "/pass.txt"
        try "backup passphrase\n".write(toFile: pass, atomically: true, encoding: .utf8)
        let backup = dir.path + "/backup.tvx"
        let exported = try cli.run(["export", "--sealed", "--output", backup, "--export-passphrase-file", pass, "--kdf", "interactive"])
        #expect(exported.status == 0)
        var st = stat()
        stat(backup, &st)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(!(try String(contentsOfFile: backup, encoding: .utf8)).contains("EAAB-env"))
        #expect(try cli.run(["export"]).status == 64, "plain-text export is refused")

        let fresh = CLI(home: dir.path + "/fresh")
        #expect(try fresh.run(["init"]).status == 0)
        let restored = try fresh.run(["import", "--sealed", backup, "--export-passphrase-file", pass])
        #expect(restored.status == 0)
        #expect(try fresh.run(["get", "acme/ADS"]).stdout == "EAAB-env-1")
        #expect(try fresh.run(["show", "acme/ADS", "--json"]).stdout.contains("\"kind\":\"user\""))
    }

    @Test func passphraseVaultFromAFile() throws {
        let pass = dir.path + "/vault-pass"
        try "vault passphrase 123\n".write(toFile: pass, atomically: true, encoding: .utf8)
        let pp = CLI(home: dir.path + "/pp")
        #expect(try pp.run(["init", "--passphrase", "--kdf", "interactive", "--passphrase-file", pass]).status == 0)
        #expect(try pp.run(["put", "a", "--passphrase-file", pass], stdin: "EAAB-pp").status == 0)
        #expect(try pp.run(["get", "a"], env: ["TOKENVAULT_PASSPHRASE_FILE": pass]).stdout == "EAAB-pp")
        try "wrong passphrase 123\n".write(toFile: pass, atomically: true, encoding: .utf8)
        let wrong = try pp.run(["get", "a", "--passphrase-file", pass])
        #expect(wrong.status == 5 && wrong.stderr.contains("passphrase does not unlock"))
    }

    @Test func concurrentPutsFromSeveralProcessesLoseNothing() async throws {
        let processes = 6, perProcess = 15
        try await withThrowingTaskGroup(of: Int32.self) { group in
            for p in 0..<processes {
                group.addTask {
                    // Each process stores its tokens one `put` at a time, all racing for the write lock.
                    var worst: Int32 = 0
                    for i in 0..<perProcess {
                        let r = try cli.run(["put", "p\(p)/t\(i)"], stdin: "EAAB-\(p)-\(i)")
                        worst = max(worst, r.status)
                    }
                    return worst
                }
            }
            for try await status in group { #expect(status == 0) }
        }
        let listed = try cli.run(["list", "--json"]).stdout.split(separator: "\n")
        #expect(listed.count == processes * perProcess)
        #expect(try cli.run(["get", "p5/t14"]).stdout == "EAAB-5-14")
    }
}
