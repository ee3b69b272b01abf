import Foundation
import VaultCrypto


/// The sealed export (`tokenvault export --sealed`), an encrypted backup that any vault can restore
/// with the passphrase it was made with:
///
///     TOKENVAULT-EXPORT-1\n
///     {"apps":M,"created_at":T,"kdf":{Argon2id salt and limits},"tokens":N}\n
///     base64(Sealer v1 bytes)\n
///
/// The payload is sealed under an Argon2id key from the passphrase, with the header line as the
/// sealed context, so a changed header fails to open. The payload is a sequence of entries:
/// `type (1 = app, 2 = token) || u32be length || metadata JSON || u32be length || secret`.
public enum SealedExport {
    public static let magic = "TOKENVAULT-EXPORT-1\n"

    struct Header: Codable {
        var apps: Int
        var createdAt: Int64
        var kdf: PassphraseKDF
        var tokens: Int
        enum CodingKeys: String, CodingKey { case apps, createdAt = "created_at", kdf, tokens }
    }

    struct AppMeta: Codable {
        var name: String
        var appId: String
    }

    struct TokenMeta: Codable {
        var name: String
        var kind: String
        var app: String?
        var metadata: TokenMetadata
    }

    /// Builds the export file's bytes from the vault's apps and tokens.
    static func make(vault: Vault, passphrase: SecretBytes, strength: PassphraseKDF.Strength) throws -> [UInt8] {
        let (tokens, apps) = try vault.store.read { tx in (try tx.tokens(), try tx.apps()) }
        var payload: [UInt8] = []
        defer { wipe(&payload) }
        let encoder = JSONEncoder.sorted
        for app in apps {
            let secret = try vault.appSecret(app: app.name).secret
            try append(type: 1, meta: encoder.encode(AppMeta(name: app.name, appId: app.appId)), secret: secret, to: &payload)
        }
        for token in tokens {
            let secret = try vault.open(token)
            let meta = TokenMeta(name: token.name, kind: token.kind, app: token.app, metadata: TokenMetadata(token))
            try append(type: 2, meta: encoder.encode(meta), secret: secret, to: &payload)
        }
        let kdf = PassphraseKDF(strength: strength)
        let header = Header(apps: apps.count, createdAt: Vault.now(), kdf: kdf, tokens: tokens.count)
        let headerLine = String(decoding: try encoder.encode(header), as: UTF8.self)
        let key = try kdf.deriveKey(from: passphrase)
        let sealed = payload.withUnsafeBytes { Sealer.seal($0, key: key, context: .init(.export, name: headerLine)) }
        return Array((magic + headerLine + "\n" + Data(sealed).base64EncodedString() + "\n").utf8)
    }

    private static func append(type: UInt8, meta: Data, secret: SecretBytes, to out: inout [UInt8]) throws {
        out.append(type)
        appendLength(meta.count, to: &out)
        out.append(contentsOf: meta)
        appendLength(secret.count, to: &out)
        secret.withUnsafeBytes { out.append(contentsOf: $0) }
    }

    private static func appendLength(_ n: Int, to out: inout [UInt8]) {
        let v = UInt32(n)
        out.append(contentsOf: [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)])
    }

    /// Opens an export and returns what it holds.
    static func open(_ content: [UInt8], passphrase: SecretBytes) throws -> (apps: [Vault.AppEntry], tokens: [ImportEntry]) {
        let lines = content.split(separator: UInt8(ascii: "\n"), maxSplits: 3, omittingEmptySubsequences: false)
        guard content.starts(with: Array(magic.utf8)), lines.count >= 3 else {
            throw VaultError.badExport(why: "it does not start with \(magic.dropLast())")
        }
        let headerLine = String(decoding: lines[1], as: UTF8.self)
        guard let header = try? JSONDecoder().decode(Header.self, from: Data(lines[1])) else {
            throw VaultError.badExport(why: "the header line is not valid")
        }
        guard let sealed = Data(base64Encoded: Data(lines[2])) else {
            throw VaultError.badExport(why: "the body is not base64")
        }
        let key: SecureKey
        do { key = try header.kdf.deriveKey(from: passphrase) } catch {
            throw VaultError.badExport(why: "\(error)")
        }
        let payload: SecretBytes
        do {
            payload = try Sealer.open([UInt8](sealed), key: key, context: .init(.export, name: headerLine))
        } catch {
            throw VaultError.wrongExportPassphrase
        }
        var apps: [Vault.AppEntry] = []
        var tokens: [ImportEntry] = []
        let decoder = JSONDecoder()
        try payload.withUnsafeBytes { raw in
            var at = 0
            func take(_ n: Int) throws -> UnsafeRawBufferPointer {
                guard n >= 0, at + n <= raw.count else { throw VaultError.badExport(why: "the payload is cut short") }
                defer { at += n }
                return UnsafeRawBufferPointer(rebasing: raw[at..<(at + n)])
            }
            func length() throws -> Int { try take(4).reduce(0) { $0 << 8 | Int($1) } }
            while at < raw.count {
                let type = try take(1)[0]
                let meta = Data(try take(try length()))
                let secret = SecretBytes(copying: try take(try length()))
                switch type {
                case 1:
                    let m = try decoder.decode(AppMeta.self, from: meta)
                    apps.append(Vault.AppEntry(name: m.name, appId: m.appId, secret: secret))
                case 2:
                    let m = try decoder.decode(TokenMeta.self, from: meta)
                    guard let kind = TokenKind(rawValue: m.kind) else { throw VaultError.badExport(why: "unknown kind \(m.kind)") }
                    tokens.append(ImportEntry(name: m.name, secret: secret, kind: kind, app: m.app, metadata: m.metadata))
                default:
                    throw VaultError.badExport(why: "unknown entry type \(type)")
                }
            }
        }
        guard apps.count == header.apps, tokens.count == header.tokens else {
            throw VaultError.badExport(why: "the payload holds \(tokens.count) tokens and \(apps.count) apps, the header says \(header.tokens) and \(header.apps)")
        }
        return (apps, tokens)
    }
}

extension Vault {
    /// An encrypted backup of every token and app, restorable into any vault with `passphrase`.
    public func exportSealed(passphrase: SecretBytes, strength: PassphraseKDF.Strength = .moderate) throws -> [UInt8] {
        try SealedExport.make(vault: self, passphrase: passphrase, strength: strength)
    }

    /// Restores a sealed export in one transaction; returns how many tokens it held.
    @discardableResult
    public func importSealed(_ content: [UInt8], passphrase: SecretBytes, replace: Bool = false,
                             beforeCommit: () throws -> Void = {}) throws -> Int {
        let (apps, tokens) = try SealedExport.open(content, passphrase: passphrase)
        return try put(tokens, apps: apps, replace: replace, beforeCommit: beforeCommit)
    }
}
