import Foundation
import Synchronization
import TestSupport
import Testing
import TokenVaultClient
import VaultCore
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@Suite("key rotate under fire")
struct RotationCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }
    let count = 3000

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        let initialised = try cli.run(["init"])
        precondition(initialised.status == 0, initialised.all)
        let lines = (0..<count).map { #"{"name":"t/\#($0)","token":"EAAB-crash-\#($0)"}"# }.joined(separator: "\n")
        let r = try cli.run(["import", "--format", "jsonl"], stdin: lines)
        precondition(r.status == 0, r.all)
    }

    func expectEveryTokenOpens(_ note: String) throws {
        let vault = try Vault.open(home: VaultHome(root: home))
        var bad = 0
        for i in 0..<count where (try? vault.get(name: "t/\(i)").secret.unsafeStringCopy()) != "EAAB-crash-\(i)" { bad += 1 }
        #expect(bad == 0, "\(bad) tokens do not open \(note)")
    }

    func launch(_ args: [String]) throws -> Process { try CLI(home: home).launch(args) }

    @Test func resealKilledAtRandomPointsLosesNothingAndResumes() throws {
        var kills = 0
        for round in 0..<15 {
            let p = try launch(["key", "rotate", "--reseal", "--batch", "40"])
            usleep(useconds_t.random(in: 5_000...(round < 5 ? 60_000 : 200_000)))
            if p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                kills += 1
            }
            p.waitUntilExit()
            try expectEveryTokenOpens("after kill \(round)")
        }
        #expect(kills >= 5, "the test must actually interrupt re-seals")
        let finish = try cli.run(["key", "rotate", "--reseal"])
        #expect(finish.status == 0, "\(finish.all)")
        #expect(try Vault.open(home: VaultHome(root: home)).pendingReseal() == 0)
        try expectEveryTokenOpens("after completion")
        // Retire everything that is no longer needed; the vault still opens.
        let keys = try Vault.open(home: VaultHome(root: home)).masterKeys()
        for k in keys where k.state == "unused" { #expect(try cli.run(["key", "retire", k.id]).status == 0) }
        for k in keys where k.state == "current" { #expect(try cli.run(["key", "retire", k.id]).status == 2) }
        try expectEveryTokenOpens("after retiring old keys")
        #expect(try cli.run(["audit", "verify"]).status == 0, "killed writers leave a verifiable audit log")
    }

    @Test func daemonReadsNeverFailDuringAnOnlineReseal() throws {
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        let daemon = try launch(["serve"])
        defer { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() }
        let socket = home + "/tokenvault.sock"
        for _ in 0..<200 where access(socket, F_OK) != 0 { usleep(50_000) }

        let stop = Atomic<Bool>(false)
        let reads = Atomic<Int>(0), failures = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        let client = TokenVaultClient(socketPath: socket)
        let readers = 2
        for r in 0..<readers {
            Thread {
                var i = r
                while !stop.load(ordering: .relaxed) {
                    i = (i + 7919) % 3000
                    let ok = (try? client.getBlocking("t/\(i)").token) == "EAAB-crash-\(i)"
                    reads.add(1, ordering: .relaxed)
                    if !ok { failures.add(1, ordering: .relaxed) }
                }
                done.signal()
            }.start()
        }
        usleep(100_000)
        let reseal = try cli.run(["key", "rotate", "--reseal", "--batch", "100"])
        let rotate = try cli.run(["key", "rotate"])
        usleep(100_000)
        stop.store(true, ordering: .relaxed)
        for _ in 0..<readers { done.wait() }
        #expect(reseal.status == 0 && rotate.status == 0)
        #expect(reads.load(ordering: .relaxed) > 50)
        #expect(failures.load(ordering: .relaxed) == 0, "reads failed while keys changed under the daemon")
        // The daemon keeps serving with the new keys, the old master key retired underneath it.
        for k in try Vault.open(home: VaultHome(root: home)).masterKeys() where k.state == "unused" {
            #expect(try cli.run(["key", "retire", k.id]).status == 0)
        }
        #expect(try client.getBlocking("t/42").token == "EAAB-crash-42")
    }
}

@Suite("Key sources")
struct KeySourceTests {
    let dir = TempDir()

    /// A systemd unit with `LoadCredential=` gets its keys in $CREDENTIALS_DIRECTORY, not on the data disk.
    @Test func systemdCredentialsDirectoryIsTheKeyring() throws {
        let home = dir.path + "/vault"
        let cli = CLI(home: home)
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["put", "a"], stdin: "EAAB-cred").status == 0)
        let credentials = dir.path + "/credentials"
        try FileManager.default.moveItem(atPath: home + "/keys", toPath: credentials)
        chmod(credentials, 0o500)
        #expect(try cli.run(["get", "a"]).status == 5, "no key in <home>/keys any more")
        let got = try cli.run(["get", "a"], env: ["CREDENTIALS_DIRECTORY": credentials])
        #expect(got.status == 0 && got.stdout == "EAAB-cred")
        chmod(credentials, 0o700)
    }
}
