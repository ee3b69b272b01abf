import Foundation
import Synchronization
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultStores
@testable import VaultAudit
#if canImport(Glibc)
import Glibc
#endif


let actor = AuditActor(uid: 1001, gid: 1001, pid: 4242, executable: "/usr/bin/python3")

func event(_ i: Int, token: String = "acme/ads") -> AuditEvent {
    AuditEvent(action: "get", channel: .socket, actor: actor, token: token, outcome: i % 5 == 0 ? .denied : .granted,
               reason: i % 5 == 0 ? "no policy rule allows it" : nil, requestId: String(i))
}

/// A vault and its audit log with `count` records, closed (so the checkpoint is current).
func makeLog(_ dir: TempDir, count: Int, options: AuditLog.Options = AuditLog.Options()) throws -> (Vault, AuditKeys) {
    let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
    let log = try AuditLog.open(for: vault, options: options)
    for i in 1...count { try log.appendAndWait(event(i), secret: SecretBytes(copying: Array("EAAB-secret-\(i % 3)".utf8))) }
    log.close()
    return (vault, AuditKeys(auditKey: try vault.auditKey()))
}

func lines(_ path: String) -> [String] {
    (try! String(contentsOfFile: path, encoding: .utf8)).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
}

func write(_ lines: [String], _ path: String) {
    try! lines.joined(separator: "\n").write(toFile: path, atomically: false, encoding: .utf8)
}

@Suite("Audit log: durability, group commit, tamper evidence")
struct AuditLogTests {
    let dir = TempDir()

    func verify(_ vault: Vault, _ keys: AuditKeys) throws -> AuditVerifier.Report {
        AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
    }

