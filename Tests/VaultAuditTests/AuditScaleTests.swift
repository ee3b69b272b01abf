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

/// A log with every kind of record: reads granted and refused, admin actions, a list (no token), the
/// daemon's own records, names that need escaping, several callers and channels, over several segments.
private func mixedLog(_ dir: TempDir, name: String = "home", segmentBytes: Int = 8 * 1024) throws -> (Vault, AuditKeys) {
    let vault = try Vault.create(home: VaultHome(root: dir.path + "/" + name))
    var options = AuditLog.Options()
    options.segmentBytes = segmentBytes
    options.indexSegments = false
    let log = try AuditLog.open(for: vault, options: options)
    let names = ["acme/ads", "acme/ads-2", "acme/\"quoted\"", "back\\slash", "naïve/ünïcode", "line\nbreak", "tok-7", "tok-70"]
    let actions = ["get", "get+proof", "list", "put", "rm", "export", "key_rotate", "policy_reload", "meta_check", "proof"]
    let channels: [AuditChannel] = [.socket, .cli, .daemon, .credential]
    for i in 0..<400 {
        let action = actions[i % actions.count]
        let who = AuditActor(uid: 1000 + UInt32(i % 4), gid: 100, pid: Int32(4000 + i), executable: i % 6 == 0 ? nil : "/usr/bin/job-\(i % 3)")
        let outcome: AuditOutcome = [.granted, .granted, .granted, .denied, .notFound, .rateLimited, .failed][i % 7]
        let e = AuditEvent(action: action, channel: channels[i % channels.count], actor: who,
                           token: action == "list" || action == "policy_reload" ? nil : names[i % names.count], outcome: outcome,
                           reason: outcome == .granted ? nil : "why \(i) \"quoted\"", requestId: i % 5 == 0 ? nil : "r\(i)")
        // Three days of records, a few seconds apart.
        let time = Int64(1_764_000_000 + i * 600) * 1_000_000
        let done = DispatchSemaphore(value: 0)
        log.append(e, secret: i % 3 == 0 ? SecretBytes(copying: Array("EAAB-\(i % 2)".utf8)) : nil, timeMicros: time) { _ in done.signal() }
        done.wait()
    }
    log.close()
    return (vault, AuditKeys(auditKey: try vault.auditKey()))
}

private func filters(_ keys: AuditKeys) -> [AuditFilter] {
    func f(_ body: (inout AuditFilter) -> Void) -> AuditFilter { var x = AuditFilter(); body(&x); return x }
    let hmac = hexString(keys.tokenHMAC(SecretBytes(copying: Array("EAAB-1".utf8))))
    let mid = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 150 * 600) * 1_000_000)
    let late = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 333 * 600) * 1_000_000)
    return [
        AuditFilter(),
        f { $0.token = "acme/ads" }, f { $0.token = "acme/*" }, f { $0.token = "acme/\"quoted\"" }, f { $0.token = "back\\slash" },
        f { $0.token = "naïve/ünïcode" }, f { $0.token = "line\nbreak" }, f { $0.token = "tok-7" }, f { $0.token = "tok-7*" },
        f { $0.token = "missing" }, f { $0.token = "*" },
        f { $0.uid = 1002 }, f { $0.uid = 9 }, f { $0.action = "get+proof" }, f { $0.action = "policy_reload" },
        f { $0.outcome = "denied" }, f { $0.outcome = "rate_limited" }, f { $0.tokenHmac = hmac }, f { $0.tokenHmac = hmac.uppercased() },
        f { $0.since = mid }, f { $0.until = mid }, f { $0.since = mid; $0.until = late },
        f { $0.token = "acme/ads"; $0.since = mid }, f { $0.uid = 1001; $0.outcome = "granted"; $0.until = late },
        f { $0.action = "get"; $0.token = "tok-7"; $0.uid = 1003 },
    ]
}

@Suite("Audit at scale: the scanner, the index, the checkpoint, the second sink")
struct AuditScaleTests {
    let dir = TempDir()

    /// What the old reader (a JSONDecoder per line, then ``AuditFilter/matches(_:)``) returns: the reference.
    func reference(_ directory: String, _ filter: AuditFilter) -> [AuditEntry] {
        var out: [AuditEntry] = []
        for index in AuditSegments.list(directory) {
            let text = (try? String(contentsOfFile: AuditSegments.path(directory, index), encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                if let e = try? JSONDecoder().decode(AuditEntry.self, from: Data(line.utf8)), filter.matches(e) { out.append(e) }
            }
        }
        return out
    }

    func query(_ directory: String, _ filter: AuditFilter, index: Bool) -> (entries: [AuditEntry], lines: [String], stats: AuditQueryStats) {
        var entries: [AuditEntry] = []
        var lines: [String] = []
        let stats = AuditQuery.each(directory: directory, filter: filter, useIndex: index) {
            entries.append($0.entry)
            lines.append(String(decoding: $0.line, as: UTF8.self))
        }
        return (entries, lines, stats)
    }

    @Test func resultsAreIdenticalWithAndWithoutTheIndexAndMatchTheDecoder() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let segments = AuditSegments.list(directory)
        #expect(segments.count >= 5)
        for s in segments { try AuditIndex.build(directory: directory, segment: s) }
        for filter in filters(keys) {
            let expected = reference(directory, filter)
            let scanned = query(directory, filter, index: false)
            let indexed = query(directory, filter, index: true)
            #expect(scanned.entries.map(\.seq) == expected.map(\.seq), "scan differs for \(filter)")
            #expect(indexed.entries.map(\.seq) == expected.map(\.seq), "index differs for \(filter)")
            #expect(scanned.entries == expected && indexed.entries == expected)
            #expect(indexed.lines == scanned.lines)
            #expect(indexed.stats.indexed == segments.count && scanned.stats.indexed == 0)
        }
        #expect(reference(directory, AuditFilter()).count == 400)
        #expect(!query(directory, filters(keys)[7], index: true).entries.isEmpty, "the escaped name is found")
    }

