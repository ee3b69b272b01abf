import Foundation
import Metrics
import VaultCore
import VaultCrypto
import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// Why an audit record could not be made durable. The read it was for is refused.
public struct AuditWriteError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// The audit log writer: JSON Lines segments under `<home>/audit/`, each record chained to the previous
/// one (hash and MAC), made durable by **group commit** before anyone is told it was written.
///
/// `append` may be called from any thread. One flusher thread takes every pending record, writes them
/// with one `write`, calls `fdatasync` once, and only then completes their callbacks — so many
/// concurrent reads share one flush. A failed write or flush fails that batch (the caller discloses
/// nothing), truncates the partial write away, and the next batch simply tries again: recovery needs
/// no restart. Several processes (the daemon and CLI commands) may append to the same log: each batch is
/// written under an exclusive `flock`, after re-reading the tail if someone else wrote meanwhile.
public final class AuditLog: AuditSink, @unchecked Sendable {
    public struct Options: Sendable {
        public var segmentBytes: Int = 64 * 1024 * 1024
        /// How often a record carries an Ed25519 signature, and the checkpoint moves (the anchor's, or with
        /// no anchor the store's).
        public var checkpointInterval: Double = 1.0
        /// How often the store's checkpoint moves while records keep coming, when an anchor keeps the
        /// `checkpointInterval` bound. Each store checkpoint is a commit, and a commit makes every reader
        /// of the store start afresh (SQLite drops its memory map of the file and the loops their
        /// remembered rows): once in ten seconds instead of every second. Idle, and at close, the store's
        /// checkpoint catches up within `checkpointInterval` as before.
        public var busyStoreCheckpointInterval: Double = 10.0
        /// Records per flush at most. 1 turns group commit off (one fdatasync per record): for benchmarks.
        public var maxBatch = Int.max
        /// Whether a segment's index (``AuditIndex``) is built, off the flusher, once the log has moved on
        /// to the next segment (and is quiet, or the segment has waited ``indexDelay``).
        public var indexSegments = true
        /// How long a finished segment's index may wait for the log to go quiet (no record for a
        /// `checkpointInterval`): the index is built then, or once the segment has waited this long, so
        /// a burst of reads never shares the machine with an index build (it cost a busy daemon 5-6 % of
        /// its reads on two cores) while a log busy for hours still gets every index within the bound.
        public var indexDelay: Double = 60
        /// Whether the finished segments a stopped writer left without an index (``finishedWithoutIndex``),
        /// and those another writer finishes while this log runs, are indexed too, once quiet. For the
        /// daemon: a CLI command exits before such a build would end.
        public var indexLeftBehind = false
        /// The second sink (journal or syslog), sent every durable batch, best effort; nil for none.
        public var forwarder: AuditForwarder?
        /// Given a statement (``AuditWitnessStatement``) each time a signed record is durable.
        public var witnesses: [any AuditWitnessSink] = []
        /// This host's name in witness statements.
        public var host = "local"
        /// Run on the flusher thread before it takes its first record (the daemon keeps the flusher on a
        /// CPU of its own with it: ``ThreadPlacement`` in VaultDaemon).
        public var onFlusherStart: (@Sendable () -> Void)?
        public init() {}
    }

    public typealias CheckpointSink = @Sendable (_ seq: Int64, _ hash: [UInt8], _ mac: [UInt8]) throws -> Void

    /// A record waiting for the flusher, which formats it straight into the batch it writes (the daemon's
    /// event loop is its busiest thread, so the record's text is made on the flusher's).
    private struct Pending {
        let event: AuditEvent
        /// When the event happened, taken by the caller.
        let timeMicros: Int64
        let tokenHMAC: [UInt8]?
        /// The token, when the caller left `token_hmac` to the flusher (hashed there, off the event loop).
        let secret: SecretBytes?
        let completion: @Sendable (Result<Void, any Error>) -> Void
    }

    public let directory: String
    let keys: AuditKeys
    let options: Options
    private let checkpoint: CheckpointSink?
    private let anchor: CheckpointSink?
    private let checkpointQueue = DispatchQueue(label: "tokenvault-audit-checkpoint")
    /// The anchor's own queue: a store write that waits (another process's long transaction, a slow
    /// database) never holds the anchor, the one-second bound, back.
    private let anchorQueue = DispatchQueue(label: "tokenvault-audit-anchor")