    @Test func intactLogVerifiesWithKeysAndWithThePublicKeyAlone() throws {
        let (vault, keys) = try makeLog(dir, count: 40)
        let report = try verify(vault, keys)
        #expect(report.ok && report.records == 40 && report.lastSeq == 40 && report.checkedCheckpoint && report.checkedMACs)
        #expect(report.signedThrough >= 1)
        let pub = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: nil, publicKey: keys.publicKey, checkpoint: nil)
        #expect(pub.ok && !pub.checkedMACs)
        let other = AuditKeys(auditKey: SecureKey.random())
        #expect(!AuditVerifier.verify(directory: vault.home.auditDirectory, keys: other, publicKey: nil, checkpoint: nil).ok)
    }

    /// The flusher hashes a token the caller left to it (the daemon leaves a name's first read to it), and
    /// lets go of it (so it is wiped) once its record is durable, also when no other record follows.
    @Test func theFlusherLetsGoOfATokenOnceItsRecordIsDurable() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        defer { log.close() }
        weak var held: SecretBytes?
        try {
            let secret = SecretBytes(copying: Array("EAAB-held-by-the-flusher".utf8))
            held = secret
            try log.appendAndWait(event(1), secret: secret)
        }()
        var released = false
        for _ in 0..<40 where !released {
            released = held == nil
            if !released { usleep(25_000) }
        }
        #expect(released, "the idle flusher still holds the token")
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let last = AuditQuery.entries(directory: vault.home.auditDirectory).last
        #expect(last?.tokenHmac == hexString(keys.tokenHMAC(SecretBytes(copying: Array("EAAB-held-by-the-flusher".utf8)))))
    }

    @Test func recordsAreJSONLinesWithTheSchemaAndNoToken() throws {
        let (vault, keys) = try makeLog(dir, count: 6)
        let entries = AuditQuery.entries(directory: vault.home.auditDirectory)
        #expect(entries.map(\.seq) == Array(1...6))
        #expect(entries[0].uid == 1001 && entries[0].exe == "/usr/bin/python3" && entries[0].channel == "socket")
        #expect(entries[4].outcome == "denied" && entries[4].reason == "no policy rule allows it")
        #expect(entries[0].time.count == 27 && entries[0].time.hasSuffix("Z"))
        // token_hmac is HMAC-SHA256 under the audit token key: equal tokens, equal hashes.
        #expect(entries[0].tokenHmac == hexString(keys.tokenHMAC(SecretBytes(copying: Array("EAAB-secret-1".utf8)))))
        #expect(entries[0].tokenHmac == entries[3].tokenHmac && entries[0].tokenHmac != entries[1].tokenHmac)
        let raw = try String(contentsOfFile: AuditSegments.path(vault.home.auditDirectory, 1), encoding: .utf8)
        #expect(!raw.contains("EAAB-secret"))
        for line in raw.split(separator: "\n") {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) is [String: Any])
        }
    }

    @Test(arguments: ["changed", "deleted", "inserted", "reordered", "truncated", "cut-mid-line", "forged", "checkpoint"])
    func everyTamperKindIsDetected(kind: String) throws {
        let (vault, keys) = try makeLog(dir, count: 30)
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        var l = lines(path)  // l.last is "" (the final newline)
        let expected: (seq: Int64?, fragment: String)
        switch kind {
        case "changed":
            l[9] = l[9].replacingOccurrences(of: "\"uid\":1001", with: "\"uid\":0")
            expected = (10, "does not match its hash")
        case "deleted":
            l.remove(at: 9)
            expected = (11, "record 10 is missing")
        case "inserted":
            l.insert(l[9], at: 10)
            expected = (10, "reordered or inserted")
        case "reordered":
            l.swapAt(9, 10)
            expected = (11, "expected seq 10")
        case "truncated":
            l.removeSubrange(25..<30)
            expected = (26, "truncated")
        case "cut-mid-line":
            l[29] = String(l[29].prefix(40))
            l.removeLast()
            expected = (nil, "cut off mid-line")
        case "forged":
            // An attacker without the key rewrites record 10 and recomputes the keyless hash chain after it.
            l[9] = l[9].replacingOccurrences(of: "\"uid\":1001", with: "\"uid\":0")
            var prev = decodeHex(String(l[8].split(separator: "\"hash\":\"")[1].prefix(64)))!
            for i in 9..<30 {
                let parts = l[i].components(separatedBy: ",\"hash\":\"")
                let h = prev.withUnsafeBytes { p in Array(parts[0].utf8).withUnsafeBytes { BLAKE2b.hash(p, $0) } }
                l[i] = parts[0] + ",\"hash\":\"" + hexString(h) + String(parts[1].dropFirst(64))
                prev = h
            }
            expected = (10, "MAC does not verify")
        default:  // checkpoint: the row in vault.db is edited to vouch for less
            var cp = try vault.auditCheckpoint()!
            cp.seq = 20
            try vault.advanceAuditCheckpointForTests(cp)
            expected = (20, "checkpoint in vault.db was altered")
        }
        if kind != "checkpoint" { write(l, path) }
        let report = try verify(vault, keys)
        #expect(!report.ok)
        #expect(report.problem?.seq == expected.seq, "\(report.problem.map { "\($0)" } ?? "no problem")")
        #expect(report.problem?.message.contains(expected.fragment) == true, "\(report.problem.map { "\($0)" } ?? "no problem")")
    }

    @Test func groupCommitSharesFlushes() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        let start = Atomic<Bool>(false)
        let done = DispatchGroup()
        let failures = Atomic<Int>(0)
        var threads: [Thread] = []
        for i in 0..<64 {
            done.enter()
            let t = Thread {
                while !start.load(ordering: .acquiring) { sched_yield() }
                do { try log.appendAndWait(event(i)) } catch { failures.add(1, ordering: .relaxed) }
                done.leave()
            }
            threads.append(t)
            t.start()
        }
        start.store(true, ordering: .releasing)
        done.wait()
        let (batches, records) = log.counters
        log.close()
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(records == 64)
        #expect(batches < 32, "64 concurrent records took \(batches) flushes")
        let entries = AuditQuery.entries(directory: vault.home.auditDirectory)
        #expect(Set(entries.compactMap(\.requestId)) == Set((0..<64).map(String.init)), "each reader has exactly one record")
    }

    /// Rewrites records `from...` of a segment's lines with `chain(i)`'s hash and MAC (and a fresh signature
    /// where there was one), chaining on from the record before: a log as a writer of that version made it.
    func rechain(_ l: inout [String], from: Int, keys: AuditKeys, chain: (Int) -> AuditRecordFormat.Chain) {
        var prev = from == 0 ? AuditRecordFormat.genesisHash : decodeHex(String(l[from - 1].split(separator: "\"hash\":\"")[1].prefix(64)))!
        for i in from..<l.count where !l[i].isEmpty {
            let prefix = l[i].components(separatedBy: ",\"hash\":\"")[0]
            let signed = l[i].contains("\"sig\":")
            let c = chain(i)
            let h = prev.withUnsafeBytes { p in Array(prefix.utf8).withUnsafeBytes { c.hash(previous: p, line: $0) } }
            var out: [UInt8] = Array(prefix.utf8)
            AuditRecordFormat.appendSuffix(hash: h, mac: c.mac(keys, hash: h),
                                           signature: signed ? keys.signer.sign(AuditKeys.signedMessage(hash: h)) : nil, to: &out)
            l[i] = String(decoding: out.dropLast(), as: UTF8.self)  // without its newline
            prev = h
        }
    }

    @Test func logsWrittenBeforeChainV2StillVerifyAndCarryOn() throws {
        let (vault, keys) = try makeLog(dir, count: 30)
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        var l = lines(path)
        rechain(&l, from: 0, keys: keys) { _ in .v1 }  // the whole log as a v1 writer made it
        write(l, path)
        let legacy = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: nil)
        #expect(legacy.ok && legacy.records == 30, "\(legacy.problem.map { "\($0)" } ?? "")")

        rechain(&l, from: 0, keys: keys) { $0 < 12 ? .v1 : .v2 }  // upgraded mid-log: v1 records, then v2 ones
        write(l, path)
        let mixed = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: nil)
        #expect(mixed.ok && mixed.records == 30, "\(mixed.problem.map { "\($0)" } ?? "")")

        // A v1 record is still held to its own MAC: a v1 hash with a v2 MAC (or a forged one) fails.
        var forged = l
        rechain(&forged, from: 0, keys: AuditKeys(auditKey: SecureKey.random())) { $0 < 12 ? .v1 : .v2 }
        write(forged, path)
        let bad = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: nil)
        #expect(bad.problem?.seq == 1 && bad.problem?.message.contains("MAC does not verify") == true)

        // The writer carries a v1 log on with v2 records.
        write(l, path)
        let log = try AuditLog.open(for: vault)
        try log.appendAndWait(event(31))
        log.close()
        let continued = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: nil)
        #expect(continued.ok && continued.records == 31)
    }

    /// A segment over 1 MiB is verified by several workers, each over its own run of lines: a change
    /// anywhere — at the first line, the last, or where runs meet — must still be caught and named.
    @Test(arguments: [0, 1, 2_499, 2_500, 2_501, 4_999])
    func tamperingIsCaughtInEveryRunOfABigSegment(index: Int) throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        let group = DispatchGroup()
        for i in 1...5_000 {
            group.enter()
            log.append(event(i, token: "acme/ads-with-a-longer-name-\(i)"), secret: nil) { _ in group.leave() }
        }
        group.wait()
        log.close()
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        #expect(try verify(vault, keys).ok)
        func fast() -> AuditVerifier.SegmentSummary? {
            AuditVerifier.verifyFast(path: path, expectedSeq: 1, previous: AuditDigest(AuditRecordFormat.genesisHash), keys: keys,
                                     publicKey: keys.publicKey, checkpointSeq: nil)
        }
        var l = lines(path)
        // 5,000 records, then (when the last batch went unsigned) the signed audit_checkpoint close adds.
        let closing = l[l.count - 2].contains("\"action\":\"audit_checkpoint\"") ? 1 : 0
        #expect(fast()?.records == Int64(5_000 + closing))  // the clean segment passes the parallel pass itself
        #expect(l.count == 5_001 + closing)  // the records and the empty string after the last newline
        #expect(l[l.count - 2].contains("\"sig\":\""), "the log at rest ends signed")
        l[index] = l[index].replacingOccurrences(of: "\"uid\":1001", with: "\"uid\":1002")
        write(l, path)
        #expect(fast() == nil)
        let report = try verify(vault, keys)
        #expect(report.problem?.seq == Int64(index + 1), "\(report.problem.map { "\($0)" } ?? "no problem")")
        #expect(report.problem?.message.contains("does not match its hash") == true)
    }

    @Test func awkwardStringsAreEscapedIntoValidJSON() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        let awkward = "a\"b\\c\nd\u{01}\u{1f}é—x"
        try log.appendAndWait(AuditEvent(action: "get", channel: .socket, actor: actor, token: awkward, outcome: .denied,
                                         reason: "quote \" and tab \t", requestId: "\"7\""))
        log.close()
        let line = lines(AuditSegments.path(vault.home.auditDirectory, 1))[0]
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["token"] as? String == awkward)
        #expect(object["reason"] as? String == "quote \" and tab \t")
        #expect(object["request_id"] as? String == "\"7\"")
        #expect(try verify(vault, AuditKeys(auditKey: try vault.auditKey())).ok)
    }

    /// The record time is formatted by integer arithmetic: it must agree with the C library everywhere.
    @Test func recordTimesAgreeWithGmtime() {
        var samples: [Int64] = [0, 1, 951_782_400_000_000, 4_107_542_399_999_999, 1_795_950_922_123_456, -1, -86_400_000_001]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 { samples.append(Int64.random(in: -2_000_000_000_000_000...4_000_000_000_000_000, using: &rng)) }
        for micros in samples {
            let secs = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
            var t = time_t(secs)
            var tm = tm()
            gmtime_r(&t, &tm)
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                                  tm.tm_hour, tm.tm_min, tm.tm_sec, Int32(micros - secs * 1_000_000))
            #expect(AuditRecordFormat.formatTime(micros: micros) == expected, "\(micros)")
        }
    }

    /// Fixed vectors for chain v2, computed independently (hashlib.blake2b) by Tests/vectors/vectors.py.
    @Test func chainV2Vectors() {
        let line = Array(#"{"seq":1,"time":"2026-11-29T10:35:22.123456Z","channel":"socket","action":"get","token":"acme/ads""#.utf8)
        let hash = AuditRecordFormat.genesisHash.withUnsafeBytes { p in line.withUnsafeBytes { AuditRecordFormat.Chain.v2.hash(previous: p, line: $0) } }
        #expect(hexString(hash) == "2601bad235bdf2c0a0d4a0b6bf29da9d5c98afa57cf050344ed8fb5e1f155577")
        let key = try! SecureKey.copying(Array(0..<32))
        #expect(hexString(hash.withUnsafeBytes { BLAKE2b.mac(key: key, $0) })
                == "e449e50a5b371cf8bdf75d9c5cde13de2ff1fe9d55fe70787308cb3a5a5b1422")
    }

    @Test func segmentsRotateAndAMissingSegmentIsCaught() throws {
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        let (vault, keys) = try makeLog(dir, count: 60, options: options)
        let segments = AuditSegments.list(vault.home.auditDirectory)
        #expect(segments.count > 2)
        #expect(try verify(vault, keys).ok)
        try FileManager.default.removeItem(atPath: AuditSegments.path(vault.home.auditDirectory, 2))
        let report = try verify(vault, keys)
        #expect(report.problem?.message.contains("segment missing") == true)
    }

    @Test func twoWritersShareOneChain() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let daemon = try AuditLog.open(for: vault)
        let cli = try AuditLog.open(for: vault)
        for i in 0..<20 { try (i % 2 == 0 ? daemon : cli).appendAndWait(event(i)) }
        daemon.close()
        cli.close()
        let report = try verify(vault, AuditKeys(auditKey: try vault.auditKey()))
        #expect(report.ok && report.records == 20)
    }

    @Test func aTornLastLineIsDroppedOnOpenAndTheChainContinues() throws {
        let (vault, keys) = try makeLog(dir, count: 5)
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        let fd = open(path, O_WRONLY | O_APPEND)
        _ = write(fd, "{\"seq\":6,\"time\":\"20", 20)
        close(fd)
        let log = try AuditLog.open(for: vault)
        try log.appendAndWait(event(6))
        log.close()
        let report = try verify(vault, keys)
        #expect(report.ok && report.records == 6)
    }

    @Test func aDamagedCompleteLastRecordStopsWritingInsteadOfBeingErased() throws {
        let (vault, _) = try makeLog(dir, count: 3)
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        var l = lines(path)
        l[2] = "{\"seq\":3,\"oops\":true}"
        write(l, path)
        #expect(throws: AuditWriteError.self) { try AuditLog.open(for: vault) }
        #expect(lines(path)[2] == "{\"seq\":3,\"oops\":true}", "evidence is left in place")
    }

    @Test func reportRendersItsDataAndVerdict() throws {
        let (vault, keys) = try makeLog(dir, count: 12)
        let entries = AuditQuery.entries(directory: vault.home.auditDirectory)
        let html = AuditReport.html(entries: entries, verification: try verify(vault, keys), generated: Date())
        #expect(html.hasPrefix("<!DOCTYPE html>") && html.contains("<svg id=\"reads-chart\"") && html.contains("id=\"refusals-chart\""))
        let json = html.components(separatedBy: "id=\"report-data\">")[1].components(separatedBy: "</script>")[0]
        let data = try JSONDecoder().decode(AuditReport.Data.self, from: Data(json.utf8))
        #expect(data.verified && data.records == 12)
        #expect(data.readsPerTokenPerDay["acme/ads"]?.values.reduce(0, +) == 10)
        #expect(data.refusalsPerDay.values.reduce(0, +) == 2)
        #expect(data.callersPerToken["acme/ads"]?["uid 1001 (/usr/bin/python3)"] == 10)
        // Well-formed: Python's HTML parser sees every opened element closed.
        let check = """
            import sys, html.parser
            class P(html.parser.HTMLParser):
                def __init__(s): super().__init__(); s.stack=[]
                def handle_starttag(s,t,a):
                    if t not in ("meta",): s.stack.append(t)
                def handle_endtag(s,t):
                    assert s.stack and s.stack.pop()==t, t
            p=P(); p.feed(sys.stdin.read()); assert not p.stack, p.stack; print("ok")
            """
        #expect(try python(check, stdin: html) == "ok\n")
    }
}

