import ArgumentParser
import Foundation
import VaultAudit
import VaultCore
import VaultCrypto
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Review and verify the audit log.",
        discussion: """
            Who read acme/ads last month, and was anyone refused?
              tokenvault audit query --token acme/ads --since 30d
              tokenvault audit query --token acme/ads --outcome denied --json | jq .
            """,
        subcommands: [Verify.self, Query.self, Tail.self, Hash.self, PublicKey.self, Report.self, Index.self, Prune.self, Compress.self, Ship.self])

    struct Filters: ParsableArguments {
        @Option(help: "Only this token (a trailing * matches a prefix).") var token: String?
        @Option(help: "Only this caller uid.") var uid: UInt32?
        @Option(help: "Only this action (get, get+proof, list, put, rm, import, app_add, export, policy_reload, ...).") var action: String?
        @Option(help: "Only this outcome: granted, denied, not_found, rate_limited or failed.") var outcome: String?
        @Option(help: "Only records whose token_hmac is this (see `audit hash`).") var tokenHmac: String?
        @Option(help: "From this time: 2026-11-01, 2026-11-01T10:00:00Z, or 30m / 24h / 7d ago.") var since: String?
        @Option(help: "Before this time (same forms).") var until: String?

        func filter() throws -> AuditFilter {
            var f = AuditFilter()
            f.token = token
            f.uid = uid
            f.action = action
            if let outcome {
                guard AuditOutcome(rawValue: outcome) != nil else {
                    throw ValidationError("--outcome must be one of \(AuditOutcome.allCases.map(\.rawValue).joined(separator: ", ")), not \"\(outcome)\"")
                }
            }
            f.outcome = outcome
            f.tokenHmac = tokenHmac
            if let since {
                guard let t = AuditFilter.parseTime(since) else { throw ValidationError("--since: cannot read the time \"\(since)\"") }
                f.since = t
            }
            if let until {
                guard let t = AuditFilter.parseTime(until) else { throw ValidationError("--until: cannot read the time \"\(until)\"") }
                f.until = t
            }
            return f
        }
    }

    static func table(_ entries: [AuditEntry], withHeader: Bool = true) -> String {
        Output.table(["SEQ", "TIME", "CHANNEL", "ACTION", "TOKEN", "OUTCOME", "UID", "PID", "EXE", "REASON"],
                     entries.map { e in
                         [String(e.seq), String(e.time.prefix(23)) + "Z", e.channel, e.action, e.token ?? "-", e.outcome,
                          String(e.uid), String(e.pid), e.exe ?? "-", e.reason ?? ""]
                     }, withHeader: withHeader)
    }

    /// Verifies this host's log with the keyring: chain, MACs, signatures, the store's checkpoint and the
    /// keyring's anchor. Nil when nothing was ever audited; throws (exit 6) when the audit key was deleted.
    static func verifyLocal(_ v: Vault, directory: String) throws -> AuditVerifier.Report? {
        let anchor = try reporting { try v.keyring.readAnchor() }
        guard let auditKey = try reporting({ try v.existingAuditKey() }) else {
            // Never audited: no key, so no record can have been written. Unless something says otherwise.
            if anchor != nil || !AuditSegments.list(directory).isEmpty {
                throw CLIFailure(message: "FAILED: vault.db holds no audit key, but \(anchor != nil ? "the keyring's audit anchor" : "the audit directory") "
                                 + "shows the vault was audited: the key was deleted", exit: .integrity)
            }
            return nil
        }
        let checkpoint = try reporting { try v.auditCheckpoint() }
        return AuditVerifier.verify(directory: directory, keys: AuditKeys(auditKey: auditKey), publicKey: nil, checkpoint: checkpoint,
                                    anchor: anchor, requireCheckpoint: true)
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check every record's chain, MAC and signature, and the checkpoint; name the first bad record.",
            discussion: """
                With the keyring it checks MACs and the store's checkpoint too (which catches a cut-off tail); \
                with only the exported public key, the chain and the signatures. Exit 0 when the log is intact, \
                6 at the first bad record.

                Without the keyring (a copy of the log, the exported key):
                  tokenvault audit verify --pubkey audit.pub --dir /copy/of/audit
                Every host of a shared store, from the database alone:
                  tokenvault audit verify --all-hosts
                Against statements collected off the host (audit.witness_command):
                  tokenvault audit verify --witness /mnt/witness/ads-worker-3.jsonl
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var scope: HostScope
        @Option(help: ArgumentHelp("Verify with this exported public key only (no keyring needed).", valueName: "file")) var pubkey: String?
        @Option(help: ArgumentHelp("The audit directory (default: <home>/audit).", valueName: "dir")) var dir: String?
        @Option(help: ArgumentHelp("Also check the log against witness statements collected off the host.", valueName: "file"))
        var witness: String?
        @Option(help: ArgumentHelp("With --witness: only the statements of this host (default: this vault's host id; with --pubkey, every statement).",
                                   valueName: "host-id"))
        var witnessHost: String?

        func run() throws {
            let report: AuditVerifier.Report
            let started = Date()
            var witnessKey: [UInt8] = []
            var host = witnessHost
            if witness != nil, scope.readsStore(vault) {
                throw ValidationError("--witness checks this host's log: leave out --all-hosts, --host and --store")
            }
            if pubkey == nil, dir == nil, scope.readsStore(vault) {
                return try AuditCommand.verifyStoreCopies(try vault.openVault(), scope: scope)
            }
            if let pubkey {
                guard let text = try? String(contentsOfFile: pubkey, encoding: .utf8),
                      let key = decodeHex(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    throw CLIFailure(message: "error: \(pubkey) does not hold a hex Ed25519 public key", exit: .badInput)
                }
                report = AuditVerifier.verify(directory: dir ?? vault.vaultHome.auditDirectory, keys: nil, publicKey: key, checkpoint: nil)
                witnessKey = key
            } else {
                let v = try vault.openVault()
                guard let local = try AuditCommand.verifyLocal(v, directory: dir ?? v.home.auditDirectory) else {
                    print("OK: nothing has been audited in this vault yet (no audit key, no records)")
                    if witness != nil { throw CLIFailure(message: "FAILED: there is a witness file, but no audit log", exit: .integrity) }
                    return
                }
                report = local
                if witness != nil, let key = try reporting({ try v.existingAuditKey() }) { witnessKey = AuditKeys(auditKey: key).publicKey }
                host = host ?? v.hostID
            }
            let seconds = Date().timeIntervalSince(started)
            if let problem = report.problem {
                print("FAILED after \(report.records) good records: \(problem)")
                throw ExitCode(Exit.integrity.rawValue)
            }
            if let witness {
                try AuditCommand.witnessCheck(witness, directory: dir ?? vault.vaultHome.auditDirectory, publicKey: witnessKey, host: host)
            }
            var what = ["hash chain", "signatures (through seq \(report.signedThrough))"]
            if report.checkedMACs { what.append("MACs") }
            if report.checkedCheckpoint { what.append("checkpoint") }
            print("OK: \(report.records) records in \(report.segments) segment(s), seq \(report.firstSeq)–\(report.lastSeq); checked \(what.joined(separator: ", ")) "
                  + String(format: "in %.2f s", seconds))
            if let pruned = report.prunedThrough {
                print("pruned: seq 1–\(pruned) were removed, as the signed audit_prune record in the log states (its last hash chains on)")
            }
            if let left = report.pruneLeftovers {
                print("note: segments \(left.lowerBound)–\(left.upperBound) were to be removed by that prune, which was cut short; "
                      + "they were not checked: `tokenvault audit prune` removes them")
            }
            if pubkey == nil {
                let cp = report.checkpointSeq.map { "seq \($0)" } ?? "none"
                print("freshness: vault.db's checkpoint at \(cp) (\(report.lastSeq - (report.checkpointSeq ?? 0)) records behind the log's end), "
                      + (report.anchorSeq.map { "the keyring's anchor at seq \($0)" }
                         ?? "no keyring anchor (the keyring is not writable): an old copy of the log put back with its vault.db would pass"))
            }
        }
    }

    /// The witness check of `verify --witness`, with the public key (given, or the keyring's).
    fileprivate static func witnessCheck(_ file: String, directory: String, publicKey: [UInt8], host: String?) throws {
        let r = AuditWitnessCheck.check(directory: directory, witnessFile: file, publicKey: publicKey, host: host)
        if let problem = r.problem {
            print("FAILED against the witness file after \(r.statements) statement(s): \(problem)")
            throw ExitCode(Exit.integrity.rawValue)
        }
        print("witness: \(r.statements) statement(s) in \(file) match the log, through seq \(r.matchedThrough)"
              + (r.pruned > 0 ? " (\(r.pruned) more are about pruned records)" : ""))
    }

    struct Query: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "query", abstract: "List audit records that match filters (table, or --json lines).",
            discussion: """
                Records are matched in place, and segments with an index (see `audit index`) are read only where \
                a match can be. With --json or --count the results stream as they are found.

                How many refusals last week, and the reads of one token:
                  tokenvault audit query --outcome denied --since 7d --count
                  tokenvault audit query --token acme/ads --since 30d --json
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var filters: Filters
        @OptionGroup var scope: HostScope
        @Flag(help: "Print the matching records as JSON Lines, exactly as stored (with --all-hosts, a host field first).") var json = false
        @Flag(help: "Print only how many records match.") var count = false
        @Option(help: "At most this many records (the newest).") var limit: Int?
        @Flag(help: .hidden) var noIndex = false

        func run() throws {
            let f = try filters.filter()
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            if scope.readsStore(vault) {
                var rows = try AuditCommand.storeRecords(try vault.openVault(), scope: scope, filter: f)
                if let limit, rows.count > limit { rows = Array(rows.suffix(limit)) }
                if count { print(rows.count) }
                else if json { for r in rows { print(AuditCommand.withHost(r.host, r.line)) } }
                else if rows.isEmpty { printErr("no matching records") } else { print(AuditCommand.hostTable(rows)) }
                return
            }
            let dir = vault.vaultHome.auditDirectory
            var matched = 0
            let stats: AuditQueryStats
            if count {
                stats = AuditQuery.each(directory: dir, filter: f, useIndex: !noIndex) { _ in matched += 1 }
                print(limit.map { min($0, matched) } ?? matched)
            } else if json, limit == nil {
                let out = LineWriter()
                stats = AuditQuery.each(directory: dir, filter: f, useIndex: !noIndex) { match in
                    matched += 1
                    out.write(match.line)
                }
                out.flush()
            } else {
                // The newest `limit` only: a ring of the last lines seen.
                var ring: [[UInt8]] = []
                var next = 0
                stats = AuditQuery.each(directory: dir, filter: f, useIndex: !noIndex) { match in
                    matched += 1
                    let line = Array(match.line)
                    if let limit, ring.count == limit { ring[next] = line; next = (next + 1) % limit } else { ring.append(line) }
                }
                let lines = Array(ring[next...] + ring[..<next])
                if json {
                    let out = LineWriter()
                    for l in lines { l.withUnsafeBytes { out.write($0) } }
                    out.flush()
                } else if !lines.isEmpty {
                    let entries = lines.compactMap { try? JSONDecoder().decode(AuditEntry.self, from: Data($0)) }
                    print(AuditCommand.table(entries))
                }
            }
            if matched == 0 && !count { printErr("no matching records") }
            if stats.unindexedFull > 1 && !noIndex {
                printErr("note: \(stats.unindexedFull) full segment(s) have no index; `tokenvault audit index` builds them")
            }
        }
    }

    struct Prune: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "prune",
            abstract: "Remove whole old segments, after a signed record that says what was removed.",
            discussion: """
                Removes the oldest finished segments whose every record is older than --before (never the \
                newest segment). The log is verified first, and nothing is removed unless it is intact. The \
                prune record (action audit_prune) names the segments, the first and last seq and their \
                hashes; `audit verify` then checks the rest of the log from there and reports the pruned range. \
                With a shared store, records not yet shipped to it are never removed. A prune cut short \
                (a crash between its record and the last removal) is finished by the next run.

                Keep a year:
                  tokenvault audit prune --before 365d
                """)

        @OptionGroup var vault: VaultOptions
        @Option(help: "Remove segments whose records are all older than this: 2026-01-01, or 365d ago.") var before: String
        @Flag(help: "Say what would be removed, and remove nothing.") var dryRun = false

        func run() throws {
            guard let cutoff = AuditFilter.parseTime(before) else { throw ValidationError("--before: cannot read the time \"\(before)\"") }
            let v = try vault.openVault()
            let dir = v.home.auditDirectory
            if let (record, left) = AuditPrune.interrupted(directory: dir) {
                let what = "segments \(left.lowerBound)–\(left.upperBound), left behind by the prune of segments \(record.fromSegment)–\(record.throughSegment)"
                if dryRun {
                    print("would finish removing \(what)")
                } else {
                    do { try AuditPrune.finishInterrupted(directory: dir) } catch {
                        throw CLIFailure(message: "error: \(error)", exit: .failure)
                    }
                    print("removed \(what) (its audit_prune record is already in the log)")
                }
            }
            let plan: AuditPruneRecord
            do {
                guard let p = try AuditPrune.plan(directory: dir, before: cutoff) else {
                    print("nothing to prune: no finished segment holds only records before \(cutoff)")
                    return
                }
                plan = p
            } catch {
                throw CLIFailure(message: "error: \(error)", exit: .integrity)
            }
            let what = "segments \(plan.fromSegment)–\(plan.throughSegment) (seq \(plan.firstSeq)–\(plan.lastSeq))"
            if dryRun {
                print("would remove \(what)")
                return
            }
            guard let report = try AuditCommand.verifyLocal(v, directory: dir), report.ok else {
                throw CLIFailure(message: "error: the log does not verify; nothing was removed (run `tokenvault audit verify`)", exit: .integrity)
            }
            if v.storeIsShared {
                let shipped = try reporting { try v.auditShippedThrough() }
                guard shipped >= plan.lastSeq else {
                    throw CLIFailure(message: "error: the shared store's copy of this host ends at seq \(shipped), before seq \(plan.lastSeq): "
                                     + "nothing was removed (ship first: `tokenvault audit ship`)", exit: .unavailable)
                }
            }
            try CLIAudit.around(v) { audit in
                do { try AuditPrune.prune(plan, directory: dir, log: audit.log, actor: CLIAudit.actor) } catch {
                    throw CLIFailure(message: "error: \(error)", exit: .failure)
                }
            }
            print("removed \(what); the audit_prune record in the log says so")
        }
    }

    struct Compress: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "compress",
            abstract: "Compress finished audit segments with gzip; query, verify and report read them as they are.",
            discussion: """
                Each finished segment (never the newest) becomes audit-NNNNNN.jsonl.gz, holding the very same \
                bytes: the compressed copy is synced, read back and compared before the plain file is removed, \
                so the chain, the signatures and the index are unchanged. `zcat` reads them too.

                Compress what is older than a week:
                  tokenvault audit compress --before 7d
                """)

        @OptionGroup var vault: VaultOptions
        @Option(help: "Only segments whose records are all older than this: 2026-11-01, or 7d ago.") var before: String?

        func run() throws {
            let cutoff = try before.map { b in
                guard let t = AuditFilter.parseTime(b) else { throw ValidationError("--before: cannot read the time \"\(b)\"") }
                return t
            }
            let dir = vault.vaultHome.auditDirectory
            let segments = AuditSegments.list(dir)
            var done = 0, plain = 0, packed = 0
            let started = Date()
            for segment in segments.dropLast() where !AuditSegments.isCompressed(dir, segment) {
                if let cutoff {
                    guard let last = AuditPrune.lastTime(directory: dir, segment: segment), last < cutoff else { continue }
                }
                do {
                    let sizes = try AuditSegments.compress(directory: dir, segment: segment)
                    (done, plain, packed) = (done + 1, plain + sizes.plain, packed + sizes.compressed)
                } catch {
                    throw CLIFailure(message: "error: \(error)", exit: .failure)
                }
            }
            guard done > 0 else {
                print("nothing to compress: every finished segment\(cutoff.map { " with records after \($0)" } ?? "") is already compressed or still in use")
                return
            }
            print("compressed \(done) segment(s): \(plain) bytes to \(packed) (\(plain > 0 ? packed * 100 / plain : 0)%), "
                  + String(format: "in %.2f s", Date().timeIntervalSince(started)))
        }
    }

    struct Index: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "index",
            abstract: "Build the index of every audit segment (what queries read instead of the whole log).",
            discussion: """
                The daemon indexes each segment once it is full; this builds what is missing or stale, \
                including the part of the newest segment written so far. An index is never used to verify \
                the log: `audit verify` reads the records themselves.
                """)

        @OptionGroup var vault: VaultOptions
        @Flag(help: "Rebuild every index, not only the missing or stale ones.") var force = false

        func run() throws {
            let dir = vault.vaultHome.auditDirectory
            let segments = AuditSegments.list(dir)
            guard !segments.isEmpty else {
                print("no audit segments in \(dir)")
                return
            }
            let started = Date()
            var built = 0, lines = 0
            for (n, segment) in segments.enumerated() {
                // The newest segment grows: its index covers what is there now, and queries scan the rest.
                if !force, n < segments.count - 1, AuditIndex.isCurrent(directory: dir, segment: segment) { continue }
                do {
                    let n = try AuditIndex.build(directory: dir, segment: segment)
                    lines += n
                    if n > 0 { built += 1 }  // an empty segment (just started) has nothing to index
                } catch {
                    throw CLIFailure(message: "error: \(error)", exit: .failure)
                }
            }
            print("indexed \(built) of \(segments.count) segment(s), \(lines) records, " + String(format: "in %.2f s", Date().timeIntervalSince(started)))
        }
    }

    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "tail", abstract: "Show the newest records; with -f, follow the log as it grows.")

        @OptionGroup var vault: VaultOptions
        @OptionGroup var filters: Filters
        @Option(name: .short, help: "How many records to show first.") var n = 10
        @Flag(name: .short, help: "Follow: keep printing new records.") var follow = false
        @Flag(help: "JSON Lines, exactly as stored.") var json = false

        func run() throws {
            let dir = vault.vaultHome.auditDirectory
            let f = try filters.filter()
            var rows: [(AuditEntry, Substring)] = []
            AuditQuery.scan(directory: dir, filter: f) { e, line in rows.append((e, line)) }
            var lastSeq = rows.last?.0.seq ?? 0
            var headerShown = false
            emit(Array(rows.suffix(n)), headerShown: &headerShown)
            guard follow else { return }
            while true {
                usleep(250_000)
                var fresh: [(AuditEntry, Substring)] = []
                var g = f
                g.since = nil
                AuditQuery.scan(directory: dir, filter: g) { e, line in if e.seq > lastSeq { fresh.append((e, line)) } }
                if let last = fresh.last { lastSeq = last.0.seq }
                emit(fresh.filter { f.matches($0.0) }, headerShown: &headerShown)
            }
        }

        /// The header is printed once, with the first records; what follows under -f is rows only.
        private func emit(_ rows: [(AuditEntry, Substring)], headerShown: inout Bool) {
            guard !rows.isEmpty else { return }
            if json {
                for (_, line) in rows { print(line) }
            } else {
                print(AuditCommand.table(rows.map(\.0), withHeader: !headerShown))
                headerShown = true
            }
            fflush(nil)
        }
    }

    struct Hash: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hash",
            abstract: "Print the token_hmac of a token read on stdin, to find every read that touched it.",
            discussion: """
                Every read that touched a leaked token:
                  tokenvault audit hash < leaked.txt |
                    xargs -I{} tokenvault audit query --token-hmac {}
                """)

        @OptionGroup var vault: VaultOptions

        func run() throws {
            let secret = try SecretInput.readStdin(what: "token to hash")
            let v = try vault.openVault()
            let keys = AuditKeys(auditKey: try reporting { try v.auditKey() })
            print(hexString(keys.tokenHMAC(secret)))
        }
    }

    struct PublicKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pubkey",
            abstract: "Print the Ed25519 public key that verifies signed audit records (give it to auditors).")

        @OptionGroup var vault: VaultOptions

        func run() throws {
            let v = try vault.openVault()
            print(hexString(AuditKeys(auditKey: try reporting { try v.auditKey() }).publicKey))
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report",
            abstract: "Write a self-contained HTML report of a period: reads, callers, refusals, admin actions, and the verdict.",
            discussion: """
                One page, no scripts, nothing fetched: the period, host and vault; exactly which records the \
                signatures and MACs cover; reads per day (days with no record at all drawn as gaps); reads per \
                token and per caller (user names and executables); refusals by reason and caller; admin actions; \
                tokens never read; readers new in the period; and who the policy lets read each token beside \
                who did.

                Last month, for the review meeting:
                  tokenvault audit report --html report.html --since 30d
                """)

        @OptionGroup var vault: VaultOptions
        @OptionGroup var filters: Filters
        @OptionGroup var scope: HostScope
        @Option(help: ArgumentHelp("Where to write the page.", valueName: "file")) var html: String
        @Option(help: ArgumentHelp("The policy to compare reads with (default: <home>/policy.toml).", valueName: "file")) var policy: String?

        func run() throws {
            let v = try vault.openVault()
            let keys = AuditKeys(auditKey: try reporting { try v.auditKey() })
            if scope.readsStore(vault) { return try storeReport(v, keys: keys) }
            // The whole log is verified on another core while this one counts the period's records.
            let verified = AuditVerifier.verifyConcurrently(directory: v.home.auditDirectory, keys: keys, publicKey: nil,
                                                            checkpoint: try reporting { try v.auditCheckpoint() },
                                                            anchor: try reporting { try v.keyring.readAnchor() }, requireCheckpoint: true)
            let f = try filters.filter()
            var builder = AuditReport.Builder(since: f.since, until: f.until)
            // With a period, the records before it are read too: they say who is a new reader.
            var scan = f
            scan.since = nil
            AuditQuery.each(directory: v.home.auditDirectory, filter: scan) { builder.add($0) }
            let verification = verified()
            let data = builder.finish(verification: verification, context: try context(v))
            try write(AuditReport.html(data, generated: Date()))
            printErr("wrote \(html): \(data.records) records, verification \(verification.ok ? "OK" : "FAILED")")
        }

        /// The host, the vault, its tokens and who the policy lets read each.
        private func context(_ v: Vault) throws -> AuditReport.Context {
            var name = [UInt8](repeating: 0, count: 256)
            gethostname(&name, name.count - 1)
            let hostname = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
            let tokens = (try? v.list().map(\.name)) ?? []
            let policyPath = policy ?? v.home.policyPath
            let rules: [Policy.Rule]
            do { rules = try Policy.load(path: policyPath).rules } catch {
                throw CLIFailure(message: "error: \(error)", exit: .badInput)
            }
            var readers: [String: [String]] = [:]
            for token in tokens {
                readers[token] = rules.filter { $0.matches(name: token) }.map { rule in
                    switch rule.subject {
                    case .uid(let u): return getpwuid(u).map { "\(String(cString: $0.pointee.pw_name)) (uid \(u))" } ?? "uid \(u)"
                    case .gid(let g): return getgrgid(g).map { "group \(String(cString: $0.pointee.gr_name)) (gid \(g))" } ?? "gid \(g)"
                    }
                }
            }
            return AuditReport.Context(host: hostname == v.hostID || v.hostID == Vault.defaultHostID ? hostname : "\(hostname) (host id \(v.hostID))",
                                       vault: v.home.root, tokens: tokens, policyReaders: readers)
        }

        private func write(_ page: String) throws {
            do { try page.write(toFile: html, atomically: true, encoding: .utf8) } catch {
                throw CLIFailure(message: "error: cannot write \(html): \(error)", exit: .failure)
            }
        }

        /// Every host's copy: one page, the verdict the first host that fails (or all OK).
        private func storeReport(_ v: Vault, keys: AuditKeys) throws {
            let checkpoints = try reporting { try v.auditCheckpoints() }
            let filter = try filters.filter()
            var combined = AuditVerifier.Report()
            var entries: [AuditEntry] = []
            var scan = filter
            scan.since = nil
            _ = try withStoreCopies(v, hosts: try scope.hosts(v)) { host, dir, last in
                let cp = checkpoints.first { $0.host == host }.flatMap { $0.seq <= last ? $0 : nil }
                let r = AuditVerifier.verify(directory: dir, keys: keys, publicKey: nil, checkpoint: cp)
                combined.records += r.records
                combined.lastSeq = max(combined.lastSeq, r.lastSeq)
                combined.signedThrough = max(combined.signedThrough, r.signedThrough)
                combined.checkedMACs = true
                if combined.problem == nil, let p = r.problem {
                    combined.problem = AuditVerifier.Problem(file: "host \(host)", line: p.line, seq: p.seq, message: p.message)
                }
                AuditQuery.each(directory: dir, filter: scan) { entries.append($0.entry) }
            }
            entries.sort { $0.time < $1.time }
            var builder = AuditReport.Builder(since: filter.since, until: filter.until)
            for e in entries { builder.add(e) }
            var context = try context(v)
            context.host = "every host of the shared store"
            let data = builder.finish(verification: combined, context: context)
            try write(AuditReport.html(data, generated: Date()))
            printErr("wrote \(html): \(data.records) records of every host, verification \(combined.ok ? "OK" : "FAILED")")
        }
    }
}
