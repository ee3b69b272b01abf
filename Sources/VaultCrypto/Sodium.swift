import CSodium

/// libsodium must be initialised once per process before any other call; Swift initialises a global
/// lazily and exactly once, so every entry point touches `Sodium.ready` first.
enum Sodium {
    static let ready: Void = {
        guard sodium_init() >= 0 else {
            fatalError("libsodium could not be initialised (sodium_init failed)")
        }
    }()
}

/// Errors from the crypto layer. None of them carries secret material.
public enum CryptoError: Error, Equatable, Sendable {
    /// The authentication tag did not verify: wrong key, a changed byte, or a record moved to another name.
    case authenticationFailed
    /// The sealed bytes are too short or carry an unknown format version.
    case malformedSealedData(String)
    /// `crypto_pwhash` could not run (usually: not enough memory for the requested limit).
    case keyDerivationFailed
    /// A key had the wrong length.
    case badKeyLength(expected: Int, got: Int)
    /// Reading or writing a key file failed.
    case io(String)
}

extension CryptoError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .authenticationFailed:
            return "authentication failed: wrong key, tampered data, or data moved from another record"
        case .malformedSealedData(let why): return "malformed sealed data: \(why)"
        case .keyDerivationFailed:
            return "passphrase key derivation failed (not enough memory for the Argon2id limits?)"
        case .badKeyLength(let expected, let got): return "key is \(got) bytes, expected \(expected)"
        case .io(let why): return why
        }
    }
}

/// Random bytes from the OS CSPRNG (libsodium `randombytes_buf`).
public func randomBytes(_ count: Int) -> [UInt8] {
    _ = Sodium.ready
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
    return out
}

/// Lower-case hex of some bytes (not for secrets: the `String` cannot be wiped).
public func hexString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// Wipes a buffer in a way the compiler may not optimise away.
public func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    sodium_memzero(base, buffer.count)
}

/// Wipes an array's bytes in place (for transient copies that had to live in ordinary memory).
public func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { wipe($0) }
}
