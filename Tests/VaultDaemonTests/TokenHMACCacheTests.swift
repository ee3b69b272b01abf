import Logging
import Synchronization
import TestSupport
import Testing
import VaultCore
import VaultCrypto
import VaultPolicy
@testable import VaultDaemon
@testable import VaultWire

/// A sink that hashes tokens like the audit log does (HMAC-SHA256 under its own key) and counts it.
final class HashingSink: AuditSink, @unchecked Sendable {
    let key = Array("audit-token-key-for-tests-000000".utf8)
    let hashed = Atomic<Int>(0)
    let recorded = Mutex<[[UInt8]?]>([])

    func hmac(_ secret: SecretBytes) -> [UInt8] {
        key.withUnsafeBytes { k in secret.withUnsafeBytes { HMACSHA256.mac(key: k, message: $0) } }
    }

    func tokenHMAC(of secret: SecretBytes) -> [UInt8]? {
        hashed.add(1, ordering: .relaxed)
        return hmac(secret)
    }

    func append(_ event: AuditEvent, secret: SecretBytes?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        recorded.withLock { $0.append(event.tokenHMAC ?? secret.map(hmac)) }
        completion(.success(()))
    }
}

@Suite("token_hmac cache")
struct TokenHMACCacheTests {
    let dir = TempDir()

    func read(_ processor: RequestProcessor, _ name: String) {
        processor.process(Request(id: nil, operation: .get(name: name, proof: nil)), caller: Caller(uid: 0, gid: 0, pid: 1)) { _ in }
    }

    /// A name's first read leaves `token_hmac` to the audit log (hashed on its flusher, not the event loop)
    /// and is not remembered (most names of a vault read in no order are read once); its second read is
    /// hashed on the loop and remembered until the sealed value changes. Every record carries the right hash.
    @Test func aTokenIsHashedOnTheLoopAtItsSecondReadThenNotUntilItsSealedValueChanges() throws {
        let vault = try makeVault(dir)
        let sink = HashingSink()
        let processor = RequestProcessor(vault: vault, policy: try Policy.parse(allowRoot), audit: sink, logger: Logger(label: "t"))
        read(processor, "acme/ads")
        #expect(sink.hashed.load(ordering: .relaxed) == 0)
        for _ in 0..<4 { read(processor, "acme/ads") }
        #expect(sink.hashed.load(ordering: .relaxed) == 1)
        let first = sink.hmac(secret("EAAB-acme-ads"))
        #expect(sink.recorded.withLock { $0 } == Array(repeating: first, count: 5))

        // A new value under the same name: the next read hashes the new value, not the cached old one.
        try vault.put(name: "acme/ads", secret: secret("EAAB-acme-ads-v2"), kind: .systemUser, app: "acme", replace: true)
        read(processor, "acme/ads")
        read(processor, "acme/ads")
        #expect(sink.hashed.load(ordering: .relaxed) == 2)
        #expect(sink.recorded.withLock { $0.suffix(2) } == Array(repeating: sink.hmac(secret("EAAB-acme-ads-v2")), count: 2))

        // Re-sealed under a new data key: a new nonce, so hashed again — to the same value.
        try vault.beginReseal()
        try vault.continueReseal()
        read(processor, "acme/ads")
        #expect(sink.hashed.load(ordering: .relaxed) == 3)
        #expect(sink.recorded.withLock { $0.last } == sink.hmac(secret("EAAB-acme-ads-v2")))
    }

    @Test func aNameReadOnceLeavesNoEntry() throws {
        let vault = try makeVault(dir)
        let cache = TokenHMACCache()
        let record = try #require(try vault.record(named: "acme/ads"))
        #expect(cache.hmac(for: record) { [1] } == nil, "a first read is left to the audit log")
        #expect(cache.count == 0)
        #expect(cache.hmac(for: record) { [2] } == [2])
        #expect(cache.count == 1)
        #expect(cache.hmac(for: record) { [3] } == [2], "the second read's hash is the one remembered")
    }

    @Test func theCacheIsBounded() throws {
        let vault = try makeVault(dir)
        let cache = TokenHMACCache(capacity: 2)
        for name in ["acme/ads", "acme/page", "other/x", "acme/ads"] {
            let record = try #require(try vault.record(named: name))
            _ = cache.hmac(for: record) { [1] }
            #expect(cache.count <= 2)
        }
    }
}
