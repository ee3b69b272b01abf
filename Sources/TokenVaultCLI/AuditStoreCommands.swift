import ArgumentParser
import Foundation
import VaultAudit
import VaultCore
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Which chains an audit command reads: this host's local log (the default), or the store's copies of
/// every host's (`--all-hosts`, or a `--store` named on the command line), optionally one `--host`.
struct HostScope: ParsableArguments {
    @Flag(help: "Read the shared store's copies of every host's chain instead of this host's log.") var allHosts = false
    @Option(help: ArgumentHelp("With the store's copies: only this host.", valueName: "host-id")) var host: String?

    func readsStore(_ vault: VaultOptions) -> Bool { allHosts || host != nil || vault.store != nil }

    func hosts(_ v: Vault) throws -> [String] {
        let all = try reporting { try AuditStoreCopy.hosts(v) }
        if let host {
            guard all.contains(host) else {
                throw CLIFailure(message: "error: the store holds no audit records of host \(host) (it has: \(all.isEmpty ? "none" : all.joined(separator: ", ")))", exit: .notFound)
            }
            return [host]
        }
        return all
    }
}

/// Each host's copy written into a private temporary directory, so the local log's verifier and scanner
/// read it exactly as they read a local log; removed when done.
func withStoreCopies<T>(_ v: Vault, hosts: [String], _ body: (_ host: String, _ directory: String, _ lastSeq: Int64) throws -> T) throws -> [T] {
    var template = Array("/tmp/tokenvault-audit-copy-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw CLIFailure(message: "error: cannot make a temporary directory for the store's audit copies", exit: .failure)
    }
    let root = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: root) }
    var out: [T] = []
    for (i, host) in hosts.enumerated() {
        let dir = root + "/\(i)"
        mkdir(dir, 0o700)
        let last = try reporting { try AuditStoreCopy.materialise(v, host: host, into: dir) }
        out.append(try body(host, dir, last))
        try? FileManager.default.removeItem(atPath: dir)
    }
    return out
}

extension AuditCommand {
    /// `audit verify` over the store's copies: each host's chain and its checkpoint, from the database alone.
    static func verifyStoreCopies(_ v: Vault, scope: HostScope) throws {
        guard let auditKey = try reporting({ try v.existingAuditKey() }) else {
            print("OK: nothing has been audited in this vault yet (no audit key)")
            return
        }
        let keys = AuditKeys(auditKey: auditKey)
        let hosts = try scope.hosts(v)
        if hosts.isEmpty { print("no host has shipped audit records to \(v.storeLocation) yet (the daemon ships them; so does `tokenvault audit ship`)") }
        let checkpoints = try reporting { try v.auditCheckpoints() }
        let failed = try withStoreCopies(v, hosts: hosts) { host, dir, last -> Bool in
            let checkpoint = checkpoints.first { $0.host == host }
            // A copy may trail its checkpoint by the shipping lag: the chain is checked to its end, and the
            // checkpoint only once the copy reaches it.
            let usable = checkpoint.flatMap { $0.seq <= last ? $0 : nil }
            let report = AuditVerifier.verify(directory: dir, keys: keys, publicKey: nil, checkpoint: usable)
            if let problem = report.problem {
                print("\(host): FAILED after \(report.records) good records: seq \(problem.seq.map(String.init) ?? "?"): \(problem.message)")
                return true
            }
            var line = "\(host): OK: \(report.records) records, seq 1–\(report.lastSeq); hash chain, MACs, signatures (through seq \(report.signedThrough))"
            if let checkpoint {
                line += usable != nil ? ", checkpoint at seq \(checkpoint.seq) (\(report.lastSeq - checkpoint.seq) behind the copy's end)"
                    : "; WARNING: the copy ends \(checkpoint.seq - last) records before the host's checkpoint (seq \(checkpoint.seq)): not yet shipped, or cut"
            } else {
                line += "; no checkpoint in the store for this host"
            }
            print(line)
            return false
        }
        if failed.contains(true) { throw ExitCode(Exit.integrity.rawValue) }
    }

    /// Records of the store's copies that pass `filter`, each with its host.
    static func storeRecords(_ v: Vault, scope: HostScope, filter: AuditFilter) throws -> [(host: String, entry: AuditEntry, line: Substring)] {
        try withStoreCopies(v, hosts: try scope.hosts(v)) { host, dir, _ in
            var rows: [(String, AuditEntry, Substring)] = []
            AuditQuery.scan(directory: dir, filter: filter) { e, line in rows.append((host, e, line)) }
            return rows
        }.flatMap { $0 }.sorted { $0.1.time < $1.1.time }
    }

    static func hostTable(_ rows: [(host: String, entry: AuditEntry, line: Substring)]) -> String {
        Output.table(["HOST", "SEQ", "TIME", "CHANNEL", "ACTION", "TOKEN", "OUTCOME", "UID", "PID", "EXE", "REASON"],
                     rows.map { r in
                         let e = r.entry
                         return [r.host, String(e.seq), String(e.time.prefix(23)) + "Z", e.channel, e.action, e.token ?? "-", e.outcome,
                                 String(e.uid), String(e.pid), e.exe ?? "-", e.reason ?? ""]
                     })
    }

    /// A stored line with its host added first (`{"host":"…",` then the record as stored).
    static func withHost(_ host: String, _ line: Substring) -> String {
        Output.jsonLine(["host": host]).dropLast() + "," + line.dropFirst()
    }

    struct Ship: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ship",
            abstract: "Copy this host's audit records to the shared store now (the daemon does it every second).",
            discussion: """
                Idempotent: the store keeps each (host, seq) once, and a copy resumes where the store's ends, so \
                running it after an outage fills the gap with no duplicate.
                """)

        @OptionGroup var vault: VaultOptions

        func run() throws {
            let v = try vault.openVault()
            let shipper = AuditShipper(vault: v)
            var total = 0
            while true {
                let n: Int
                do { n = try reporting { try shipper.shipOnce() } } catch let gap as AuditShipper.Gap {
                    throw CLIFailure(message: "error: \(gap)", exit: .integrity)
                }
                total += n
                if n == 0 { break }
            }
            printErr("shipped \(total) audit records of host \(v.hostID) to \(v.storeLocation)")
        }
    }
}
