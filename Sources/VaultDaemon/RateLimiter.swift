import Foundation
import Synchronization

/// Per-caller token buckets: `rate` requests per second, with a burst of one second's worth.
final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var last: UInt64
    }

    private let buckets = Mutex<[UInt32: Bucket]>([:])

    /// Takes one request's worth from `uid`'s bucket; false when it is empty.
    func allow(uid: UInt32, rate: Double, now: UInt64 = DispatchTime.now().uptimeNanoseconds) -> Bool {
        let burst = max(rate, 1)
        return buckets.withLock { all in
            var b = all[uid] ?? Bucket(tokens: burst, last: now)
            b.tokens = min(burst, b.tokens + Double(now &- b.last) / 1e9 * rate)
            b.last = now
            let ok = b.tokens >= 1
            if ok { b.tokens -= 1 }
            all[uid] = b
            return ok
        }
    }
}