    @Test func aLineInAnotherFieldOrderIsStillFoundThroughTheIndex() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        // A record as some other writer might lay it out (fields reordered): the fast parser refuses it, the
        // decoder reads it, and the index lists it among the lines every query reads.
        let path = AuditSegments.path(directory, 2)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        text += #"{"uid":4242,"seq":999999,"time":"2025-11-25T00:00:00.000000Z","channel":"cli","action":"get","token":"odd/order","outcome":"granted","reason":null,"request_id":null,"gid":1,"pid":2,"exe":null,"token_hmac":null}"# + "\n"
        // Lines a scan's literal cannot find (the field first, spaces after colons): the index path must not
        // find them either, or the two would answer differently.
        text += #"{"token":"acme/ads","uid":4243,"seq":999998,"time":"2025-11-25T00:00:00.000000Z","channel":"cli","action":"get","outcome":"denied","reason":null,"request_id":null,"gid":1,"pid":2,"exe":null,"token_hmac":null}"# + "\n"
        text += #"{"seq": 999997, "time": "2025-11-25T00:00:00.000000Z", "channel": "cli", "action": "get", "token": "acme/ads", "outcome": "denied", "reason": null, "request_id": null, "uid": 4244, "gid": 1, "pid": 2, "exe": null, "token_hmac": null}"# + "\n"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        for s in AuditSegments.list(directory) { try AuditIndex.build(directory: directory, segment: s) }
        var f = AuditFilter()
        f.token = "odd/order"
        #expect(query(directory, f, index: true).entries.map(\.uid) == [4242])
        #expect(query(directory, f, index: false).entries.map(\.uid) == [4242])
        for filter in filters(keys) + [f] {
            let indexed = query(directory, filter, index: true).entries.map(\.seq)
            #expect(indexed == query(directory, filter, index: false).entries.map(\.seq), "\(filter)")
            // The reference decodes every line: it differs only by the lines the literal cannot find.
            let needle = AuditMatcher(filter).needle.map { String(decoding: $0, as: UTF8.self) }
            let unfound = Set(text.split(separator: "\n").filter { line in
                var copy = String(line)
                return copy.withUTF8 { AuditFields.parse(UnsafeRawBufferPointer($0)) == nil } && needle.map(line.contains) == false
            }
                .compactMap { try? JSONDecoder().decode(AuditEntry.self, from: Data($0.utf8)).seq })
            #expect(indexed == reference(directory, filter).map(\.seq).filter { !unfound.contains($0) }, "\(filter)")
        }
        // Without a literal (every line looked at), they are found both ways.
        #expect(query(directory, AuditFilter(), index: true).entries.contains { $0.uid == 4244 })
        #expect(query(directory, AuditFilter(), index: false).entries.contains { $0.uid == 4244 })
    }

    @Test func aMissingDamagedOrStaleIndexIsNotUsedAndIsRebuilt() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let segments = AuditSegments.list(directory)
        for s in segments { try AuditIndex.build(directory: directory, segment: s) }
        #expect(segments.allSatisfy { AuditIndex.isCurrent(directory: directory, segment: $0) })

        // Deleted, cut short, garbage, and stale (the segment it describes changed under it).
        unlink(AuditIndex.path(directory, segments[0]))
        let cut = AuditIndex.path(directory, segments[1])
        truncate(cut, 50)
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: AuditIndex.path(directory, segments[2])))
        let seg3 = AuditSegments.path(directory, segments[3])
        var lines = try String(contentsOfFile: seg3, encoding: .utf8).split(separator: "\n").map(String.init)
        lines[0] = lines[0].replacingOccurrences(of: "\"seq\":", with: "\"seq\": ")
        try (lines.joined(separator: "\n") + "\n").write(toFile: seg3, atomically: false, encoding: .utf8)
        for s in segments.prefix(4) { #expect(!AuditIndex.isCurrent(directory: directory, segment: s)) }

        for filter in filters(keys) {
            let q = query(directory, filter, index: true)
            #expect(q.entries.map(\.seq) == reference(directory, filter).map(\.seq), "\(filter)")
            #expect(q.stats.indexed == segments.count - 4)
        }
        for s in segments.prefix(4) { try AuditIndex.build(directory: directory, segment: s) }
        #expect(segments.allSatisfy { AuditIndex.isCurrent(directory: directory, segment: $0) })
        #expect(query(directory, AuditFilter(), index: true).stats.indexed == segments.count)
    }

    @Test func aHostileIndexNeverCrashesAQueryNorAddsOrRepeatsARecord() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let segment = AuditSegments.list(directory)[1]
        try AuditIndex.build(directory: directory, segment: segment)
        let path = AuditIndex.path(directory, segment)
        let good = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        var rng = SystemRandomNumberGenerator()
        let checks = Array(filters(keys).prefix(12))
        for round in 0..<150 {
            var bytes = good
            // Past the header (whose hash check would refuse the index outright): keys, blocks, postings.
            for _ in 0..<(1 + round % 8) {
                let at = Int.random(in: AuditIndex.headerSize..<bytes.count, using: &rng)
                bytes[at] = UInt8.random(in: 0...255, using: &rng)
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            for filter in checks {
                let got = query(directory, filter, index: true).entries
                let all = Set(reference(directory, filter).map(\.seq))
                #expect(got.allSatisfy { filter.matches($0) && all.contains($0.seq) }, "round \(round): a record that does not match")
                #expect(Set(got.map(\.seq)).count == got.count, "round \(round): a record twice")
                #expect(got.map(\.seq) == got.map(\.seq).sorted(), "round \(round): out of order")
            }
        }
    }

    @Test func aForgedIndexNeverHidesARecordFromVerify() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let segments = AuditSegments.list(directory)
        // Someone edits a record of segment 2 and rebuilds its index to match: queries see the edit,
        // but verify never reads the index, and names the record.
        let path = AuditSegments.path(directory, segments[1])
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
        let victim = lines[2]
        lines[2] = victim.replacingOccurrences(of: "\"uid\":100", with: "\"uid\":900")
        #expect(lines[2] != victim)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        for s in segments { try AuditIndex.build(directory: directory, segment: s) }
        let report = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(!report.ok)
        #expect(report.problem?.seq == (try JSONDecoder().decode(AuditEntry.self, from: Data(victim.utf8))).seq)

        // An index with an entry removed hides the record from an indexed query: verify still counts it.
        let (vault2, keys2) = try mixedLog(dir, name: "second")
        let d2 = vault2.home.auditDirectory
        for s in AuditSegments.list(d2) { try AuditIndex.build(directory: d2, segment: s) }
        let idx = AuditIndex.path(d2, AuditSegments.list(d2)[0])
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: idx)))
        // Zero every posting count: the index now claims no record matches anything.
        let blocks = Int(bytes[60]) | Int(bytes[61]) << 8, keysCount = Int(bytes[64]) | Int(bytes[65]) << 8
        for k in 0..<keysCount { let at = AuditIndex.headerSize + blocks * AuditIndex.blockSize + k * AuditIndex.keySize + 12; bytes[at..<(at + 4)] = [0, 0, 0, 0] }
        try Data(bytes).write(to: URL(fileURLWithPath: idx))
        let full = AuditVerifier.verify(directory: d2, keys: keys2, publicKey: nil, checkpoint: try vault2.auditCheckpoint())
        #expect(full.ok && full.records == 400)
    }

    @Test func theWriterIndexesEachFinishedSegment() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        let log = try AuditLog.open(for: vault, options: options)
        for i in 1...60 { try log.appendAndWait(event(i, token: "tok-\(i % 4)"), secret: nil) }
        log.close()
        let directory = vault.home.auditDirectory
        let segments = AuditSegments.list(directory)
        #expect(segments.count >= 4)
        AuditLog.indexQueue.drain()
        for s in segments.dropLast() { #expect(AuditIndex.isCurrent(directory: directory, segment: s), "segment \(s)") }
        var f = AuditFilter()
        f.token = "tok-1"
        let q = query(directory, f, index: true)
        #expect(q.entries.count == 15 && q.stats.indexed == segments.count - 1)
    }

    /// Whether every one of `segments` has a current index within 15 s (the writer builds them once quiet).
    private func indexedWithin15s(_ segments: [Int], in directory: String) -> Bool {
        let deadline = Date().addingTimeInterval(15)
        func allIndexed() -> Bool { segments.allSatisfy { AuditIndex.isCurrent(directory: directory, segment: $0) } }
        while !allIndexed() && Date() < deadline {
            usleep(100_000)
            AuditLog.indexQueue.drain()
        }
        return allIndexed()
    }

    @Test func aBusyLogIndexesItsFinishedSegmentsOnceItIsQuiet() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        options.checkpointInterval = 3
        let log = try AuditLog.open(for: vault, options: options)
        defer { log.close() }
        let directory = vault.home.auditDirectory
        // Records milliseconds apart: segments finish, and none is indexed while they keep coming (checked at
        // once, not after waiting for the index thread, which other tests share).
        for i in 1...60 { try log.appendAndWait(event(i, token: "tok-\(i % 4)"), secret: nil) }
        let finished = Array(AuditSegments.list(directory).dropLast())
        #expect(finished.count >= 3)
        for s in finished { #expect(!AuditIndex.isCurrent(directory: directory, segment: s), "segment \(s) indexed while busy") }
        // A checkpoint interval without a record: every finished segment gets its index, the log still open.
        #expect(indexedWithin15s(finished, in: directory))
    }

    @Test func theSegmentsAStoppedWriterLeftWithoutAnIndexAreIndexedByTheNextDaemon() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        options.checkpointInterval = 0.3
        let first = try AuditLog.open(for: vault, options: options)
        for i in 1...60 { try first.appendAndWait(event(i, token: "tok-\(i % 4)"), secret: nil) }
        first.close()
        AuditLog.indexQueue.drain()
        // As if the writer had stopped before its last segments' builds ran.
        let directory = vault.home.auditDirectory
        let finished = Array(AuditSegments.list(directory).dropLast())
        #expect(finished.count >= 3)
        let lost = Array(finished.suffix(2))
        for s in lost { #expect(unlink(AuditIndex.path(directory, s)) == 0) }
        #expect(AuditLog.finishedWithoutIndex(directory, before: AuditSegments.list(directory).last!) == lost)

        // A CLI command's log leaves them alone; the daemon's builds them once quiet.
        let cli = try AuditLog.open(for: vault, options: options)
        cli.close()
        AuditLog.indexQueue.drain()
        for s in lost { #expect(!AuditIndex.isCurrent(directory: directory, segment: s)) }
        options.indexLeftBehind = true
        let daemon = try AuditLog.open(for: vault, options: options)
        defer { daemon.close() }
        #expect(indexedWithin15s(lost, in: directory))
    }

    @Test func theDaemonIndexesTheSegmentsACLICommandFinished() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        options.checkpointInterval = 0.3
        options.indexLeftBehind = true
        let daemon = try AuditLog.open(for: vault, options: options)
        defer { daemon.close() }
        try daemon.appendAndWait(event(0, token: "tok-0"), secret: nil)
        options.indexLeftBehind = false
        let cli = try AuditLog.open(for: vault, options: options)
        for i in 1...60 { try cli.appendAndWait(event(i, token: "tok-\(i % 4)"), secret: nil) }
        cli.close()
        AuditLog.indexQueue.drain()
        // As if the command had exited before its builds ran.
        let directory = vault.home.auditDirectory
        let finished = Array(AuditSegments.list(directory).dropLast())
        #expect(finished.count >= 3)
        for s in finished { _ = unlink(AuditIndex.path(directory, s)) }
        try daemon.appendAndWait(event(61, token: "tok-1"), secret: nil)  // the daemon catches up with the command's segments
        #expect(indexedWithin15s(finished, in: directory))
    }

    @Test func aSegmentThatHasWaitedItsDelayIsIndexedWhileTheLogIsBusy() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.segmentBytes = 4096
        options.checkpointInterval = 30  // never quiet during the test
        options.indexDelay = 0
        let log = try AuditLog.open(for: vault, options: options)
        defer { log.close() }
        for i in 1...60 { try log.appendAndWait(event(i, token: "tok-\(i % 4)"), secret: nil) }
        AuditLog.indexQueue.drain()
        let directory = vault.home.auditDirectory
        let finished = AuditSegments.list(directory).dropLast()
        #expect(finished.count >= 3)
        for s in finished { #expect(AuditIndex.isCurrent(directory: directory, segment: s), "segment \(s)") }
    }

    @Test func anIndexEndsOnTheLastWholeRecordHoweverMuchDamageFollowsIt() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        options.indexSegments = false
        let log = try AuditLog.open(for: vault, options: options)
        try log.appendAndWait(event(1, token: "only/one"), secret: nil)
        log.close()
        let directory = vault.home.auditDirectory
        let path = AuditSegments.path(directory, 1)
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let records = text.split(separator: "\n").count  // the record, and the checkpoint that signs it
        let whole = text.utf8.count
        // Behind the log's own lines: an empty line, a record cut short, and a line that is not a record.
        text += "\n" + #"{"seq":99,"time":"2026-12-01T00:00:00.000000Z","channel":"cli","action":"get","token":"x","outc"# + "\nnot json\n"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try AuditIndex.build(directory: directory, segment: 1)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let index = try #require(bytes.withUnsafeBytes { AuditIndex(directory: directory, segment: 1, segmentBytes: $0) })
        #expect(index.covered == whole && index.records == records)
        var f = AuditFilter()
        f.token = "only/one"
        #expect(query(directory, f, index: true).entries.map(\.seq) == query(directory, f, index: false).entries.map(\.seq))
        // Nothing whole at all: no index, and a query scans.
        try "garbage\n{\"seq\":1\n".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(try AuditIndex.build(directory: directory, segment: 1) == 0)
        #expect(!AuditIndex.isCurrent(directory: directory, segment: 1))
    }

    @Test func backgroundIndexingRunsInOrderAtTheIdlePriority() throws {
        let seen = Mutex<[(Int, Int32)]>([])
        for i in 0..<3 {
            AuditLog.indexQueue.async { seen.withLock { $0.append((i, sched_getscheduler(0))) } }
        }
        AuditLog.indexQueue.drain()
        let jobs = seen.withLock { $0 }
        #expect(jobs.map(\.0) == [0, 1, 2])
        #expect(jobs.allSatisfy { $0.1 == 5 }, "SCHED_IDLE is 5")
    }

    @Test func anIdleLogsCheckpointCatchesUpAndACutTailIsCaught() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        defer { log.close() }
        for i in 1...6 { try log.appendAndWait(event(i), secret: nil) }
        // Idle for a little over a second: the checkpoint must reach the end of the log by itself.
        var caughtUp = false
        for _ in 0..<40 where !caughtUp {
            usleep(50_000)
            caughtUp = (try vault.auditCheckpoint()?.seq ?? 0) >= log.status.seq && log.status.checkpointSeq == log.status.seq
        }
        let checkpointSeq = try vault.auditCheckpoint()?.seq
        #expect(caughtUp, "checkpoint at \(String(describing: checkpointSeq)), log at \(log.status.seq)")
        // Root cuts the last two records while the daemon idles: verify fails.
        let path = AuditSegments.path(vault.home.auditDirectory, 1)
        var l = lines(path)
        l.removeLast(3)
        write(l + [""], path)
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let report = AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(!report.ok && report.problem?.message.contains("truncated") == true, "\(String(describing: report.problem))")
    }

    @Test func aCheckpointThatFailsIsWrittenAgainWithoutNewRecords() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let attempts = Atomic<Int>(0)
        let saved = Mutex<Int64>(0)
        let log = try AuditLog(directory: vault.home.auditDirectory, keys: keys) { seq, _, _ in
            // The first two writes fail (a locked or full store): the third must come by itself.
            if attempts.add(1, ordering: .relaxed).newValue <= 2 { throw AuditWriteError(description: "store busy") }
            saved.withLock { $0 = seq }
        }
        defer { log.close() }
        for i in 1...3 { try log.appendAndWait(event(i), secret: nil) }
        var done = false
        for _ in 0..<80 where !done {
            usleep(50_000)
            done = saved.withLock { $0 } >= 3 && log.status.checkpointSeq >= 3
        }
        #expect(done, "attempts \(attempts.load(ordering: .relaxed)), saved \(saved.withLock { $0 })")
    }

    /// Records written without pause for `seconds`, then an idle spell: how often each sink was called while
    /// busy, and where each stands once idle.
    private func busyThenIdle(anchored: Bool, seconds: Double, anchorFails: Bool = false, firstStoreWriteTakes: useconds_t = 0)
        throws -> (anchorCalls: Int, storeCalls: Int, anchorSeq: Int64, storeSeq: Int64, last: Int64) {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home-\(anchored)"))
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let calls = Mutex<(anchor: Int, store: Int, anchorSeq: Int64, storeSeq: Int64)>((0, 0, 0, 0))
        var options = AuditLog.Options()
        options.checkpointInterval = 0.3
        options.busyStoreCheckpointInterval = 30
        let store: AuditLog.CheckpointSink = { seq, _, _ in
            // A store held by another process's long transaction, the first time.
            if calls.withLock({ $0.store += 1; return $0.store }) == 1 { usleep(firstStoreWriteTakes) }
            calls.withLock { $0.storeSeq = seq }
        }
        var anchor: AuditLog.CheckpointSink?
        if anchored {
            anchor = { seq, _, _ in
                calls.withLock { $0.anchor += 1 }
                if anchorFails { throw AuditWriteError(description: "keyring full") }
                calls.withLock { $0.anchorSeq = seq }
            }
        }
        let log = try AuditLog(directory: vault.home.auditDirectory, keys: keys, options: options, checkpoint: store, anchor: anchor)
        defer { log.close() }
        let end = Date().addingTimeInterval(seconds)
        var i = 0
        while Date() < end {
            i += 1
            try log.appendAndWait(event(i), secret: nil)
            usleep(5_000)
        }
        let busy = calls.withLock { $0 }
        // Idle: both reach the end (polled on the log's own view, which moves once each sink has returned).
        for _ in 0..<80 {
            let st = log.status
            if st.checkpointSeq == st.seq && (!anchored || anchorFails || st.anchorSeq == st.seq) { break }
            usleep(50_000)
        }
        let idle = calls.withLock { $0 }
        #expect(log.status.checkpointSeq == idle.storeSeq && (!anchored || anchorFails || log.status.anchorSeq == idle.anchorSeq))
        return (busy.anchor, busy.store, idle.anchorSeq, idle.storeSeq, log.status.seq)
    }

    /// With an anchor keeping the bound, a busy log moves the store's checkpoint (a commit that makes every
    /// reader of the store start afresh) only every `busyStoreCheckpointInterval`, and the anchor every
    /// `checkpointInterval`; idle, both reach the log's end.
    @Test func aBusyLogMovesTheAnchorEveryIntervalAndTheStoreRarely() throws {
        let r = try busyThenIdle(anchored: true, seconds: 2.0)
        // Two seconds at a 0.3 s interval: the anchor about six times; the store once at the start, and once
        // more at most should the test thread stall past an interval (the log then counts as idle).
        #expect(r.anchorCalls >= 3, "anchor moved \(r.anchorCalls) times in two busy seconds")
        #expect(r.storeCalls <= 2, "the store's checkpoint moved \(r.storeCalls) times in two busy seconds")
        #expect(r.anchorSeq == r.last && r.storeSeq == r.last, "idle: anchor \(r.anchorSeq), store \(r.storeSeq), log \(r.last)")
    }

    /// An anchor that cannot be written leaves the bound to the store, which then moves every interval.
    @Test func whileTheAnchorFailsTheStoreKeepsTheInterval() throws {
        let r = try busyThenIdle(anchored: true, seconds: 2.0, anchorFails: true)
        #expect(r.anchorCalls >= 3, "the failing anchor was tried \(r.anchorCalls) times")
        #expect(r.storeCalls >= 3, "the store's checkpoint moved \(r.storeCalls) times in two busy seconds")
        #expect(r.storeSeq == r.last)
    }

    /// A store write that takes its time (another process's long transaction) does not hold the anchor back.
    @Test func aSlowStoreWriteDoesNotHoldTheAnchorBack() throws {
        let r = try busyThenIdle(anchored: true, seconds: 2.0, firstStoreWriteTakes: 1_800_000)
        // About seven times at a 0.3 s interval; queued behind the store's write it would be twice.
        #expect(r.anchorCalls >= 4, "anchor moved \(r.anchorCalls) times while the store's first write took 1.8 s")
        #expect(r.anchorSeq == r.last && r.storeSeq == r.last)
    }

    /// Without an anchor, the store's checkpoint is the only one, and keeps the `checkpointInterval` bound.
    @Test func withoutAnAnchorTheStoreCheckpointKeepsTheInterval() throws {
        let r = try busyThenIdle(anchored: false, seconds: 2.0)
        #expect(r.anchorCalls == 0)
        #expect(r.storeCalls >= 3, "the store's checkpoint moved \(r.storeCalls) times in two busy seconds")
        #expect(r.storeSeq == r.last)
    }

    @Test func theSecondSinkSendsEveryRecordAsAJournalEntry() throws {
        let path = dir.path + "/journal.sock"
        let server = try DatagramServer(path: path)
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        var options = AuditLog.Options()
        let forwarder = AuditForwarder(path: path, kind: .journal)
        options.forwarder = forwarder
        let log = try AuditLog.open(for: vault, options: options)
        for i in 1...20 { try log.appendAndWait(event(i), secret: nil) }
        var got: [String] = []
        for _ in 0..<100 where got.count < 20 { got += server.receiveAll(); usleep(20_000) }
        log.close()
        forwarder.close()
        #expect(got.count >= 20)
        let first = got.first { $0.contains("\"request_id\":\"1\"") } ?? ""
        #expect(first.hasPrefix("MESSAGE={\"seq\":") && first.contains("\nSYSLOG_IDENTIFIER=tokenvault\n") && first.contains("\nTOKENVAULT_SEQ="))
        #expect(got.contains { $0.contains("\"outcome\":\"denied\"") && $0.contains("PRIORITY=5") })
        #expect(forwarder.counters.dropped == 0)
    }

    @Test func withTheSocketAbsentOrFullReadsAreServedAndDropsCounted() throws {
        for mode in ["absent", "full"] {
            let path = dir.path + "/\(mode).sock"
            let server = mode == "full" ? try DatagramServer(path: path, receiveBuffer: 4096) : nil
            let vault = try Vault.create(home: VaultHome(root: dir.path + "/home-\(mode)"))
            var options = AuditLog.Options()
            let forwarder = AuditForwarder(path: path, kind: .syslog, maxQueued: 1000)
            options.forwarder = forwarder
            let log = try AuditLog.open(for: vault, options: options)
            let started = Date()
            let done = DispatchSemaphore(value: 0)
            let failures = Atomic<Int>(0)
            for i in 1...5000 {
                log.append(event(i), secret: nil) { r in
                    if case .failure = r { failures.add(1, ordering: .relaxed) }
                    done.signal()
                }
            }
            for _ in 1...5000 { done.wait() }
            let seconds = Date().timeIntervalSince(started)
            log.close()
            forwarder.close()
            usleep(200_000)
            #expect(failures.load(ordering: .relaxed) == 0, "every record written (\(mode))")
            #expect(seconds < 20, "never blocked on the socket (\(mode): \(seconds) s)")
            let c = forwarder.counters
            #expect(c.dropped > 0, "\(mode): drops are counted")
            if mode == "absent" { #expect(c.sent == 0) }
            #expect(log.status.forwardDropped == c.dropped)
            withExtendedLifetime(server) {}
        }
    }
}

