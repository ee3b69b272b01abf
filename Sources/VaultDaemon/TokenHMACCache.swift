import Foundation
import Synchronization
import VaultCore
import VaultCrypto

/// The audit log's `token_hmac` of each token's current sealed value, so a token read a thousand times
/// is hashed once: HMAC-SHA256 of a 200-byte token costs more than the SQLite read it follows.
///
/// An entry is keyed by the token's name and is valid only for the exact sealed value it was made from:
/// its version byte, random nonce and Poly1305 tag (the first ``Sealer/overhead`` bytes) and its data key.
/// A `put`, an exchange or a re-seal writes a new nonce, so the next read misses and hashes the new value.
/// It holds keyed hashes only — the values the audit log already publishes — never a token.
final class TokenHMACCache: Sendable {
    private struct Entry {
        let dataKeyId: Int64
        /// The sealed value's first ``Sealer/overhead`` bytes, zero-padded: held inline, so a miss (nearly
        /// every read of a large vault read in no order) allocates nothing for it.
        let fingerprint: SIMD64<UInt8>
        let hmac: [UInt8]
    }

    private static func fingerprint(_ sealed: Data) -> SIMD64<UInt8> {
        var v = SIMD64<UInt8>()
        withUnsafeMutableBytes(of: &v) { out in
            sealed.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(Sealer.overhead))) }
        }
        return v
    }

    /// Entries kept at most; past it the cache starts over (a bound on memory, not an eviction policy).
    let capacity: Int
    private struct State {
        var entries: [String: Entry] = [:]
        /// Which names are worth an entry: those read a second time (see ``SecondSight``). A vault read in
        /// no order would otherwise pay an insert, and every `capacity` reads a mass release, for no hit.
        var admission: SecondSight
    }
    private let state: Mutex<State>

    init(capacity: Int = 16_384) {
        self.capacity = capacity
        state = Mutex(State(admission: SecondSight(capacity: capacity)))
    }

    /// The cached hash for this record's sealed value; else, for a name read before, `compute()`'s (cached
    /// when non-nil); else nil: a name's first read (nearly every read of a large vault read in no order)
    /// is left to the audit log, which hashes the token on its flusher thread instead of the event loop.
    func hmac(for record: TokenRecord, compute: () -> [UInt8]?) -> [UInt8]? {
        let fingerprint = Self.fingerprint(record.sealed)
        let (hit, admitted) = state.withLock { s in
            if let hit = s.entries[record.name] { return (Optional(hit), true) }
            return (nil, s.admission.seenBefore(record.name))
        }
        if let hit, hit.dataKeyId == record.dataKeyId, hit.fingerprint == fingerprint, record.sealed.count >= Sealer.overhead {
            return hit.hmac
        }
        guard admitted, let fresh = compute() else { return nil }
        let entry = Entry(dataKeyId: record.dataKeyId, fingerprint: fingerprint, hmac: fresh)
        state.withLock { s in
            if s.entries.count >= capacity && s.entries[record.name] == nil { s.entries.removeAll(keepingCapacity: true) }
            s.entries[record.name] = entry
        }
        return fresh
    }

    var count: Int { state.withLock { $0.entries.count } }
}
