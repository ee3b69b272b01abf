import Foundation
import Synchronization

/// How fast refused requests may grow the audit log.
///
/// Every refused request (denied, an invalid name, over its rate, a `list` by a caller no rule names)
/// is recorded on its own while its uid, and all uids together, are within a token-bucket budget. Past
/// it, the request is answered `rate_limited` at once, with no record of its own, and counted; once per
/// interval ``takeSummary()`` hands the counts to one summary record. So no caller can make the log grow
/// faster than `perUID` records a second (after a burst of `perUIDBurst`), and all refused callers
/// together no faster than `global` a second (after `globalBurst`) plus one summary record per interval.
final class RefusalBudget: Sendable {
    struct Limits: Sendable {
        var perUID = 8.0
        var perUIDBurst = 32.0
        var global = 64.0
        var globalBurst = 256.0
        /// At most this many uids are named in a summary record; the rest are counted together.
        var summaryUIDs = 16
    }

    /// What was refused without a record of its own since the last summary.
    struct Summary: Sendable, Equatable {
        /// Per uid: how many requests, and the last pid seen, most first.
        var uids: [(uid: UInt32, gid: UInt32, pid: Int32, count: Int)]
        var total: Int
        /// Whether uids beyond `summaryUIDs` were left out of `uids` (their requests are in `total`).
        var truncated: Bool

        static func == (a: Summary, b: Summary) -> Bool {
            a.total == b.total && a.truncated == b.truncated
                && a.uids.map { [$0.uid, $0.gid, UInt32(bitPattern: $0.pid), UInt32($0.count)] }
                == b.uids.map { [$0.uid, $0.gid, UInt32(bitPattern: $0.pid), UInt32($0.count)] }
        }

        /// The summary record's reason: `1042 refused requests answered rate_limited without their own record: uid 1001 ×1040, uid 7 ×2`.
        var reason: String {
            let each = uids.map { "uid \($0.uid) ×\($0.count)" }.joined(separator: ", ")
            return "\(total) refused requests answered rate_limited without their own record: \(each)\(truncated ? ", and other uids" : "")"
        }
    }

    private struct Bucket {
        var tokens: Double
        var last: UInt64
        mutating func take(rate: Double, burst: Double, now: UInt64) -> Bool {
            tokens = min(burst, tokens + Double(now &- last) / 1e9 * rate)
            last = now
            guard tokens >= 1 else { return false }
            tokens -= 1
            return true
        }
    }

    private struct State {
        var global: Bucket
        var buckets: [UInt32: Bucket] = [:]
        var suppressed: [UInt32: (gid: UInt32, pid: Int32, count: Int)] = [:]
    }

    let limits: Limits
    private let state: Mutex<State>

    init(limits: Limits = Limits(), now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        self.limits = limits
        state = Mutex(State(global: Bucket(tokens: limits.globalBurst, last: now)))
    }

    /// Whether this refusal gets its own audit record; when not, it is counted for the next summary.
    func admit(uid: UInt32, gid: UInt32, pid: Int32, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool {
        let l = limits
        return state.withLock { s in
            var mine = s.buckets[uid] ?? Bucket(tokens: l.perUIDBurst, last: now)
            // A uid over its own budget does not draw on the global one.
            let ok = mine.take(rate: l.perUID, burst: l.perUIDBurst, now: now) && s.global.take(rate: l.global, burst: l.globalBurst, now: now)
            s.buckets[uid] = mine
            if !ok {
                let count = (s.suppressed[uid]?.count ?? 0) + 1
                s.suppressed[uid] = (gid, pid, count)
            }
            // Forget full buckets now and then, so a parade of uids costs bounded memory.
            if s.buckets.count > 4096 {
                s.buckets = s.buckets.filter { $0.value.tokens < l.perUIDBurst - 1 }
            }
            return ok
        }
    }

    /// The counts since the last call, or nil when nothing was suppressed.
    func takeSummary() -> Summary? {
        let n = limits.summaryUIDs
        let taken = state.withLock { s -> [UInt32: (gid: UInt32, pid: Int32, count: Int)] in
            defer { s.suppressed = [:] }
            return s.suppressed
        }
        guard !taken.isEmpty else { return nil }
        let sorted = taken.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key < $1.key }
        return Summary(uids: sorted.prefix(n).map { ($0.key, $0.value.gid, $0.value.pid, $0.value.count) },
                       total: taken.values.reduce(0) { $0 + $1.count }, truncated: sorted.count > n)
    }
}
