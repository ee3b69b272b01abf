/// The kinds of token the vault knows. Meta's own `type` from `debug_token` is stored separately.
public enum TokenKind: String, CaseIterable, Sendable, Codable {
    case user, systemUser = "system_user", page, app, other
}

/// Token and app names: 1–128 characters from `A–Z a–z 0–9 . _ - / @ :`, starting with a letter or a
/// digit. `*` is excluded because policy rules use a trailing `*` as a prefix wildcard.
public enum Names {
    public static let maxLength = 128

    public static func validate(_ name: String, what: String = "token name") throws {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw VaultError.invalidName(name, why: "\(what) is empty") }
        guard bytes.count <= maxLength else {
            throw VaultError.invalidName(String(name.prefix(40)) + "…", why: "\(what) is longer than \(maxLength) characters")
        }
        func isAlnum(_ c: UInt8) -> Bool { (0x30...0x39).contains(c) || (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c) }
        guard isAlnum(bytes[0]) else { throw VaultError.invalidName(name, why: "\(what) must start with a letter or a digit") }
        for c in bytes where !(isAlnum(c) || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
                               || c == UInt8(ascii: "/") || c == UInt8(ascii: "@") || c == UInt8(ascii: ":")) {
            throw VaultError.invalidName(name, why: "\(what) may hold only letters, digits and . _ - / @ :")
        }
    }
}