/// A Unix datagram socket standing in for journald or syslogd (optionally never read, to fill up).
final class DatagramServer {
    let fd: Int32

    init(path: String, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard ok else { throw AuditWriteError(description: "bind \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    /// Every datagram waiting now.
    func receiveAll() -> [String] {
        var out: [String] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            guard n > 0 else { return out }
            out.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
    }
}

/// Collects witness statements in memory (a stand-in for the place off the host).
final class CollectingWitness: AuditWitnessSink, @unchecked Sendable {
    let statements = Mutex<[AuditWitnessStatement]>([])
    func offer(_ statement: AuditWitnessStatement) { statements.withLock { $0.append(statement) } }
    func file(_ path: String, extra: [String] = []) {
        let lines = statements.withLock { $0.map(\.line) } + extra
        try! (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}

@Suite("Audit witnesses: statements off the host catch a rewritten log")
struct AuditWitnessTests {
    let dir = TempDir()

    func witnessedLog(count: Int) throws -> (Vault, AuditKeys, CollectingWitness) {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let witness = CollectingWitness()
        var options = AuditLog.Options()
        options.witnesses = [witness]
        options.host = "ads-worker-3"
        let log = try AuditLog.open(for: vault, options: options)
        for i in 1...count { try log.appendAndWait(event(i, token: "tok-\(i)"), secret: nil) }
        log.close()
        return (vault, AuditKeys(auditKey: try vault.auditKey()), witness)
    }

    @Test func everySignedRecordIsWitnessedAndTheStatementsVerify() throws {
        let (vault, keys, witness) = try witnessedLog(count: 8)
        let statements = witness.statements.withLock { $0 }
        #expect(statements.count >= 8, "records written one at a time are each signed")
        #expect(statements.map(\.seq) == statements.map(\.seq).sorted() && statements.allSatisfy { $0.host == "ads-worker-3" })
        let line = statements[0].line
        #expect(line.hasPrefix("{\"witness\":\"tokenvault-audit-v1\",\"host\":\"ads-worker-3\",\"seq\":1,\"time\":\""))
        #expect(try JSONDecoder().decode(AuditWitnessStatement.self, from: Data(line.utf8)) == statements[0])
        let file = dir.path + "/witness.jsonl"
        // Other journal output around the statements, and a syslog prefix, are skipped.
        witness.file(file, extra: ["-- Boot 1 --", "Dec 03 08:00:00 host tokenvault[42]: " + statements[2].line])
        let r = AuditWitnessCheck.check(directory: vault.home.auditDirectory, witnessFile: file, publicKey: keys.publicKey)
        #expect(r.ok && r.matchedThrough == statements.last!.seq, "\(String(describing: r.problem))")
    }

    @Test func aLogRewrittenWithTheVaultsOwnKeyIsCaughtAtTheFirstChangedStatement() throws {
        let (vault, keys, witness) = try witnessedLog(count: 10)
        let file = dir.path + "/witness.jsonl"
        witness.file(file)
        // Root, holding the audit key, keeps the first four records and writes a different history after them:
        // a log that passes verify on its own (chain, MACs, signatures all made with the right key).
        let directory = vault.home.auditDirectory
        let path = AuditSegments.path(directory, 1)
        let kept = lines(path).prefix(4)
        write(Array(kept) + [""], path)
        let forger = try AuditLog(directory: directory, keys: keys)
        for i in 5...12 { try forger.appendAndWait(event(i, token: "innocent-\(i)"), secret: nil) }
        forger.close()
        #expect(AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: nil).ok, "the rewrite is self-consistent")
        let r = AuditWitnessCheck.check(directory: directory, witnessFile: file, publicKey: keys.publicKey)
        #expect(!r.ok)
        #expect(r.problem?.seq == 5, "\(String(describing: r.problem))")
        #expect(r.problem?.message.contains("no longer matches") == true && r.problem?.message.contains("after seq 4") == true)
        #expect(r.matchedThrough == 4)

        // Cut instead of rewritten: the statements beyond the end say so.
        write(Array(kept) + [""], path)
        let cut = AuditWitnessCheck.check(directory: directory, witnessFile: file, publicKey: keys.publicKey)
        #expect(cut.problem?.seq == 5 && cut.problem?.message.contains("records were cut") == true, "\(String(describing: cut.problem))")
    }

    @Test func aForgedOrForeignStatementIsRefused() throws {
        let (vault, keys, witness) = try witnessedLog(count: 3)
        var forged = witness.statements.withLock { $0[1] }
        forged.hash = String(repeating: "ab", count: 32)
        let file = dir.path + "/witness.jsonl"
        witness.file(file, extra: [forged.line])
        let r = AuditWitnessCheck.check(directory: vault.home.auditDirectory, witnessFile: file, publicKey: keys.publicKey)
        #expect(r.problem?.message.contains("signature does not verify") == true)
        let other = AuditKeys(auditKey: SecureKey.random())
        witness.file(file)
        #expect(!AuditWitnessCheck.check(directory: vault.home.auditDirectory, witnessFile: file, publicKey: other.publicKey).ok)
        try "nothing here\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(AuditWitnessCheck.check(directory: vault.home.auditDirectory, witnessFile: file, publicKey: keys.publicKey).problem?
            .message.contains("no witness statements") == true)
    }

    @Test func theWitnessCommandGetsEachStatementOnStdin() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let collected = dir.path + "/collected.jsonl"
        let command = AuditWitnessCommand(command: "cat >> '\(collected)'")
        var options = AuditLog.Options()
        options.witnesses = [command]
        let log = try AuditLog.open(for: vault, options: options)
        for i in 1...5 { try log.appendAndWait(event(i), secret: nil) }
        log.close()
        command.flush()
        #expect(command.counters.sent >= 1 && command.counters.failed == 0)
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let r = AuditWitnessCheck.check(directory: vault.home.auditDirectory, witnessFile: collected, publicKey: keys.publicKey)
        #expect(r.ok && r.matchedThrough == 5, "coalesced, but the newest statement always arrives: \(String(describing: r.problem))")

        let failing = AuditWitnessCommand(command: "exit 3")
        failing.offer(AuditWitnessStatement(host: "h", seq: 1, time: "t", hash: "00", sig: "00"))
        failing.flush()
        #expect(failing.counters.failed == 1 && failing.counters.lastError?.contains("exited 3") == true)
    }
}

@Suite("Audit retention: prune with a signed record")
struct AuditPruneTests {
    let dir = TempDir()

    /// 400 records over three days (2025-11-24 to 27) in segments of 8 KiB, and a writer to add to it.
    func prunable() throws -> (Vault, AuditKeys, String) {
        let (vault, keys) = try mixedLog(dir)
        return (vault, keys, vault.home.auditDirectory)
    }

    func verify(_ vault: Vault, _ keys: AuditKeys) throws -> AuditVerifier.Report {
        AuditVerifier.verify(directory: vault.home.auditDirectory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
    }

    @Test func pruneThenVerifyPassesAndReportsThePrunedRange() throws {
        let (vault, keys, directory) = try prunable()
        let before = AuditSegments.list(directory)
        let cutoff = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 200 * 600) * 1_000_000)
        let plan = try #require(try AuditPrune.plan(directory: directory, before: cutoff))
        #expect(plan.fromSegment == 1 && plan.throughSegment >= 2 && plan.firstSeq == 1)
        let log = try AuditLog.open(for: vault)
        try AuditPrune.prune(plan, directory: directory, log: log, actor: actor)
        log.close()
        let after = AuditSegments.list(directory)
        #expect(after.first == plan.throughSegment + 1 && after.last == before.last)
        let report = try verify(vault, keys)
        #expect(report.ok && report.prunedThrough == plan.lastSeq && report.firstSeq == plan.lastSeq + 1, "\(String(describing: report.problem))")
        #expect(AuditVerifier.verify(directory: directory, keys: nil, publicKey: keys.publicKey, checkpoint: nil).ok, "with the public key alone too")
        // Queries see what remains, and the prune record itself.
        let remaining = AuditQuery.entries(directory: directory)
        #expect(remaining.first?.seq == plan.lastSeq + 1)
        var f = AuditFilter()
        f.action = "audit_prune"
        #expect(AuditQuery.entries(directory: directory, filter: f).first?.reason == plan.reason)
        // A second prune later carries on from the first.
        let cutoff2 = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 330 * 600) * 1_000_000)
        if let plan2 = try AuditPrune.plan(directory: directory, before: cutoff2) {
            #expect(plan2.fromSegment == plan.throughSegment + 1 && plan2.firstSeq == plan.lastSeq + 1)
            let log2 = try AuditLog.open(for: vault)
            try AuditPrune.prune(plan2, directory: directory, log: log2, actor: actor)
            log2.close()
            #expect(try verify(vault, keys).prunedThrough == plan2.lastSeq)
        }
        #expect(try AuditPrune.plan(directory: directory, before: "2000-01-01T00:00:00.000000Z") == nil)
    }

