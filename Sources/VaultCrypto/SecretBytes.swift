import CSodium
#if canImport(Glibc)
import Glibc
#endif

/// A plaintext secret (a token or an app secret) held as bytes in one heap buffer that is wiped
/// with `sodium_memzero` when the last reference goes.
///
/// Unlike ``SecureKey`` it is not `sodium_malloc`'d: that costs four pages and several system calls,
/// too much for every read on the daemon's hot path. It is never logged: `description` is redacted.
public final class SecretBytes: @unchecked Sendable {
    private let pointer: UnsafeMutableRawPointer
    public let count: Int

    /// Allocates `count` bytes and lets `fill` write them.
    public init(count: Int, filling fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        _ = Sodium.ready
        // Fill before the stored properties are set: a class whose init throws after they are set
        // runs deinit, which would free the buffer a second time.
        let p = malloc(max(count, 1))!
        do { try fill(UnsafeMutableRawBufferPointer(start: p, count: count)) } catch {
            sodium_memzero(p, count)
            free(p)
            throw error
        }
        self.count = count
        pointer = p
    }

    /// Copies bytes in; the caller wipes its own copy where it can.
    public convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        self.init(count: bytes.count) { buf in _ = buf.initializeMemory(as: UInt8.self, from: bytes) }
    }

    deinit {
        sodium_memzero(pointer, count)
        free(pointer)
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Constant-time comparison.
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        count == other.count && sodium_memcmp(pointer, other.pointer, count) == 0
    }

    /// Whether the bytes are valid UTF-8 (tokens travel in JSON strings).
    public var isValidUTF8: Bool {
        withUnsafeBytes { VaultCrypto.isValidUTF8($0) }
    }

    /// Whether any byte is an ASCII control character (NUL, newline, ...). Tokens have none.
    public var containsControlCharacters: Bool {
        withUnsafeBytes { $0.contains { $0 < 0x20 || $0 == 0x7f } }
    }

    /// A copy as a Swift `String`, for the few places that must hand the token to an API that takes
    /// one (JSON encoding of a response). The copy cannot be wiped: avoid it where bytes will do.
    public func unsafeStringCopy() -> String {
        withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }
}

extension SecretBytes: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}

/// Whether bytes are valid UTF-8 (all-ASCII, the usual case, is one quick scan). Shared by secrets and the
/// daemon's request scanner.
public func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    if !bytes.contains(where: { $0 >= 0x80 }) { return true }
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}
