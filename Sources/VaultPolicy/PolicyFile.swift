import Foundation
import TOMLKit
#if canImport(Glibc)
import Glibc
#endif

/// A policy file that could not be used: the line (1-based, 0 when unknown) and what is wrong.
public struct PolicyError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let line: Int
    public let message: String

    public var description: String {
        line > 0 ? "\(path):\(line): \(message)" : "\(path): \(message)"
    }
}

extension Policy {
    /// Reads `policy.toml`. A missing file is the empty (deny-all) policy; one that does not parse is an error
    /// naming its line.
    ///
    /// The file decides who reads every token, so it must belong to the daemon's user or root and be
    /// writable by nobody else (group or world); a FIFO or device is refused rather than read.
    public static func load(path: String) throws -> Policy {
        guard FileManager.default.fileExists(atPath: path) else { return .denyAll }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw PolicyError(path: path, line: 0, message: "cannot read the file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw PolicyError(path: path, line: 0, message: "not a regular file")
        }
        guard st.st_uid == geteuid() || st.st_uid == 0 else {
            throw PolicyError(path: path, line: 0, message: "owned by uid \(st.st_uid), not by the daemon's user (uid \(geteuid())) or root, "
                + "so its owner decides who reads every token; fix it with `chown \(geteuid()) \(path)`")
        }
        if st.st_mode & 0o022 != 0 {
            throw PolicyError(path: path, line: 0, message: "writable by \(st.st_mode & 0o002 != 0 ? "every user" : "its group") "
                + "(mode \(String(st.st_mode & 0o7777, radix: 8))), so they decide who reads every token; fix it with `chmod go-w \(path)`")
        }
        guard st.st_size <= 1 << 20 else { throw PolicyError(path: path, line: 0, message: "larger than 1 MiB") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile()
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// Parses policy TOML:
    ///
    ///     [[allow]]
    ///     uid = 1001               # or user = "adsync", gid = 1002, group = "ads"
    ///     tokens = ["acme/*", "shared/reporting"]
    ///     proof = true             # optional, default false
    ///     rate = 50                # optional, requests per second
    public static func parse(_ text: String, path: String = "policy.toml") throws -> Policy {
        // Only well-formed text in the subset a policy uses reaches the TOML library (see PolicySyntax).
        do { try PolicySyntax.check(text) } catch {
            throw PolicyError(path: path, line: error.line, message: "parsing failed: \(error.message)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let e as TOMLParseError {
            throw PolicyError(path: path, line: Int(e.source.begin.line), message: e.description)
        }
        let headerLines = headerLines("allow", in: text)

        for key in table.keys where key != "allow" && key != "credential" {
            throw PolicyError(path: path, line: lineOf(key: key, in: text), message: "unknown key \"\(key)\" (only [[allow]] and [[credential]] tables are allowed)")
        }
        let credentials = try credentialRules(table, text: text, path: path)
        guard let value = table["allow"] else { return Policy(rules: [], credentials: credentials) }
        guard let array = value.array else {
            throw PolicyError(path: path, line: lineOf(key: "allow", in: text), message: "\"allow\" must be written as [[allow]] tables")
        }
        var rules: [Rule] = []
        for (index, element) in array.enumerated() {
            let line = index < headerLines.count ? headerLines[index] : 0
            func fail(_ message: String) -> PolicyError {
                PolicyError(path: path, line: line, message: "[[allow]] #\(index + 1): \(message)")
            }
            guard let rule = element.table else { throw fail("not a table") }
            for key in rule.keys where !["uid", "user", "gid", "group", "tokens", "proof", "rate"].contains(key) {
                throw fail("unknown key \"\(key)\" (expected uid, user, gid, group, tokens, proof, rate)")
            }
            let subjects = ["uid", "user", "gid", "group"].filter { rule.contains(key: $0) }
            guard subjects.count == 1 else {
                throw fail("name exactly one of uid, user, gid or group (found \(subjects.isEmpty ? "none" : subjects.joined(separator: ", ")))")
            }
            let subject: Subject
            switch subjects[0] {
            case "uid":
                guard let n = rule["uid"]?.int, n >= 0, n <= Int(UInt32.max) else { throw fail("uid must be a non-negative integer") }
                subject = .uid(UInt32(n))
            case "gid":
                guard let n = rule["gid"]?.int, n >= 0, n <= Int(UInt32.max) else { throw fail("gid must be a non-negative integer") }
                subject = .gid(UInt32(n))
            case "user":
                guard let name = rule["user"]?.string else { throw fail("user must be a string") }
                guard let uid = Accounts.uid(ofUser: name) else { throw fail("no such user \"\(name)\" on this host") }
                subject = .uid(uid)
            default:
                guard let name = rule["group"]?.string else { throw fail("group must be a string") }
                guard let gid = Accounts.gid(ofGroup: name) else { throw fail("no such group \"\(name)\" on this host") }
                subject = .gid(gid)
            }
            guard let tokenArray = rule["tokens"]?.array else { throw fail("tokens must be a list of names, e.g. tokens = [\"acme/*\"]") }
            var patterns: [String] = []
            for item in tokenArray {
                guard let s = item.string, !s.isEmpty else { throw fail("every entry of tokens must be a non-empty string") }
                if s.dropLast().contains("*") { throw fail("\"\(s)\": * is allowed only at the end of a pattern") }
                patterns.append(s)
            }
            var proof = false
            if let p = rule["proof"] {
                guard let b = p.bool else { throw fail("proof must be true or false") }
                proof = b
            }
            var rate: Double?
            if let r = rule["rate"] {
                guard let v = r.double ?? r.int.map(Double.init), v > 0 else { throw fail("rate must be a positive number of requests per second") }
                rate = v
            }
            rules.append(Rule(subject: subject, tokens: patterns, proof: proof, rate: rate, line: line))
        }
        return Policy(rules: rules, credentials: credentials)
    }

    /// The `[[credential]]` tables: which systemd unit's `LoadCredential=ID:…` gets which token.
    private static func credentialRules(_ table: TOMLTable, text: String, path: String) throws -> [CredentialRule] {
        guard let value = table["credential"] else { return [] }
        guard let array = value.array else {
            throw PolicyError(path: path, line: lineOf(key: "credential", in: text), message: "\"credential\" must be written as [[credential]] tables")
        }
        let headerLines = headerLines("credential", in: text)
        var rules: [CredentialRule] = []
        for (index, element) in array.enumerated() {
            let line = index < headerLines.count ? headerLines[index] : 0
            func fail(_ message: String) -> PolicyError {
                PolicyError(path: path, line: line, message: "[[credential]] #\(index + 1): \(message)")
            }
            guard let rule = element.table else { throw fail("not a table") }
            for key in rule.keys where !["unit", "id", "token"].contains(key) {
                throw fail("unknown key \"\(key)\" (expected unit, id, token)")
            }
            guard let unit = rule["unit"]?.string, CredentialRule.isUnitName(unit) else {
                throw fail("unit must be a systemd unit name, like \"adsync.service\"")
            }
            guard let id = rule["id"]?.string, CredentialRule.isCredentialID(id) else {
                throw fail("id must be the credential's ID in LoadCredential=ID:PATH (letters, digits, _ - . @ and no /)")
            }
            guard let token = rule["token"]?.string, !token.isEmpty, !token.contains("*") else {
                throw fail("token must name one token (no patterns)")
            }
            if rules.contains(where: { $0.unit == unit && $0.id == id }) {
                throw fail("unit \(unit) and id \(id) are given a token twice")
            }
            rules.append(CredentialRule(unit: unit, id: id, token: token, line: line))
        }
        return rules
    }

    /// The line (1-based) of each `[[table]]` header, in order: TOMLKit keeps no positions for values.
    private static func headerLines(_ table: String, in text: String) -> [Int] {
        text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            .filter { $0.element.trimmingCharacters(in: .whitespaces).hasPrefix("[[\(table)]]") }
            .map { $0.offset + 1 }
    }

    private static func lineOf(key: String, in text: String) -> Int {
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix(key) || t.hasPrefix("[\(key)") || t.hasPrefix("[[\(key)") { return i + 1 }
        }
        return 0
    }
}