    @Test func aPruneCutShortStillVerifiesAndIsFinishedByTheNextOne() throws {
        let (vault, keys, directory) = try prunable()
        let cutoff = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 250 * 600) * 1_000_000)
        let plan = try #require(try AuditPrune.plan(directory: directory, before: cutoff))
        #expect(plan.throughSegment >= plan.fromSegment + 2)
        // The record is durable, then the process dies after removing only the first segment.
        let log = try AuditLog.open(for: vault)
        try log.appendAndWait(AuditEvent(action: AuditPruneRecord.action, channel: .cli, actor: actor, outcome: .granted, reason: plan.reason),
                              secret: nil)
        log.close()
        unlink(AuditSegments.path(directory, plan.fromSegment))
        let cut = try verify(vault, keys)
        #expect(cut.ok && cut.prunedThrough == plan.lastSeq, "\(String(describing: cut.problem))")
        #expect(cut.pruneLeftovers == (plan.fromSegment + 1)...plan.throughSegment)
        let interrupted = try #require(AuditPrune.interrupted(directory: directory))
        #expect(interrupted.record == plan && interrupted.left == (plan.fromSegment + 1)...plan.throughSegment)
        #expect(try AuditPrune.finishInterrupted(directory: directory) == plan)
        #expect(AuditSegments.list(directory).first == plan.throughSegment + 1)
        let done = try verify(vault, keys)
        #expect(done.ok && done.pruneLeftovers == nil && done.prunedThrough == plan.lastSeq, "\(String(describing: done.problem))")
        #expect(AuditPrune.interrupted(directory: directory) == nil)
        #expect(try AuditPrune.finishInterrupted(directory: directory) == nil)
        // A segment past the record's range deleted by hand is still a deletion.
        unlink(AuditSegments.path(directory, plan.throughSegment + 1))
        #expect(!(try verify(vault, keys).ok))
    }

    @Test func segmentsRemovedWithoutAPruneRecordFail() throws {
        let (vault, keys, directory) = try prunable()
        unlink(AuditSegments.path(directory, 1))
        unlink(AuditSegments.path(directory, 2))
        let report = try verify(vault, keys)
        #expect(!report.ok && report.problem?.message.contains("segment missing") == true && report.problem?.message.contains("no signed prune record") == true)
    }

    @Test func aForgedOrEditedPruneRecordFails() throws {
        // Edited: the prune record's text changed after it was written (its hash and MAC no longer match).
        do {
            let (vault, keys, directory) = try prunable()
            let cutoff = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 200 * 600) * 1_000_000)
            let plan = try #require(try AuditPrune.plan(directory: directory, before: cutoff))
            let log = try AuditLog.open(for: vault)
            try AuditPrune.prune(plan, directory: directory, log: log, actor: actor)
            log.close()
            let last = AuditSegments.path(directory, AuditSegments.list(directory).last!)
            let text = try String(contentsOfFile: last, encoding: .utf8)
            let edited = text.replacingOccurrences(of: "removed segments 1–\(plan.throughSegment): seq 1–\(plan.lastSeq)",
                                                   with: "removed segments 1–\(plan.throughSegment): seq 1–\(plan.lastSeq + 5)")
            #expect(edited != text)
            try edited.write(toFile: last, atomically: false, encoding: .utf8)
            #expect(!(try verify(vault, keys).ok))
        }
        // Forged by someone holding the key: a prune record whose last hash is not what the removed
        // segments ended with. The first remaining record does not chain from it.
        let other = TempDir()
        let (vault, keys) = try mixedLog(other)
        let directory = vault.home.auditDirectory
        let cutoff = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 200 * 600) * 1_000_000)
        var plan = try #require(try AuditPrune.plan(directory: directory, before: cutoff))
        plan.lastHash = String(repeating: "0", count: 64)
        let log = try AuditLog.open(for: vault)
        try AuditPrune.prune(plan, directory: directory, log: log, actor: actor)
        log.close()
        let report = try verify(vault, keys)
        #expect(!report.ok && report.problem?.seq == plan.lastSeq + 1, "\(String(describing: report.problem))")
        withExtendedLifetime(other) {}
    }
}

