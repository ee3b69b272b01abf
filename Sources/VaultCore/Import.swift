import Foundation
import VaultCrypto


/// One token to store: what `put`, `import` and a sealed restore hand to ``Vault/put(_:replace:)``.
public struct ImportEntry: Sendable {
    public let name: String
    public let secret: SecretBytes
    public let kind: TokenKind
    public let app: String?
    /// Check results carried over by a sealed restore; nil for new tokens.
    public let metadata: TokenMetadata?

    public init(name: String, secret: SecretBytes, kind: TokenKind = .other, app: String? = nil, metadata: TokenMetadata? = nil) {
        self.name = name
        self.secret = secret
        self.kind = kind
        self.app = app
        self.metadata = metadata
    }
}

/// The metadata of a token that is not secret and is not its identity.
public struct TokenMetadata: Codable, Sendable, Equatable {
    public var tokenType: String?
    public var scopes: String
    public var granularScopes: String?
    public var expiresAt: Int64?
    public var dataAccessExpiresAt: Int64?
    public var valid: Bool?
    public var checkedAt: Int64?
    public var lastError: String?

    public init(_ r: TokenRecord) {
        tokenType = r.tokenType
        scopes = r.scopes
        granularScopes = r.granularScopes
        expiresAt = r.expiresAt
        dataAccessExpiresAt = r.dataAccessExpiresAt
        valid = r.valid
        checkedAt = r.checkedAt
        lastError = r.lastError
    }

    /// Nothing known but an expiry (a token fresh from an exchange).
    public static func expiring(at expiresAt: Int64?) -> TokenMetadata {
        var m = TokenMetadata(TokenRecord(name: "", kind: "other", app: nil, sealed: Data(), dataKeyId: 0, now: 0))
        m.expiresAt = expiresAt
        return m
    }

    func apply(to r: inout TokenRecord) {
        r.tokenType = tokenType
        r.scopes = scopes
        r.granularScopes = granularScopes
        r.expiresAt = expiresAt
        r.dataAccessExpiresAt = dataAccessExpiresAt
        r.valid = valid
        r.checkedAt = checkedAt
        r.lastError = lastError
    }
}

/// Parsers for the plain import formats. Errors name the line, never its value.
public enum ImportFormat: String, Sendable, CaseIterable {
    case env, jsonl, sealed