    // Shared with appenders, under `mutex`.
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var pending: [Pending] = []
    private var stopping = false
    private var reopenRequested = false
    private var flusherDone = false
    private var stats = (batches: 0, records: 0)
    /// The last `flushTimes.count` flushes (write and fdatasync of one batch), in µs, for `status`.
    private var flushTimes = [UInt32](repeating: 0, count: 1024)
    private var flushCount = 0
    /// `tokenvault_audit_flush_seconds` and `tokenvault_audit_records_total` (no-ops without a metrics backend).
    private let flushTimer = Metrics.Timer(label: "tokenvault_audit_flush_seconds")
    private let recordsMetric = Counter(label: "tokenvault_audit_records_total")
    /// The last durable seq, as the flusher last published it (read under `mutex`).
    private var durableSeq: Int64 = 0

    // The flusher's own state (and `open`'s, before the flusher starts).
    private var fd: Int32 = -1
    private var lockFd: Int32 = -1
    private var segment = 1
    private var endOffset: off_t = 0
    private var lastSeq: Int64 = 0
    private var lastHash = AuditRecordFormat.genesisHash
    /// Whether the log's last record carries a signature. When not, an idle checkpoint interval, or
    /// close, appends a signed `audit_checkpoint` record: a log at rest always ends signed.
    private var lastSigned = true
    private var lastSignature = 0.0
    /// Finished segments whose index waits for a quiet log (``Options/indexDelay``), oldest first, with
    /// when each was finished. The flusher's own: only its thread reads or changes it.
    private var unindexed: [(segment: Int, finished: Double)] = []
    private var lastCheckpoint = 0.0
    private var lastAnchor = 0.0
    /// The seq the store's checkpoint last accepted (under `mutex`); a checkpoint write is in flight while
    /// `checkpointPending`. A failed write leaves it behind, and the flusher tries again a second later.
    private var checkpointedSeq: Int64 = 0
    private var checkpointPending = false
    /// The same for the anchor.
    private var anchoredSeq: Int64 = 0
    private var anchorPending = false
    /// Whether the last write of each failed (under `mutex`). While the anchor fails, the store's checkpoint
    /// keeps the one-second bound; a failed store write is retried a second later, busy or not.
    private var anchorFailing = false
    private var checkpointFailing = false
    /// The seq of the log's last record when it was opened (0 for an empty log).
    public private(set) var lastSeqAtOpen: Int64 = 0

    /// Opens (creating if needed) the log in `directory` and starts its flusher.
    ///
    /// `checkpoint` keeps the store's copy of the log's end, `anchor` a second copy elsewhere (the
    /// keyring's, ``AuditAnchor``). With an anchor, the anchor moves every `checkpointInterval` and the
    /// store every `busyStoreCheckpointInterval` while busy; without one, the store every `checkpointInterval`.
    /// Idle or closing, both catch up.
    public init(directory: String, keys: AuditKeys, options: Options = Options(), checkpoint: CheckpointSink? = nil,
                anchor: CheckpointSink? = nil) throws {
        self.directory = directory
        self.keys = keys
        self.options = options
        self.checkpoint = checkpoint
        self.anchor = anchor
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw AuditWriteError(description: "cannot create the audit directory \(directory): \(String(cString: strerror(errno)))")
        }
        lockFd = Glibc.open(directory + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lockFd >= 0 else {
            throw AuditWriteError(description: "cannot open \(directory)/.lock: \(String(cString: strerror(errno)))")
        }
        try withFileLock {
            // A newest segment that only exists compressed is finished: the log carries on in the next one.
            segment = 1
            segment = writableSegment()
            try openSegment(segment)
            try repairAndReadTail()
        }
        lastSeqAtOpen = lastSeq
        if options.indexSegments && options.indexLeftBehind { unindexed = AuditLog.finishedWithoutIndex(directory, before: segment).map { ($0, Date().timeIntervalSince1970) } }
        // The flusher keeps the log alive until close() lets it finish: no thread waits on a freed condition variable.
        let t = Thread {
            tv_set_thread_name("tv-audit-flush")
            self.options.onFlusherStart?()
            self.flusherLoop()
        }
        t.start()
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
        if lockFd >= 0 { Glibc.close(lockFd) }
        pthread_cond_destroy(&wake)
        pthread_mutex_destroy(&mutex)
    }

