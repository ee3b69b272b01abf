import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The attacks of the security review that go through the command line: a full audit disk under admin
/// actions, a deleted or replayed checkpoint, a log stripped of its signatures, hostile key and policy
/// files, a dumpable CLI, a loose home, and terminal escapes in `audit query`.
@Suite("Attacks through the command line")
struct SecurityCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads"], "EAAB-first")] as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
    }

    // MARK: 3. admin actions on a full audit disk

    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func adminActionsChangeNothingWhenTheirRecordCannotBeWritten() throws {
        // A vault whose audit log lives on a small tmpfs from its first record.
        let home = dir.path + "/small"
        let cli = CLI(home: home)
        mkdir(home, 0o700)
        let audit = home + "/audit"
        mkdir(audit, 0o700)
        guard try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", audit]).status == 0 else {
            Issue.record("could not mount a tmpfs on \(audit)")
            return
        }
        defer { _ = try? runProcess("/bin/umount", ["-l", audit]) }
        #expect(try cli.run(["init"]).status == 0)
        #expect(try cli.run(["put", "acme/ads"], stdin: "EAAB-first").status == 0)
        #expect(try cli.run(["put", "acme/other"], stdin: "EAAB-before-full").status == 0)
        let fd = open(audit + "/filler", O_WRONLY | O_CREAT, 0o600)
        let block = [UInt8](repeating: 0x78, count: 4096)
        while block.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) > 0 {}
        close(fd)
        // The segment's last page may still hold a record or two: write until the disk really is full.
        var full = false
        for i in 0..<20 {
            let pad = try cli.run(["put", "acme/pad-\(i)"], stdin: "EAAB-pad")
            if pad.status == 7 {
                full = true
                #expect(!(try cli.run(["list", "--json"]).stdout.contains("acme/pad-\(i)")), "the refused put took effect")
                break
            }
        }
        #expect(full)

        let put = try cli.run(["put", "acme/new"], stdin: "EAAB-while-full")
        #expect(put.status == 7 && put.stderr.contains("nothing was changed"), "\(put.all)")
        let rm = try cli.run(["rm", "acme/ads"])
        #expect(rm.status == 7, "\(rm.all)")
        let replace = try cli.run(["put", "acme/ads", "--force"], stdin: "EAAB-replaced-while-full")
        #expect(replace.status == 7)
        let names = try cli.run(["list", "--json"]).stdout
        #expect(!names.contains("acme/new"), "a put with no record did not take effect")
        #expect(names.contains("\"acme/ads\""), "an rm with no record did not take effect")
        unlink(audit + "/filler")
        #expect(try cli.run(["get", "acme/ads"]).stdout == "EAAB-first", "the replace did not take effect either")
    }

    // MARK: 5. the checkpoint deleted, the log deleted, an old log replayed

    @Test func deletedCheckpointDeletedLogAndReplayedLogAllFailVerify() throws {
        for _ in 0..<3 { #expect(try cli.run(["get", "acme/ads"]).status == 0) }
        #expect(try cli.run(["audit", "verify"]).status == 0)
        // An attacker's copy of the home as it is now (everything but the keyring).
        let old = dir.path + "/old"
        try FileManager.default.createDirectory(atPath: old, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: home) where name != "keys" {
            try FileManager.default.copyItem(atPath: home + "/" + name, toPath: old + "/" + name)
        }
        for _ in 0..<3 { #expect(try cli.run(["get", "acme/ads"]).status == 0) }
        #expect(try cli.run(["audit", "verify"]).status == 0)

        try sqlite("DELETE FROM audit_checkpoint")
        let noCheckpoint = try cli.run(["audit", "verify"])
        #expect(noCheckpoint.status == 6 && noCheckpoint.stdout.contains("checkpoint was deleted"), "\(noCheckpoint.all)")

        try FileManager.default.removeItem(atPath: home + "/audit")
        let noLog = try cli.run(["audit", "verify"])
        #expect(noLog.status == 6, "rm -rf audit with the checkpoint gone: \(noLog.all)")

        // Put back the old vault.db and the old log together: consistent with each other, but stale.
        for name in try FileManager.default.contentsOfDirectory(atPath: old) {
            try? FileManager.default.removeItem(atPath: home + "/" + name)
            try FileManager.default.copyItem(atPath: old + "/" + name, toPath: home + "/" + name)
        }
        let replayed = try cli.run(["audit", "verify"])
        #expect(replayed.status == 6 && replayed.stdout.contains("anchor"), "\(replayed.all)")
    }

    /// The anchor keeps up even when vault.db's checkpoint cannot be written (an attacker's trigger), when a
    /// crashed writer left a temp file behind in the keyring, and it is never overwritten by a new audit key.
    @Test func anchorCannotBeHeldBackOrReplaced() throws {
        #expect(try cli.run(["get", "acme/ads"]).status == 0)
        // A stale temp file from a writer that crashed mid-write.
        try "junk".write(toFile: home + "/keys/.audit.anchor.tmp", atomically: false, encoding: .utf8)
        // vault.db's checkpoint made unwritable.
        try sqlite("""
            CREATE TRIGGER no_cp_insert BEFORE INSERT ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'no'); END;
            CREATE TRIGGER no_cp_update BEFORE UPDATE ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'no'); END;
            """)
        for _ in 0..<5 { #expect(try cli.run(["get", "acme/ads"]).status == 0) }
        try sqlite("DROP TRIGGER no_cp_insert; DROP TRIGGER no_cp_update;")
        // Cut the log back to what vault.db's stale checkpoint vouches for.
        let segment = home + "/audit/audit-000001.jsonl"
        let lines = try String(contentsOfFile: segment, encoding: .utf8).split(separator: "\n")
        try (lines.prefix(3).joined(separator: "\n") + "\n").write(toFile: segment, atomically: true, encoding: .utf8)
        let cut = try cli.run(["audit", "verify"])
        #expect(cut.status == 6 && cut.stdout.contains("anchor"), "the anchor kept up: \(cut.all)")
        // Any further audited command refuses to write onto the cut log.
        let refused = try cli.run(["get", "acme/ads"])
        #expect(refused.status == 7 && refused.stderr.contains("cut off"), "\(refused.all)")
    }

    @Test func deletedAuditKeyIsNotReplacedByAFreshTrail() throws {
        #expect(try cli.run(["get", "acme/ads"]).status == 0)
        let anchor = try String(contentsOfFile: home + "/keys/audit.anchor", encoding: .utf8)
        try sqlite("DELETE FROM data_keys WHERE purpose = 'audit'; DELETE FROM audit_checkpoint;")
        try FileManager.default.removeItem(atPath: home + "/audit")
        let put = try cli.run(["put", "acme/x"], stdin: "EAAB-after-wipe")
        #expect(put.status == 7 && put.stderr.contains("audit key was deleted"), "\(put.all)")
        #expect(try String(contentsOfFile: home + "/keys/audit.anchor", encoding: .utf8) == anchor, "the anchor is untouched")
        #expect(try cli.run(["audit", "verify"]).status == 6)
    }

    // MARK: 9. a log rewritten without its signatures, checked with the public key

    @Test func publicKeyVerifyFailsOnALogWithoutSignatures() throws {
        for _ in 0..<3 { #expect(try cli.run(["get", "acme/ads"]).status == 0) }
        let pub = dir.path + "/audit.pub"
        try cli.run(["audit", "pubkey"]).stdout.write(toFile: pub, atomically: true, encoding: .utf8)
        #expect(try cli.run(["audit", "verify", "--pubkey", pub]).status == 0, "the log at rest ends signed")
        let segment = home + "/audit/audit-000001.jsonl"
        let text = try String(contentsOfFile: segment, encoding: .utf8)
        let stripped = text.replacingOccurrences(of: #","sig":"[0-9a-f]+""#, with: "", options: .regularExpression)
        #expect(stripped != text)
        try stripped.write(toFile: segment, atomically: true, encoding: .utf8)
        let r = try cli.run(["audit", "verify", "--pubkey", pub])
        #expect(r.status == 6 && r.stdout.contains("no valid signature"), "\(r.all)")
        let empty = dir.path + "/empty-audit"
        mkdir(empty, 0o700)
        #expect(try cli.run(["audit", "verify", "--pubkey", pub, "--dir", empty]).status == 6, "an emptied log vouches for nothing")
    }

    // MARK: 11. key files, the keyring and the policy file

    @Test func hostileKeyFilesAreRefusedWithoutHanging() throws {
        let keys = home + "/keys"
        let id = try FileManager.default.contentsOfDirectory(atPath: keys).first { $0.count == 17 && $0.contains("-") }!
        let key = keys + "/" + id
        let saved = dir.path + "/saved-key"
        #expect(rename(key, saved) == 0)
        defer { unlink(key); rename(saved, key) }

        #expect(symlink(saved, key) == 0)
        let viaLink = try cli.run(["get", "acme/ads"])
        #expect(viaLink.status == 5 && viaLink.stderr.contains("symbolic link"), "\(viaLink.all)")
        unlink(key)

        #expect(mkfifo(key, 0o600) == 0)
        let viaFIFO = try runProcess("/usr/bin/timeout", ["10", CLI.binary, "get", "acme/ads"], environment: testEnvironment(home: home))
        #expect(viaFIFO.status == 5 && viaFIFO.stderr.contains("not a regular file"), "a FIFO must not hang the CLI: \(viaFIFO.all)")
        unlink(key)

        #expect(link(saved, key) == 0)
        if getuid() == 0 {
            chown(key, 65534, 65534)
            let foreign = try cli.run(["get", "acme/ads"])
            #expect(foreign.status == 5 && foreign.stderr.contains("owned by uid 65534"), "\(foreign.all)")
            chown(key, 0, 0)
            chown(keys, 65534, 65534)
            let foreignRing = try cli.run(["get", "acme/ads"])
            #expect(foreignRing.status == 5 && foreignRing.stderr.contains("keyring is owned by uid 65534"), "\(foreignRing.all)")
            chown(keys, 0, 0)
        }
        #expect(try cli.run(["get", "acme/ads"]).stdout == "EAAB-first")
    }

    @Test func policyFileOthersCanWriteIsRefused() throws {
        let policy = home + "/policy.toml"
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\n".write(toFile: policy, atomically: true, encoding: .utf8)
        chmod(policy, 0o666)
        let loose = try cli.run(["serve", "--socket", home + "/s.sock"])
        #expect(loose.status == 2 && loose.stderr.contains("chmod go-w"), "\(loose.all)")
        chmod(policy, 0o644)
        if getuid() == 0 {
            chown(policy, 65534, 65534)
            let foreign = try cli.run(["serve", "--socket", home + "/s.sock"])
            #expect(foreign.status == 2 && foreign.stderr.contains("owned by uid 65534"), "\(foreign.all)")
        }
    }

    // MARK: 12. every command undumpable

    /// `put` waiting on stdin, run as an unprivileged user: its /proc entries belong to root, which is what
    /// the kernel does for a process with PR_SET_DUMPABLE 0 (no core dump, no ptrace by its own user).
    @Test(.enabled(if: getuid() == 0, "needs root to run the CLI as another user"))
    func everyCommandIsUndumpable() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = ["--reuid", "65534", "--regid", "65534", "--clear-groups", CLI.binary, "put", "x", "--home", "/nonexistent"]
        let input = Pipe()
        p.standardInput = input
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { try? input.fileHandleForWriting.close(); kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        var owner: uid_t?
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            usleep(100_000)
            // setpriv execs tokenvault in the same process: wait until it is tokenvault that runs.
            guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.processIdentifier)/exe"),
                  exe.hasSuffix("tokenvault") else { continue }
            usleep(200_000)
            var st = stat()
            if stat("/proc/\(p.processIdentifier)/status", &st) == 0 { owner = st.st_uid }
            break
        }
        #expect(owner == 0, "a dumpable process's /proc files belong to its own uid (65534); got \(String(describing: owner))")
    }

    // MARK: 13. a loose home

    @Test func looseHomeIsRefusedByServeAndTightenedByInit() throws {
        chmod(home, 0o755)
        let serve = try cli.run(["serve", "--socket", home + "/s.sock"])
        #expect(serve.status == 5 && serve.stderr.contains("chmod 700"), "\(serve.all)")
        let fresh = dir.path + "/fresh"
        mkdir(fresh, 0o777)
        chmod(fresh, 0o777)
        #expect(try CLI(home: fresh).run(["init"]).status == 0)
        var st = stat()
        stat(fresh, &st)
        #expect(st.st_mode & 0o777 == 0o700)
    }

    // MARK: 7. terminal escapes in audit query

    @Test func auditQueryTableEscapesControlCharacters() throws {
        let hostile = "acme/\u{1b}[2K\u{1b}[1Agranted\r\u{202e}x"
        #expect(try cli.run(["get", hostile]).status == 2)
        let table = try cli.run(["audit", "query"]).stdout
        #expect(!table.unicodeScalars.contains { $0.value == 0x1b || $0.value == 0x0d || $0.value == 0x202e }, "\(table)")
        #expect(table.contains("\\x1b[2K") && table.contains("\\u{202e}"))
    }

    func sqlite(_ sql: String) throws {
        let r = try runProcess("/usr/bin/python3", ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
                                                    home + "/vault.db", sql])
        #expect(r.status == 0, "\(r.all)")
    }
}