    /// Guesses the format from a file name, then from the content.
    public static func detect(path: String?, content: [UInt8]) -> ImportFormat {
        if content.starts(with: Array(SealedExport.magic.utf8)) { return .sealed }
        if let path {
            if path.hasSuffix(".jsonl") || path.hasSuffix(".json") || path.hasSuffix(".ndjson") { return .jsonl }
            if path.hasSuffix(".env") || path.hasPrefix(".env") || path.contains("/.env") { return .env }
        }
        let first = content.first { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") && $0 != UInt8(ascii: "\t") }
        return first == UInt8(ascii: "{") ? .jsonl : .env
    }

    /// Parses a `.env` file: `KEY=value` lines, optional `export `, `#` comments, blank lines, values
    /// bare, 'single-quoted' (literal) or "double-quoted" (with \\ \" escapes). Each KEY, with `prefix`
    /// in front, becomes a token name.
    public static func parseEnv(_ content: [UInt8], prefix: String = "", kind: TokenKind, app: String?) throws -> [ImportEntry] {
        var entries: [ImportEntry] = []
        var lineNumber = 0
        for rawLine in content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = rawLine[...]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            line = line.drop { $0 == 0x20 || $0 == 0x09 }
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            if line.starts(with: Array("export ".utf8)) {
                line = line.dropFirst(7).drop { $0 == 0x20 || $0 == 0x09 }
            }
            guard let eq = line.firstIndex(of: UInt8(ascii: "=")) else {
                throw VaultError.importFailed(line: lineNumber, why: "expected KEY=value")
            }
            var keyBytes = line[line.startIndex..<eq]
            while keyBytes.last == 0x20 || keyBytes.last == 0x09 { keyBytes = keyBytes.dropLast() }
            let key = String(decoding: keyBytes, as: UTF8.self)
            guard !key.isEmpty, key.utf8.allSatisfy({ isKeyChar($0) }) else {
                throw VaultError.importFailed(line: lineNumber, why: "\"\(key)\" is not a variable name")
            }
            var rest = line[(eq + 1)...].drop { $0 == 0x20 || $0 == 0x09 }
            var value: [UInt8] = []
            defer { wipe(&value) }
            switch rest.first {
            case UInt8(ascii: "'"):
                rest = rest.dropFirst()
                guard let close = rest.firstIndex(of: UInt8(ascii: "'")) else {
                    throw VaultError.importFailed(line: lineNumber, why: "unterminated single quote for \(key) (multi-line values are not supported)")
                }
                value.append(contentsOf: rest[rest.startIndex..<close])
                rest = rest[(close + 1)...]
            case UInt8(ascii: "\""):
                rest = rest.dropFirst()
                var closed = false
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == UInt8(ascii: "\"") { closed = true; break }
                    if c == UInt8(ascii: "\\"), let next = rest.first {
                        rest = rest.dropFirst()
                        switch next {
                        case UInt8(ascii: "n"): value.append(0x0a)
                        case UInt8(ascii: "t"): value.append(0x09)
                        default: value.append(next)
                        }
                    } else {
                        value.append(c)
                    }
                }
                guard closed else {
                    throw VaultError.importFailed(line: lineNumber, why: "unterminated double quote for \(key) (multi-line values are not supported)")
                }
            default:
                // A bare value ends at a ` #` comment or the end of the line.
                var end = rest.endIndex
                var i = rest.startIndex
                while i < rest.endIndex {
                    if rest[i] == UInt8(ascii: "#"), i > rest.startIndex, rest[i - 1] == 0x20 || rest[i - 1] == 0x09 { end = i; break }
                    i += 1
                }
                var v = rest[rest.startIndex..<end]
                while v.last == 0x20 || v.last == 0x09 { v = v.dropLast() }
                value.append(contentsOf: v)
                rest = rest[rest.endIndex...]
            }
            let trailing = rest.drop { $0 == 0x20 || $0 == 0x09 }
            if let t = trailing.first, t != UInt8(ascii: "#") {
                throw VaultError.importFailed(line: lineNumber, why: "unexpected text after the quoted value of \(key)")
            }
            guard !value.isEmpty else { throw VaultError.importFailed(line: lineNumber, why: "\(key) has an empty value") }
            let name = prefix + key
            do { try Names.validate(name) } catch {
                throw VaultError.importFailed(line: lineNumber, why: "\(error)")
            }
            entries.append(ImportEntry(name: name, secret: SecretBytes(copying: value), kind: kind, app: app))
        }
        return entries
    }

    private static func isKeyChar(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c)
            || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "/")
    }

    /// Parses JSON Lines: `{"name": "...", "token": "...", "kind": "...", "app": "..."}` per line;
    /// `kind` and `app` are optional and default to the given ones.
    public static func parseJSONLines(_ content: [UInt8], kind: TokenKind, app: String?) throws -> [ImportEntry] {
        var entries: [ImportEntry] = []
        var lineNumber = 0
        for line in content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0d }) { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw VaultError.importFailed(line: lineNumber, why: "not a JSON object")
            }
            guard let name = object["name"] as? String else {
                throw VaultError.importFailed(line: lineNumber, why: "\"name\" is missing or not a string")
            }
            guard let token = object["token"] as? String else {
                throw VaultError.importFailed(line: lineNumber, why: "\"token\" is missing or not a string")
            }
            var entryKind = kind
            if let k = object["kind"] {
                guard let s = k as? String, let parsed = TokenKind(rawValue: s) else {
                    throw VaultError.importFailed(line: lineNumber, why: "\"kind\" must be one of \(TokenKind.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                entryKind = parsed
            }
            var entryApp = app
            if let a = object["app"], !(a is NSNull) {
                guard let s = a as? String else { throw VaultError.importFailed(line: lineNumber, why: "\"app\" must be a string") }
                entryApp = s
            }
            do { try Names.validate(name) } catch { throw VaultError.importFailed(line: lineNumber, why: "\(error)") }
            let secret = SecretBytes(copying: Array(token.utf8))
            do { try Vault.validateSecret(secret) } catch { throw VaultError.importFailed(line: lineNumber, why: "\(error)") }
            entries.append(ImportEntry(name: name, secret: secret, kind: entryKind, app: entryApp))
        }
        return entries
    }
}