extension Vault {
    /// Plays the attacker who edits the checkpoint row directly.
    func advanceAuditCheckpointForTests(_ record: AuditCheckpointRecord) throws {
        try saveAuditCheckpointUnchecked(record)
    }
}

func python(_ script: String, stdin: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", script]
    let input = Pipe(), output = Pipe()
    p.standardInput = input
    p.standardOutput = output
    try p.run()
    input.fileHandleForWriting.write(Data(stdin.utf8))
    try input.fileHandleForWriting.close()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: out, as: UTF8.self)
}

@Suite("Audit log: external rotation and batching")
struct AuditRotationTests {
    let dir = TempDir()

    @Test func reopenAfterAnExternalMoveContinuesTheChain() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        for i in 1...3 { try log.appendAndWait(event(i)) }
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        try FileManager.default.moveItem(atPath: path, toPath: dir.path + "/rotated.jsonl")  // logrotate's move
        log.reopen()
        for i in 4...5 { try log.appendAndWait(event(i)) }
        log.close()
        let fresh = lines(path).filter { !$0.isEmpty }
        #expect(fresh.count == 2 && fresh[0].hasPrefix("{\"seq\":4,"))
        // The moved file followed by the new one is one unbroken, verifiable chain.
        let joined = dir.path + "/joined"
        try FileManager.default.createDirectory(atPath: joined, withIntermediateDirectories: false)
        let whole = try String(contentsOfFile: dir.path + "/rotated.jsonl", encoding: .utf8) + String(contentsOfFile: path, encoding: .utf8)
        try whole.write(toFile: AuditSegments.path(joined, 1), atomically: true, encoding: .utf8)
        let report = AuditVerifier.verify(directory: joined, keys: AuditKeys(auditKey: try vault.auditKey()), publicKey: nil, checkpoint: nil)
        #expect(report.ok && report.records == 5, "\(report.problem.map { "\($0)" } ?? "")")
    }

    @Test func withoutGroupCommitEveryRecordHasItsOwnFlush() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.maxBatch = 1
        let log = try AuditLog.open(for: vault, options: options)
        let group = DispatchGroup()
        for i in 0..<16 {
            group.enter()
            log.append(event(i), secret: nil) { _ in group.leave() }
        }
        group.wait()
        let (batches, records) = log.counters
        log.close()
        #expect(records == 16 && batches == 16)
    }
}

