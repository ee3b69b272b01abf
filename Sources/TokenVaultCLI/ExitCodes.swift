/// Every exit code `tokenvault` uses, in one table: commands throw these, `--help` prints them, and a test
/// holds the README's table to this one.
enum Exit: Int32, CaseIterable {
    case success = 0
    case failure = 1
    case badInput = 2
    case notFound = 3
    case vaultState = 4
    case key = 5
    case integrity = 6
    case unavailable = 7
    case denied = 8
    case rateLimited = 9
    case tokenInvalid = 10
    case metaRefused = 11
    case usage = 64

    var meaning: String {
        switch self {
        case .success: return "success"
        case .failure: return "I/O or store failure (disk full, database locked or damaged, a shared store unreachable, the rotation lock held), or Meta unreachable"
        case .badInput: return "bad input: invalid name or secret, unknown app, bad import line, policy or config file, name exists without `--force`"
        case .notFound: return "no such token"
        case .vaultState: return "no vault at the home (run `init`), or `init` on an existing vault"
        case .key: return "key problem: master key missing, wrong key or passphrase (an export's too), key file or keyring readable by others"
        case .integrity: return "integrity failure: a sealed record was changed or moved, or `audit verify` found a bad record"
        case .unavailable: return "the audit log could not be written (nothing was disclosed), or the daemon is unavailable"
        case .denied: return "denied by the policy, or a file or socket that is another user's"
        case .rateLimited: return "rate limited"
        case .tokenInvalid: return "`meta check`: a checked token is invalid"
        case .metaRefused: return "Meta refused a request (the message says why and what to do)"
        case .usage: return "usage error"
        }
    }

    /// The table as the README and `--help` show it.
    static var markdownTable: String {
        (["| code | meaning |", "| --- | --- |"] + allCases.map { "| \($0.rawValue) | \($0.meaning) |" }).joined(separator: "\n")
    }

    static var helpText: String {
        "Exit codes: " + allCases.map { "\($0.rawValue) \($0.meaning)" }.joined(separator: "; ") + "."
    }

    /// The code a vault or store error's documented exit maps to (VaultCore says which).
    static func of(_ code: Int32) -> Exit { Exit(rawValue: code) ?? .failure }
}

extension CLIFailure {
    init(message: String, exit: Exit) {
        self.init(message: message, code: exit.rawValue)
    }
}