@Suite("Audit compression: old segments gzip'd, read as they are")
struct AuditCompressTests {
    let dir = TempDir()

    @Test func compressedSegmentsVerifyQueryIndexAndCarryOn() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let segments = AuditSegments.list(directory)
        let before = AuditQuery.entries(directory: directory)
        let sizeBefore = segments.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: AuditSegments.path(directory, $1))[.size] as? Int) ?? 0) }
        for s in segments.dropLast() {
            try AuditIndex.build(directory: directory, segment: s)
            _ = try AuditSegments.compress(directory: directory, segment: s)
            #expect(AuditSegments.isCompressed(directory, s) && access(AuditSegments.path(directory, s), F_OK) != 0)
        }
        #expect(AuditSegments.list(directory) == segments)
        // zcat of a compressed segment is the original bytes: other tools read it too.
        let zcat = try runProcess("/bin/sh", ["-c", "zcat '\(AuditSegments.compressedPath(directory, segments[0]))' | head -c 7"])
        #expect(zcat.stdout == "{\"seq\":")

        let report = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(report.ok && report.records == 400, "\(String(describing: report.problem))")
        #expect(AuditQuery.entries(directory: directory) == before)
        var f = AuditFilter()
        f.token = "tok-7"
        var indexed = 0
        let stats = AuditQuery.each(directory: directory, filter: f) { _ in indexed += 1 }
        #expect(stats.indexed == segments.count - 1 && indexed == before.filter { $0.token == "tok-7" }.count)

        // The writer carries on after compressed segments; the chain runs on across them.
        let log = try AuditLog.open(for: vault)
        try log.appendAndWait(event(1), secret: nil)
        log.close()
        #expect(AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint()).ok)
        let sizeAfter = AuditSegments.list(directory).reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: AuditSegments.file(directory, $1))[.size] as? Int) ?? 0) }
        #expect(sizeAfter < sizeBefore / 2, "\(sizeAfter) of \(sizeBefore) bytes")

        // A damaged compressed segment fails verify (it cannot be read back), naming it.
        let gz = AuditSegments.compressedPath(directory, segments[1])
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: gz)))
        bytes[bytes.count / 2] ^= 0xff
        try Data(bytes).write(to: URL(fileURLWithPath: gz))
        let damaged = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(!damaged.ok && damaged.problem?.file.hasSuffix(".jsonl.gz") == true, "\(String(describing: damaged.problem))")
    }

    @Test func aNewestSegmentThatWasCompressedIsNeverWrittenAgain() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let log = try AuditLog.open(for: vault)
        for i in 1...5 { try log.appendAndWait(event(i), secret: nil) }
        log.close()
        let directory = vault.home.auditDirectory
        _ = try AuditSegments.compress(directory: directory, segment: 1)
        let again = try AuditLog.open(for: vault)
        try again.appendAndWait(event(6), secret: nil)
        again.close()
        #expect(AuditSegments.list(directory) == [1, 2] && AuditSegments.isCompressed(directory, 1) && !AuditSegments.isCompressed(directory, 2))
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let report = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(report.ok && report.lastSeq == 6, "\(String(describing: report.problem))")
    }

    /// A daemon with large segments and a CLI writer with small ones share a log: once the CLI starts a
    /// newer segment, `audit compress` may take the one the daemon still has open. The daemon carries on in
    /// the newer segment (not fail closed), and a reopen (SIGHUP) never creates a plain file beside the `.gz`.
    @Test func aSegmentCompressedUnderAnotherWriterIsLeftForTheNewerOne() throws {
        let vault = try Vault.create(home: VaultHome(root: dir.path + "/home"))
        let directory = vault.home.auditDirectory
        var big = AuditLog.Options()
        big.segmentBytes = 1 << 30
        big.indexSegments = false
        var small = AuditLog.Options()
        small.segmentBytes = 4096
        small.indexSegments = false
        let daemon = try AuditLog.open(for: vault, options: big)
        for i in 1...5 { try daemon.appendAndWait(event(i), secret: nil) }
        let cli = try AuditLog.open(for: vault, options: small)
        for i in 6...40 { try cli.appendAndWait(event(i), secret: nil) }
        cli.close()
        let segments = AuditSegments.list(directory)
        #expect(segments.count >= 2)
        for s in segments.dropLast() { _ = try AuditSegments.compress(directory: directory, segment: s) }
        try daemon.appendAndWait(event(41), secret: nil)
        daemon.reopen()
        try daemon.appendAndWait(event(42), secret: nil)
        daemon.close()
        for s in AuditSegments.list(directory) where AuditSegments.isCompressed(directory, s) {
            #expect(access(AuditSegments.path(directory, s), F_OK) != 0, "no plain file beside \(s).gz")
        }
        let keys = AuditKeys(auditKey: try vault.auditKey())
        let report = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        #expect(report.ok && report.lastSeq >= 42, "\(String(describing: report.problem))")
        #expect(AuditQuery.entries(directory: directory).count == Int(report.lastSeq))
    }

    @Test func gzipRoundTripsAndRefusesDamage() throws {
        for size in [0, 1, 100, 1 << 20] {
            let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7 / 3) }
            let packed = try data.withUnsafeBytes { try Gzip.compress($0) }
            #expect(try packed.withUnsafeBytes { try Gzip.decompress($0) } == data)
        }
        let packed = try Array("hello".utf8).withUnsafeBytes { try Gzip.compress($0) }
        #expect(throws: (any Error).self) { try Array(packed.prefix(packed.count - 6)).withUnsafeBytes { try Gzip.decompress($0) } }
        // Through zlib a small step at a time, as a segment over 4 GiB (zlib's 32-bit counts) goes.
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        let stepped = try big.withUnsafeBytes { try Gzip.compress($0, step: 4096) }
        #expect(try stepped.withUnsafeBytes { try Gzip.decompress($0, step: 1000) } == big)
        #expect(try stepped.withUnsafeBytes { try Gzip.decompress($0) } == big)
        // A file that expands past the limit (a bomb) is refused, not inflated into all memory.
        let zeros = try [UInt8](repeating: 0, count: 8 << 20).withUnsafeBytes { try Gzip.compress($0) }
        #expect(zeros.count < 64 << 10)
        #expect(throws: Gzip.Failure.self) { try zeros.withUnsafeBytes { try Gzip.decompress($0, limit: 1 << 20) } }
    }
}

