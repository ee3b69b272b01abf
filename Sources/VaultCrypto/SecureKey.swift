import CSodium
#if canImport(Glibc)
import Glibc
#endif

/// A 32-byte symmetric key in memory that libsodium allocated: guard pages, `mlock`ed where the
/// limit allows, read-only once filled, and zeroed by `sodium_free` when the last reference goes.
///
/// The bytes never pass through an ordinary Swift array: they are generated, derived, unwrapped or
/// read from a file straight into this buffer.
public final class SecureKey: @unchecked Sendable {
    public static let byteCount = 32
    private let pointer: UnsafeMutableRawPointer

    /// Allocates a zeroed buffer and lets `fill` write it; the buffer is made read-only afterwards.
    /// If `fill` throws, the buffer is freed (and wiped) and the error propagates.
    init(filling fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        _ = Sodium.ready
        guard let p = sodium_malloc(Self.byteCount) else {
            fatalError("sodium_malloc failed: out of memory for key material")
        }
        sodium_memzero(p, Self.byteCount)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: p, count: Self.byteCount))
        } catch {
            sodium_free(p)
            throw error
        }
        _ = sodium_mprotect_readonly(p)
        pointer = p
    }

    /// A fresh random key.
    public static func random() -> SecureKey {
        SecureKey { randombytes_buf($0.baseAddress!, $0.count) }
    }

    /// Reads exactly 32 bytes from a file descriptor into secure memory; a file of any other length is an error.
    public static func read(from fd: Int32, path: String) throws -> SecureKey {
        try SecureKey { buf in
            var got = 0
            while got < buf.count {
                let n = Glibc.read(fd, buf.baseAddress! + got, buf.count - got)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw CryptoError.io("cannot read key file \(path): \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                got += n
            }
            var extra: UInt8 = 0
            let more = Glibc.read(fd, &extra, 1)
            if got != buf.count || more > 0 {
                throw CryptoError.io(
                    "key file \(path) is not a TokenVault master key (expected exactly \(buf.count) bytes)")
            }
        }
    }

    /// Creates a key from bytes the caller holds (tests and fixed vectors); the caller wipes its copy.
    public static func copying(_ bytes: [UInt8]) throws -> SecureKey {
        guard bytes.count == byteCount else { throw CryptoError.badKeyLength(expected: byteCount, got: bytes.count) }
        return SecureKey { buf in buf.copyBytes(from: bytes) }
    }

    deinit {
        sodium_free(pointer)
    }

    /// Gives read access to the key bytes for the duration of `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: Self.byteCount))
    }

    var bytes: UnsafePointer<UInt8> { UnsafePointer(pointer.assumingMemoryBound(to: UInt8.self)) }

    /// Writes the key to a file descriptor (used once, when a key file is created).
    public func write(to fd: Int32, path: String) throws {
        var done = 0
        while done < Self.byteCount {
            let n = Glibc.write(fd, pointer + done, Self.byteCount - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CryptoError.io("cannot write key file \(path): \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}