    /// Flushes what is pending, signs and checkpoints the end of the log, and stops the flusher.
    public func close() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_broadcast(&wake)
        while !flusherDone { pthread_cond_wait(&wake, &mutex) }
        pthread_mutex_unlock(&mutex)
        checkpointQueue.sync {}  // the last checkpoints are written before close returns
        anchorQueue.sync {}
    }

    /// Re-opens the current segment by name before the next batch (SIGHUP, for external rotation tools
    /// that moved the file away). The chain continues from the last record written, so a verifier given
    /// all the segments still sees one unbroken chain.
    public func reopen() {
        pthread_mutex_lock(&mutex)
        reopenRequested = true
        pthread_mutex_unlock(&mutex)
    }

    /// Batches and records written so far (for tests and benchmarks).
    public var counters: (batches: Int, records: Int) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return stats
    }

    /// What `tokenvault status` shows of the log.
    public struct Status: Sendable {
        /// The last record made durable, and the last one the store's checkpoint vouches for.
        public let seq: Int64
        public let checkpointSeq: Int64
        /// The last record the anchor vouches for; nil for a log kept without one.
        public let anchorSeq: Int64?
        /// The later of the two: how far a truncation check reaches (what `audit verify` takes).
        public var vouchedSeq: Int64 { max(checkpointSeq, anchorSeq ?? 0) }
        public let batches: Int
        public let records: Int
        /// Percentiles of recent flushes (write and fdatasync of one batch), µs; nil before the first.
        public let flushP50: Int?
        public let flushP99: Int?
        public let flushMax: Int?
        /// Records the second sink sent and dropped; nil without one.
        public let forwarded: Int?
        public let forwardDropped: Int?
        /// Statements the witness command took, failed to take, and its last failure; nil without one.
        public let witnessCommand: (sent: Int, failed: Int, lastError: String?)?
    }

    public var status: Status {
        pthread_mutex_lock(&mutex)
        let recent = Array(flushTimes.prefix(min(flushCount, flushTimes.count))).sorted()
        let s = Status(seq: max(durableSeq, lastSeqAtOpen), checkpointSeq: checkpointedSeq,
                       anchorSeq: anchor == nil ? nil : anchoredSeq, batches: stats.batches, records: stats.records,
                       flushP50: recent.isEmpty ? nil : Int(recent[recent.count / 2]),
                       flushP99: recent.isEmpty ? nil : Int(recent[min(recent.count - 1, recent.count * 99 / 100)]),
                       flushMax: recent.last.map(Int.init),
                       forwarded: options.forwarder?.counters.sent, forwardDropped: options.forwarder?.counters.dropped,
                       witnessCommand: options.witnesses.lazy.compactMap { $0 as? AuditWitnessCommand }.first?.counters)
        pthread_mutex_unlock(&mutex)
        return s
    }

    public func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        append(event, secret: secret, timeMicros: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000, completion: completion)
    }

    /// A record stamped with a time of the caller's choosing: for `bench audit-fill`, which makes a log
    /// that spans months in seconds. (Whoever holds the audit key can write any record; the chain and the
    /// signatures order records, not their clocks.)
    public func append(_ event: AuditEvent, secret: SecretBytes?, timeMicros: Int64,
                       completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let p = Pending(event: event, timeMicros: timeMicros, tokenHMAC: event.tokenHMAC,
                        secret: event.tokenHMAC == nil ? secret : nil, completion: completion)
        pthread_mutex_lock(&mutex)
        if stopping || flusherDone {
            pthread_mutex_unlock(&mutex)
            completion(.failure(AuditWriteError(description: "the audit log is closed")))
            return
        }
        pending.append(p)
        if pending.count == 1 { pthread_cond_signal(&wake) }
        pthread_mutex_unlock(&mutex)
    }

    public func tokenHMAC(of secret: SecretBytes) -> [UInt8]? {
        keys.tokenHMAC(secret)
    }

    // MARK: - the flusher

    private func flusherLoop() {
        var batch: [Pending] = []  // swapped with `pending`: neither array is reallocated per batch
        while true {
            batch.removeAll(keepingCapacity: true)  // before waiting: the last batch's tokens are let go of
            pthread_mutex_lock(&mutex)
            var idle = false
            while pending.isEmpty && !stopping {
                // With an unsigned tail, or a checkpoint (the store's or the anchor) behind the log, wait at
                // most a checkpoint interval, then sign the tail and move the checkpoints.
                // Segments waiting for their index wait for a quiet interval too.
                guard !lastSigned || (checkpoint != nil && checkpointedSeq < lastSeq) || (anchor != nil && anchoredSeq < lastSeq)
                        || !unindexed.isEmpty else {
                    pthread_cond_wait(&wake, &mutex)
                    continue
                }
                var deadline = timespec()
                clock_gettime(CLOCK_REALTIME, &deadline)
                let interval = max(0.01, options.checkpointInterval)
                let nanos = Int(deadline.tv_nsec) + Int((interval - interval.rounded(.down)) * 1e9)
                deadline.tv_sec += Int(interval) + nanos / 1_000_000_000
                deadline.tv_nsec = nanos % 1_000_000_000
                if pthread_cond_timedwait(&wake, &mutex, &deadline) == ETIMEDOUT, pending.isEmpty {
                    idle = true
                    break
                }
            }
            if pending.count <= options.maxBatch {
                swap(&batch, &pending)
            } else {
                batch.append(contentsOf: pending.prefix(options.maxBatch))
                pending.removeFirst(options.maxBatch)
            }
            let stop = stopping && batch.isEmpty
            pthread_mutex_unlock(&mutex)
            if stop { break }
            if idle {
                signTail()
                maybeCheckpoint(force: true)
                releaseIndexes(now: Date().timeIntervalSince1970, quiet: true)
                continue
            }

            let result: Result<Void, any Error>
            var started = timespec(), ended = timespec()
            clock_gettime(CLOCK_MONOTONIC, &started)
            do {
                try withFileLock { try write(batch) }
                result = .success(())
            } catch {
                result = .failure(error)
            }
            clock_gettime(CLOCK_MONOTONIC, &ended)
            let micros = (Int(ended.tv_sec) - Int(started.tv_sec)) * 1_000_000 + (Int(ended.tv_nsec) - Int(started.tv_nsec)) / 1_000
            pthread_mutex_lock(&mutex)
            stats.batches += 1
            if case .success = result {
                stats.records += batch.count
                durableSeq = lastSeq
                flushTimes[flushCount % flushTimes.count] = UInt32(clamping: micros)
                flushCount += 1
                flushTimer.recordMicroseconds(micros)
                recordsMetric.increment(by: batch.count)
            }
            pthread_mutex_unlock(&mutex)
            for i in batch.indices { batch[i].completion(result) }
            if case .success = result { maybeCheckpoint(force: false) }
        }
        signTail()
        maybeCheckpoint(force: true)
        releaseIndexes(now: Date().timeIntervalSince1970, quiet: true)
        pthread_mutex_lock(&mutex)
        flusherDone = true
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
    }

    /// Appends a signed `audit_checkpoint` record when the log's last record carries no signature (after
    /// another writer's records too), so that a verifier holding only the public key vouches for all of it.
    private func signTail() {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let event = AuditEvent(action: "audit_checkpoint", channel: .daemon, actor: AuditActor(uid: getuid(), gid: getgid(), pid: getpid()),
                               outcome: .granted, reason: "signs the log through this record")
        try? withFileLock {
            try catchUpWithOtherWriters()
            guard !lastSigned else { return }
            try write([Pending(event: event, timeMicros: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000, tokenHMAC: nil,
                               secret: nil, completion: { _ in })], forceSignature: true)
        }
    }

    private func write(_ batch: [Pending], forceSignature: Bool = false) throws {
        pthread_mutex_lock(&mutex)
        let reopen = reopenRequested
        reopenRequested = false
        pthread_mutex_unlock(&mutex)
        if reopen {
            let (seq, hash) = (lastSeq, lastHash)
            // The directory may have been removed under us (`rm -rf audit/`): make it, and its lock, anew.
            if mkdir(directory, 0o700) == 0 { syncDirectory() }
            try reopenLockIfUnlinked()
            // Our segment, or a newer one another writer started; never a plain file beside a compressed one.
            let target = writableSegment()
            let stayed = target == segment
            try follow(to: target)
            if endOffset == 0 && stayed {
                // A fresh file where ours was moved away: carry the chain on.
                (lastSeq, lastHash) = (seq, hash)
            } else {
                try repairAndReadTail()
            }
        }
        try catchUpWithOtherWriters()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(batch.count * 560)
        var seq = lastSeq
        var hash = lastHash
        let now = Date().timeIntervalSince1970
        // A batch's last record is signed once per checkpoint interval, and when the batch is small (one or
        // two records) with nothing else waiting: a log written a record at a time ends signed without a
        // record of its own, while a busy one signs about once a second (each signature costs the flusher
        // tens of µs: signing every quiet batch cost 6-8% of the 32-client throughput). Any other tail is
        // signed by `signTail` after an idle interval or at close.
        let sign = forceSignature || now - lastSignature >= options.checkpointInterval || (batch.count <= 2 && nothingPending())
        var signed: (seq: Int64, time: Int64, hash: [UInt8], sig: [UInt8])?
        for index in batch.indices {
            seq += 1
            let start = bytes.count
            AuditRecordFormat.appendSeq(seq, to: &bytes)
            AuditRecordFormat.appendBody(timeMicros: batch[index].timeMicros, event: batch[index].event,
                                         tokenHMAC: batch[index].tokenHMAC ?? batch[index].secret.map(keys.tokenHMAC), to: &bytes)
            hash = hash.withUnsafeBytes { prev in bytes[start...].withUnsafeBytes { AuditRecordFormat.Chain.v2.hash(previous: prev, line: $0) } }
            let signature = sign && index == batch.count - 1 ? keys.signer.sign(AuditKeys.signedMessage(hash: hash)) : nil
            if let signature { signed = (seq, batch[index].timeMicros, hash, signature) }
            AuditRecordFormat.appendSuffix(hash: hash, mac: AuditRecordFormat.Chain.v2.mac(keys, hash: hash), signature: signature, to: &bytes)
        }
        try appendDurably(bytes)
        options.forwarder?.submit(bytes, records: batch.count)
        if let signed, !options.witnesses.isEmpty {
            let statement = AuditWitnessStatement(host: options.host, seq: signed.seq, time: AuditRecordFormat.formatTime(micros: signed.time),
                                                  hash: hexString(signed.hash), sig: hexString(signed.sig))
            for w in options.witnesses { w.offer(statement) }
        }
        lastSeq = seq
        lastHash = hash
        lastSigned = sign
        if sign { lastSignature = now }
        if endOffset >= off_t(options.segmentBytes) { try rotate(now: now) }
        if !unindexed.isEmpty { releaseIndexes(now: now, quiet: false) }
    }

    private func isStopping() -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return stopping
    }

    private func nothingPending() -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return pending.isEmpty
    }

    /// Writes and `fdatasync`s, or undoes the partial write and throws.
    private func appendDurably(_ bytes: [UInt8]) throws {
        var written = 0
        let failure: String? = bytes.withUnsafeBytes { raw -> String? in
            while written < raw.count {
                let n = Glibc.pwrite(fd, raw.baseAddress! + written, raw.count - written, endOffset + off_t(written))
                if n < 0 {
                    if errno == EINTR { continue }
                    return "write failed: \(String(cString: strerror(errno)))"
                }
                written += n
            }
            return fdatasync(fd) == 0 ? nil : "fdatasync failed: \(String(cString: strerror(errno)))"
        }
        if let failure {
            _ = ftruncate(fd, endOffset)
            throw AuditWriteError(description: "\(AuditSegments.path(directory, segment)): \(failure)")
        }
        endOffset += off_t(bytes.count)
    }

    /// Moves the checkpoints to the end of the log: the anchor at most once per `checkpointInterval`, the
    /// store's at most once per `busyStoreCheckpointInterval` when there is an anchor (else as the anchor),
    /// and both when forced (idle, and at close). Done after the batch's callbacks, so it adds no latency
    /// to reads.
    ///
    /// The checkpoints are written on queues of their own, never on the flusher: an appender may hold the
    /// store's write transaction while it waits for its record (an admin action records before it
    /// commits), and a flusher waiting for that same transaction would never write the record.
    /// `close()` waits for both queues. A failed write is retried at the next checkpoint; the log itself
    /// is durable, and a stale checkpoint only narrows what the truncation check covers. The anchor has a
    /// queue of its own, so a store that cannot take its checkpoint (a trigger, a full disk, another
    /// process's long transaction) never holds it back; while the anchor fails, the store moves every
    /// `checkpointInterval` instead.
    private func maybeCheckpoint(force: Bool) {
        guard checkpoint != nil || anchor != nil else { return }
        let now = Date().timeIntervalSince1970
        pthread_mutex_lock(&mutex)  // read under the lock by the flusher's wait, by `status` and by the queues
        let storeHoldsTheBound = anchor == nil || anchorFailing || checkpointFailing
        pthread_mutex_unlock(&mutex)
        let storeInterval = storeHoldsTheBound ? options.checkpointInterval : max(options.checkpointInterval, options.busyStoreCheckpointInterval)
        let anchorTime = force || now - lastAnchor >= options.checkpointInterval
        let storeTime = force || now - lastCheckpoint >= storeInterval
        guard anchorTime || storeTime else { return }
        // At close, the last checkpoint waits for one still being written rather than being skipped (every
        // record is complete by then, so no appender holds the store while waiting for the flusher). Idle, it
        // is never waited for: an appender may hold the store's write transaction (see above).
        if force, isStopping() {
            checkpointQueue.sync {}
            anchorQueue.sync {}
        }
        pthread_mutex_lock(&mutex)
        let anchorDue = anchor != nil && anchorTime && lastSeq > anchoredSeq && !anchorPending
        let storeDue = checkpoint != nil && storeTime && lastSeq > checkpointedSeq && !checkpointPending
        if anchorDue { anchorPending = true }
        if storeDue { checkpointPending = true }
        pthread_mutex_unlock(&mutex)
        guard anchorDue || storeDue else { return }
        let (seq, hash, mac) = (lastSeq, lastHash, keys.checkpointMAC(seq: lastSeq, hash: lastHash))
        if anchorDue, let anchor {
            lastAnchor = now
            anchorQueue.async {
                let written = (try? anchor(seq, hash, mac)) != nil
                pthread_mutex_lock(&self.mutex)
                self.anchorPending = false
                self.anchorFailing = !written
                if written { self.anchoredSeq = max(self.anchoredSeq, seq) }
                pthread_mutex_unlock(&self.mutex)
            }
        }
        if storeDue, let checkpoint {
            lastCheckpoint = now
            checkpointQueue.async {
                let written = (try? checkpoint(seq, hash, mac)) != nil
                pthread_mutex_lock(&self.mutex)
                self.checkpointPending = false
                self.checkpointFailing = !written
                if written { self.checkpointedSeq = max(self.checkpointedSeq, seq) }
                pthread_mutex_unlock(&self.mutex)
            }
        }
    }

    // MARK: - files

    private func withFileLock<T>(_ body: () throws -> T) throws -> T {
        while flock(lockFd, LOCK_EX) != 0 {
            if errno != EINTR { throw AuditWriteError(description: "cannot lock the audit log: \(String(cString: strerror(errno)))") }
        }
        defer { flock(lockFd, LOCK_UN) }
        return try body()
    }

    /// After `rm -rf audit/`, the lock file is gone too: other processes would lock a new one.
    private func reopenLockIfUnlinked() throws {
        var st = stat()
        guard fstat(lockFd, &st) == 0, st.st_nlink == 0 else { return }
        let fresh = Glibc.open(directory + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fresh >= 0 else { throw AuditWriteError(description: "cannot open \(directory)/.lock: \(String(cString: strerror(errno)))") }
        while flock(fresh, LOCK_EX) != 0 && errno == EINTR {}
        Glibc.close(lockFd)  // releases the old (unlinked) lock; the fresh one is held until the batch ends
        lockFd = fresh
    }

    private func openSegment(_ index: Int) throws {
        let path = AuditSegments.path(directory, index)
        // A compressed segment is finished: a plain file created beside it would hide it from every reader.
        if access(path, F_OK) != 0 && access(AuditSegments.compressedPath(directory, index), F_OK) == 0 {
            throw AuditWriteError(description: "\(path).gz is a compressed, finished segment; it is never written to again")
        }
        // Never through a symlink, and only a regular file: the daemon may run as root.
        let newFd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0o600)
        guard newFd >= 0 else {
            throw AuditWriteError(description: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        var kind = stat()
        guard fstat(newFd, &kind) == 0, (kind.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(newFd)
            throw AuditWriteError(description: "\(path) is not a regular file; move it aside and run `tokenvault audit verify`")
        }
        if fd >= 0 { Glibc.close(fd) }
        fd = newFd
        segment = index
        var st = stat()
        fstat(fd, &st)
        endOffset = st.st_size
        syncDirectory()
    }

    /// Drops a half-written last line (a crash mid-write) and learns the last record's seq and hash.
    /// A last line that is complete but not a record is never "repaired" away: that is evidence, and
    /// writing stops (fail closed) until `tokenvault audit verify` has been run and the file dealt with.
    private func repairAndReadTail() throws {
        switch AuditSegments.tail(fd: fd, size: endOffset) {
        case .record(let seq, let hash, let validEnd, let signed):
            if validEnd < endOffset {
                _ = ftruncate(fd, validEnd)
                _ = fdatasync(fd)
                endOffset = validEnd
            }
            lastSeq = seq
            lastHash = hash
            lastSigned = signed
        case .corrupt:
            throw AuditWriteError(description: "the last record of \(AuditSegments.path(directory, segment)) is damaged; "
                + "run `tokenvault audit verify` and move the segment aside before the log can continue")
        case .empty(let validEnd):
            if validEnd < endOffset {
                _ = ftruncate(fd, validEnd)
                endOffset = validEnd
            }
            // An empty segment continues the chain of the one before it.
            guard segment > 1 else {
                lastSeq = 0
                lastHash = AuditRecordFormat.genesisHash
                lastSigned = true  // nothing to vouch for
                return
            }
            guard case .record(let seq, let hash, _, let signed) = AuditSegments.tail(directory, segment - 1) else {
                throw AuditWriteError(description: "the previous audit segment has no valid last record; run `tokenvault audit verify`")
            }
            lastSeq = seq
            lastHash = hash
            lastSigned = signed
        }
    }

    /// Another process may have appended, or started a new segment, since our last batch.
    /// Only a write to our segment can start the next one (a writer rotates right after the write that
    /// fills it), so an unchanged size means nobody else wrote: one `fstat` per batch in the usual case.
    ///
    /// A segment that was unlinked while open (`rm -rf audit/`) is never written to: records there would
    /// vanish with the last descriptor. Writing fails closed until a new segment is open (SIGHUP, `reopen()`).
    ///
    /// Once another writer has started a newer segment, ours is finished and may be compressed (its plain
    /// file unlinked) at any time: the newer segment is looked for before the unlink counts as a deletion.
    private func catchUpWithOtherWriters() throws {
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw AuditWriteError(description: "cannot stat \(AuditSegments.path(directory, segment)): \(String(cString: strerror(errno)))")
        }
        guard st.st_size != endOffset || st.st_nlink == 0 else { return }
        let target = writableSegment()
        if target != segment { try follow(to: target) }
        guard fstat(fd, &st) == 0, st.st_nlink > 0 else {
            throw AuditWriteError(description: "\(AuditSegments.path(directory, segment)) was deleted while in use; nothing is disclosed "
                + "until a new segment is open: send the daemon SIGHUP (`systemctl reload tokenvault`) and run `tokenvault audit verify`")
        }
        endOffset = st.st_size
        try repairAndReadTail()
    }

    /// The segment the log goes on in: ours, or the newest one present if another writer started it
    /// (the one after that if it is compressed, so finished).
    private func writableSegment() -> Int {
        let newest = max(segment, AuditSegments.list(directory).last ?? segment)
        return AuditSegments.isCompressed(directory, newest) ? newest + 1 : newest
    }

    private func rotate(now: Double) throws {
        let finished = segment
        try openSegment(segment + 1)
        // The new segment is empty; the chain carries on from lastSeq/lastHash.
        if options.indexSegments { unindexed.append((finished, now)) }
    }

    /// Opens `target`, the segment another writer (a CLI command) went on in. The segments it finished
    /// meanwhile are this log's to index when it indexes what it was left (the daemon's): that writer's
    /// builds end with its process.
    private func follow(to target: Int) throws {
        let skipped = segment..<target
        try openSegment(target)
        guard options.indexSegments && options.indexLeftBehind else { return }
        let now = Date().timeIntervalSince1970
        for s in skipped where access(AuditSegments.path(directory, s), F_OK) == 0 && AuditLog.lacksIndex(directory, s)
            && !unindexed.contains(where: { $0.segment == s }) {
            unindexed.append((s, now))
        }
    }

    /// A plain segment without an index file (a compressed one is left to `tokenvault audit index`).
    private static func lacksIndex(_ directory: String, _ segment: Int) -> Bool {
        !AuditSegments.isCompressed(directory, segment) && access(AuditIndex.path(directory, segment), F_OK) != 0
    }

    /// The finished segments just before `segment` that have no index file, oldest first: those a writer
    /// that stopped before its log went quiet left behind (its queued builds end with the process). The
    /// walk back stops at the first segment with an index, or a compressed one, and at 16 segments; a
    /// stale index, or an older gap, is `tokenvault audit index`'s.
    static func finishedWithoutIndex(_ directory: String, before segment: Int) -> [Int] {
        var out: [Int] = []
        for s in AuditSegments.list(directory).reversed() where s < segment {
            guard out.count < 16, lacksIndex(directory, s) else { break }
            out.append(s)
        }
        return out.reversed()
    }

    /// Hands finished segments to ``indexQueue``: all of them when the log is quiet (or closing), else
    /// those that have waited ``Options/indexDelay``.
    private func releaseIndexes(now: Double, quiet: Bool) {
        let directory = self.directory
        while let first = unindexed.first, quiet || now - first.finished >= options.indexDelay {
            unindexed.removeFirst()
            AuditLog.indexQueue.async { _ = try? AuditIndex.build(directory: directory, segment: first.segment) }
        }
    }

    /// Where finished segments are indexed: one at a time, on a thread of its own at the idle priority
    /// (indexing a 64 MB segment of a busy vault takes 0.1–0.3 s of CPU, which on a loaded machine came
    /// out of the reads), never on the flusher, and once the log is quiet (``releaseIndexes(now:quiet:)``).
    static let indexQueue = IdleWorker(name: "tv-audit-index")

    private func syncDirectory() { AuditSegments.syncDirectory(directory) }
}