/// The audit-line inputs of the fuzz corpus, among them a seq of a hundred digits that once overflowed
/// and trapped (in the daemon reading its log's tail, and in `audit verify`): parsed or refused, never a crash.
@Suite("Audit lines against the fuzz corpus")
struct AuditLineFuzzCorpusTests {
    @Test func everyCorpusLineParsesOrIsRefused() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/FuzzAuditLine").path
        for name in try FileManager.default.contentsOfDirectory(atPath: corpus) {
            let bytes = [UInt8](FileManager.default.contents(atPath: corpus + "/" + name) ?? Data())
            let seq = bytes.withUnsafeBytes { AuditRecordFormat.recordSeq($0) }
            if name.hasPrefix("crash-") { #expect(seq == nil, "\(name)") }
        }
        let long = Array(#"{"seq":"#.utf8) + [UInt8](repeating: 0x39, count: 40) + Array(#","x":1}"#.utf8)
        #expect(long.withUnsafeBytes { AuditRecordFormat.recordSeq($0) } == nil)
    }
}

@Suite("Audit signatures, sampled")
struct AuditSignatureSamplingTests {
    let dir = TempDir()

    /// A burst leaves an unsigned batch at the log's end; once the log has been idle for a checkpoint
    /// interval the writer appends a signed audit_checkpoint, without being closed.
    @Test func anIdleLogEndsSigned() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.checkpointInterval = 0.2
        let log = try AuditLog.open(for: vault, options: options)
        defer { log.close() }
        let group = DispatchGroup()
        for i in 1...500 {
            group.enter()
            log.append(event(i), secret: nil) { _ in group.leave() }
        }
        group.wait()
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        let deadline = Date().addingTimeInterval(5)
        var last = ""
        repeat {
            usleep(100_000)
            last = lines(path).dropLast().last ?? ""
        } while !last.contains("\"sig\":\"") && Date() < deadline
        #expect(last.contains("\"sig\":\""), "the idle log's last record is signed")
        let keys = AuditKeys(auditKey: try vault.auditKey())
        #expect(AuditVerifier.verify(directory: vault.home.auditDirectory, keys: nil, publicKey: keys.publicKey, checkpoint: nil).ok)
    }

    /// A log written one record at a time is signed on every record (nothing else waits). `verify` checks
    /// one signature in 4,096 and always the last: a damaged last signature fails the public-key check.
    @Test func theLastSignatureIsAlwaysChecked() throws {
        let (vault, keys) = try makeLog(dir, count: 30)
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        var l = lines(path)
        #expect(l.dropLast().allSatisfy { $0.contains("\"sig\":\"") }, "every quiet batch is signed")
        let last = l.count - 2  // the final element is the empty string after the last newline
        let marker = l[last].range(of: "\"sig\":\"")!
        let at = l[last].index(marker.upperBound, offsetBy: 10)
        l[last].replaceSubrange(at...at, with: l[last][at] == "0" ? "1" : "0")
        write(l, path)
        let pub = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: nil, publicKey: keys.publicKey, checkpoint: nil)
        #expect(!pub.ok && pub.problem?.seq == 30 && pub.problem?.message.contains("signature") == true, "\(String(describing: pub.problem))")
    }
}
