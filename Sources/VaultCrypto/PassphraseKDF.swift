import CSodium

/// Argon2id (`crypto_pwhash`, ALG_ARGON2ID13) parameters, stored next to whatever the derived key opens.
public struct PassphraseKDF: Codable, Sendable, Equatable {
    public enum Strength: String, Sendable, CaseIterable {
        /// libsodium's INTERACTIVE limits: 2 passes, 64 MiB. About 0.1 s.
        case interactive
        /// libsodium's MODERATE limits: 3 passes, 256 MiB. About 0.7 s.
        case moderate
        /// libsodium's SENSITIVE limits: 4 passes, 1 GiB. Several seconds.
        case sensitive
    }

    public var algorithm: String
    /// Hex-encoded 16-byte salt.
    public var salt: String
    public var opslimit: UInt64
    public var memlimit: UInt64

    public static let algorithmName = "argon2id13"

    /// New parameters with a fresh random salt.
    public init(strength: Strength) {
        _ = Sodium.ready
        algorithm = Self.algorithmName
        salt = hexString(randomBytes(Int(crypto_pwhash_SALTBYTES)))
        switch strength {
        case .interactive:
            opslimit = UInt64(crypto_pwhash_opslimit_interactive())
            memlimit = UInt64(crypto_pwhash_memlimit_interactive())
        case .moderate:
            opslimit = UInt64(crypto_pwhash_opslimit_moderate())
            memlimit = UInt64(crypto_pwhash_memlimit_moderate())
        case .sensitive:
            opslimit = UInt64(crypto_pwhash_opslimit_sensitive())
            memlimit = UInt64(crypto_pwhash_memlimit_sensitive())
        }
    }

    /// Derives a 32-byte key from `passphrase` straight into secure memory.
    public func deriveKey(from passphrase: SecretBytes) throws -> SecureKey {
        _ = Sodium.ready
        guard algorithm == Self.algorithmName else {
            throw CryptoError.malformedSealedData("unknown key derivation algorithm \(algorithm)")
        }
        guard let saltBytes = decodeHex(salt), saltBytes.count == Int(crypto_pwhash_SALTBYTES) else {
            throw CryptoError.malformedSealedData("the stored salt is not \(crypto_pwhash_SALTBYTES) hex-encoded bytes")
        }
        guard opslimit >= UInt64(crypto_pwhash_opslimit_min()), memlimit >= UInt64(crypto_pwhash_memlimit_min()),
              opslimit <= UInt64(crypto_pwhash_opslimit_sensitive()) * 4,
              memlimit <= UInt64(crypto_pwhash_memlimit_sensitive()) * 4 else {
            throw CryptoError.malformedSealedData("Argon2id limits out of range (opslimit \(opslimit), memlimit \(memlimit))")
        }
        return try SecureKey { out in
            let empty: CChar = 0
            let rc = withUnsafePointer(to: empty) { emptyPointer in
                passphrase.withUnsafeBytes { pw in
                    crypto_pwhash(
                        out.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt64(out.count),
                        pw.baseAddress?.assumingMemoryBound(to: CChar.self) ?? emptyPointer, UInt64(pw.count),
                        saltBytes, opslimit, Int(memlimit), crypto_pwhash_ALG_ARGON2ID13)
                }
            }
            guard rc == 0 else { throw CryptoError.keyDerivationFailed }
        }
    }
}

/// Decodes lower- or upper-case hex; nil for anything else.
public func decodeHex(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out = [UInt8]()
    out.reserveCapacity(chars.count / 2)
    var i = 0
    while i < chars.count {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}
