import Foundation
import TestSupport
import Testing
import VaultAudit
import VaultCore
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire
#if canImport(Glibc)
import Glibc
#endif

@Suite("Fail closed on a full disk")
struct FullDiskTests {
    let dir = TempDir()

    /// The audit directory on a 256 KiB tmpfs, filled up: reads get `unavailable` and disclose nothing;
    /// once space is freed, reads work again without a restart, and the log still verifies.
    @Test(.enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
    func fullAuditFilesystemRefusesReadsThenRecovers() async throws {
        let vault = try makeVault(dir)
        let audit = vault.home.auditDirectory
        mkdir(audit, 0o700)
        guard try run("/bin/mount", ["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", audit]).isEmpty,
              isMountPoint(audit) else {
            Issue.record("could not mount a tmpfs on \(audit)")
            return
        }
        defer { _ = try? run("/bin/umount", ["-l", audit]) }

        let log = try AuditLog.open(for: vault)
        let daemon = try await RunningDaemon(vault: vault, policy: try Policy.parse(allowRoot), audit: log, socketPath: dir.path + "/tv.sock")
        let c = try RawConnection(daemon.socketPath)
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":0}"#)?["token"] as? String == "EAAB-acme-ads")

        // Fill the filesystem.
        let filler = audit + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT, 0o600)
        let block = [UInt8](repeating: 0x78, count: 4096)
        while block.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) > 0 {}
        close(fd)

        var refused = 0
        for i in 1...40 {
            let reply = c.request(#"{"op":"get","name":"acme/ads","id":\#(i)}"#)
            if errorCode(reply) == "unavailable" {
                #expect(reply?["token"] == nil)
                refused += 1
            }
        }
        #expect(refused > 30, "once the last page is used, every read is refused")

        unlink(filler)
        #expect(c.request(#"{"op":"get","name":"acme/ads","id":99}"#)?["token"] as? String == "EAAB-acme-ads", "recovers by itself")
        try await daemon.stop()
        log.close()
        let report = AuditVerifier.verify(directory: audit, keys: AuditKeys(auditKey: try vault.auditKey()), publicKey: nil,
                                          checkpoint: try vault.auditCheckpoint())
        #expect(report.ok, "\(report.problem.map { "\($0)" } ?? "")")
    }

    func isMountPoint(_ path: String) -> Bool {
        var a = stat(), b = stat()
        return stat(path, &a) == 0 && stat(path + "/..", &b) == 0 && a.st_dev != b.st_dev
    }
}