/// Naming and reading of segment files: `audit-000001.jsonl`, `audit-000002.jsonl`, …
public enum AuditSegments {
    public static func path(_ directory: String, _ index: Int) -> String {
        let digits = String(index)
        return directory + "/audit-" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits + ".jsonl"
    }

    /// The segment numbers present (plain or compressed), ascending.
    public static func list(_ directory: String) -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(names.compactMap { name -> Int? in
            guard name.hasPrefix("audit-") else { return nil }
            if name.hasSuffix(".jsonl") { return Int(name.dropFirst(6).dropLast(6)) }
            if name.hasSuffix(".jsonl.gz") { return Int(name.dropFirst(6).dropLast(9)) }
            return nil
        }).sorted()
    }

    enum Tail {
        /// No complete line; complete lines (none) end at the offset.
        case empty(off_t)
        /// The last complete record's seq and hash, where the complete lines end, and whether it is signed.
        case record(Int64, [UInt8], off_t, signed: Bool)
        case corrupt
    }

    /// The last complete record of a segment, plain or compressed.
    static func tail(_ directory: String, _ index: Int) -> Tail {
        if isCompressed(directory, index) {
            guard let file = open(directory, index) else { return .corrupt }
            return withExtendedLifetime(file) {
                let b = file.bytes
                guard let lastNewline = b.lastIndex(of: 0x0a) else { return b.isEmpty ? .empty(0) : .corrupt }
                let lineStart = b[..<lastNewline].lastIndex(of: 0x0a).map { $0 + 1 } ?? 0
                guard let parsed = AuditRecordFormat.parse(UnsafeRawBufferPointer(rebasing: b[lineStart..<lastNewline])) else { return .corrupt }
                return .record(parsed.seq, parsed.hash.bytes, off_t(lastNewline + 1), signed: parsed.signature != nil)
            }
        }
        let fd = Glibc.open(path(directory, index), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .corrupt }
        defer { Glibc.close(fd) }
        var st = stat()
        fstat(fd, &st)
        return tail(fd: fd, size: st.st_size)
    }

    /// The last complete record of a file.
    static func tail(fd: Int32, size: off_t) -> Tail {
        guard size > 0 else { return .empty(0) }
        let window = min(size, 256 * 1024)
        var buffer = [UInt8](repeating: 0, count: Int(window))
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, Int(window), size - window) }
        guard n == Int(window) else { return .corrupt }
        guard let lastNewline = buffer.lastIndex(of: 0x0a) else { return window == size ? .empty(0) : .corrupt }
        let validEnd = size - window + off_t(lastNewline + 1)
        let lineStart = (buffer[..<lastNewline].lastIndex(of: 0x0a)).map { $0 + 1 } ?? 0
        guard let parsed = AuditRecordFormat.parse(buffer[lineStart..<lastNewline]) else { return .corrupt }
        return .record(parsed.seq, parsed.hash.bytes, validEnd, signed: parsed.signature != nil)
    }
}