@Suite("The report counts records in place exactly as from decoded entries")
struct AuditReportBuilderTests {
    let dir = TempDir()

    @Test func inPlaceAndDecodedRecordsGiveTheSameReport() throws {
        let (vault, keys) = try mixedLog(dir)
        let directory = vault.home.auditDirectory
        let verification = AuditVerifier.verify(directory: directory, keys: keys, publicKey: nil, checkpoint: try vault.auditCheckpoint())
        let mid = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 150 * 600) * 1_000_000)
        let late = AuditRecordFormat.formatTime(micros: Int64(1_764_000_000 + 333 * 600) * 1_000_000)
        let context = AuditReport.Context(host: "h", vault: "v", tokens: ["acme/ads", "never/read"], policyReaders: ["acme/ads": ["uid 1000"]])
        for (since, until) in [(nil, nil), (mid, nil), (nil, late), (mid, late)] as [(String?, String?)] {
            var fast = AuditReport.Builder(since: since, until: until)
            AuditQuery.each(directory: directory, filter: AuditFilter()) { fast.add($0) }
            let all = AuditQuery.entries(directory: directory)
            let decoded = AuditReport.data(entries: all, verification: verification, context: context, since: since, until: until)
            let inPlace = fast.finish(verification: verification, context: context)
            #expect(inPlace == decoded, "period \(since ?? "-")…\(until ?? "-")")

            // The figures, counted the plain way.
            let period = all.filter { e in since.map { e.time >= $0 } ?? true && until.map { e.time < $0 } ?? true }
            let reads = period.filter { AuditReport.reads.contains($0.action) && $0.outcome == "granted" }
            #expect(inPlace.records == period.count)
            #expect(inPlace.readsPerToken.values.reduce(0, +) == reads.count)
            #expect(inPlace.readsPerToken["acme/ads"] ?? 0 == reads.filter { $0.token == "acme/ads" }.count)
            #expect(inPlace.readsPerToken["(list)"] ?? 0 == reads.filter { $0.token == nil }.count)
            #expect(inPlace.readsPerToken["acme/\"quoted\""] ?? 0 == reads.filter { $0.token == "acme/\"quoted\"" }.count)
            #expect(inPlace.readsPerCaller.count == Set(reads.map { "\($0.uid) \($0.exe ?? "")" }).count)
            let refused = period.filter { AuditReport.reads.contains($0.action) && $0.outcome != "granted" }
            #expect(inPlace.refusals.map(\.count).reduce(0, +) == refused.count)
            #expect(inPlace.refusalsPerDay.values.reduce(0, +) == refused.count)
            #expect(inPlace.neverRead == ["never/read"])
            if since != nil {
                let before = Set(all.filter { $0.time < since! && AuditReport.reads.contains($0.action) && $0.outcome == "granted" }
                    .map { "\($0.uid) \($0.exe ?? "")" })
                let new = Set(reads.map { "\($0.uid) \($0.exe ?? "")" }).subtracting(before)
                #expect(inPlace.newReaders.count == new.count)
            }
        }
    }
}
