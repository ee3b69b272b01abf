/// The kinds of token the vault knows. Meta's own `type` from `debug_token` is stored separately.
public enum TokenKind: String, CaseIterable, Sendable, Codable {
    case user, systemUser = "system_user", page, app, other
}

/// Token and app names: 1–128 characters from `A–Z a–z 0–9 . _ - / @ :`, starting with a letter or a
/// digit. `*` is excluded because policy rules use a trailing `*` as a prefix wildcard.
public enum Names {
    public static let maxLength = 128

    public static func validate(_ name: String, what: String = "token name") throws {
        guard let why = problem(name, what: what) else { return }
        let shown = name.utf8.count > maxLength ? String(name.prefix(40)) + "…" : name
        throw VaultError.invalidName(shown, why: why)
    }

    /// Why `name` is not a valid name, or nil when it is. The reason never repeats the name.
    public static func problem(_ name: String, what: String = "token name") -> String? {
        let bytes = name.utf8
        guard let first = bytes.first else { return "\(what) is empty" }
        guard bytes.count <= maxLength else { return "\(what) is longer than \(maxLength) characters" }
        func isAlnum(_ c: UInt8) -> Bool { (0x30...0x39).contains(c) || (0x41...0x5a).contains(c) || (0x61...0x7a).contains(c) }
        guard isAlnum(first) else { return "\(what) must start with a letter or a digit" }
        for c in bytes where !(isAlnum(c) || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
                               || c == UInt8(ascii: "/") || c == UInt8(ascii: "@") || c == UInt8(ascii: ":")) {
            return "\(what) may hold only letters, digits and . _ - / @ :"
        }
        return nil
    }
}
