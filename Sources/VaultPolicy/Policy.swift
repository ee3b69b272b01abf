#if canImport(Glibc)
import Glibc
#endif

/// Who may read which tokens over the socket. Default deny, root included: a caller reads a name only
/// when some rule's subject matches the caller and one of its patterns matches the name.
public struct Policy: Sendable, Equatable {
    public enum Subject: Sendable, Equatable, CustomStringConvertible {
        case uid(UInt32)
        case gid(UInt32)

        public var description: String {
            switch self {
            case .uid(let u): return "uid \(u)"
            case .gid(let g): return "gid \(g)"
            }
        }
    }

    /// One `[[allow]]` table.
    public struct Rule: Sendable, Equatable {
        public var subject: Subject
        /// Exact names, or prefixes written with a trailing `*` (`"*"` alone matches every name).
        public var tokens: [String]
        /// May ask for an `appsecret_proof`.
        public var proof: Bool
        /// Requests per second for a caller this rule matches; nil for no limit.
        public var rate: Double?
        /// The line of its `[[allow]]` header in the file, for explanations.
        public var line: Int

        public init(subject: Subject, tokens: [String], proof: Bool = false, rate: Double? = nil, line: Int = 0) {
            self.subject = subject
            self.tokens = tokens
            self.proof = proof
            self.rate = rate
            self.line = line
        }

        public func matches(name: String) -> Bool {
            tokens.contains { Policy.pattern($0, matches: name) }
        }

        public func applies(to caller: Caller) -> Bool {
            switch subject {
            case .uid(let u): return caller.uid == u
            case .gid(let g): return caller.gid == g || caller.supplementaryGroups.contains(g)
            }
        }
    }

    /// Whether `name` is `pattern` (an exact name), or starts with it less its trailing `*`. Byte-wise:
    /// names are ASCII (see `Names`), and a read pays for this on every request.
    public static func pattern(_ pattern: String, matches name: String) -> Bool {
        let p = pattern.utf8
        if p.last == UInt8(ascii: "*") { return name.utf8.starts(with: p.dropLast()) }
        return name.utf8.elementsEqual(p)
    }

    public var rules: [Rule]
    /// The `[[credential]]` tables (systemd's `LoadCredential=` over the credential socket).
    public var credentials: [CredentialRule]

    public init(rules: [Rule], credentials: [CredentialRule] = []) {
        self.rules = rules
        self.credentials = credentials
    }

    /// The token a unit's credential `id` is, or nil (then nothing is sent).
    public func credential(unit: String, id: String) -> CredentialRule? {
        credentials.first { $0.unit == unit && $0.id == id }
    }

    /// The empty policy: nobody reads anything.
    public static let denyAll = Policy(rules: [])

    /// The verdict for one caller and one name; `explanation` puts it in words.
    public struct Decision: Sendable, Equatable {
        public let allowed: Bool
        /// Whether a matching rule grants proofs.
        public let proof: Bool
        /// The first rule that allowed the read.
        public let rule: Rule?
        let uid: UInt32
        let name: String

        /// Built only when asked for (`policy check`): the daemon decides on every read.
        public var explanation: String {
            guard let rule else { return "uid \(uid) may not read \(name): no rule allows it (default deny)" }
            return "uid \(uid) may read \(name): allowed by the rule for \(rule.subject) at line \(rule.line)"
                + (proof ? ", with proofs" : ", without proofs")
        }
    }

    public func decide(_ caller: Caller, name: String) -> Decision {
        let (first, proof) = evaluate(caller, name: name)
        return Decision(allowed: first != nil, proof: proof, rule: first.map { rules[$0] }, uid: caller.uid, name: name)
    }

    /// ``decide(_:name:)``'s verdict alone, without copying the rule out (the daemon's read path).
    public func permits(_ caller: Caller, name: String) -> (allowed: Bool, proof: Bool) {
        let (first, proof) = evaluate(caller, name: name)
        return (first != nil, proof)
    }

    /// The index of the first rule that allows the read, and whether any allowing rule grants proofs.
    private func evaluate(_ caller: Caller, name: String) -> (first: Int?, proof: Bool) {
        var first: Int?
        var proof = false
        for i in rules.indices where rules[i].applies(to: caller) && rules[i].matches(name: name) {
            if first == nil { first = i }
            proof = proof || rules[i].proof
        }
        return (first, proof)
    }

    /// The names among `names()` that `caller` may read, the rules that apply to the caller picked once
    /// rather than per name. `names` is not called when no rule applies to the caller.
    public func readableNames(by caller: Caller, from names: () throws -> [String]) rethrows -> [String] {
        let applicable = rules.filter { $0.applies(to: caller) }
        guard !applicable.isEmpty else { return [] }
        return try names().filter { name in applicable.contains { $0.matches(name: name) } }
    }

    /// Whether `caller` may read every name `pattern` matches: an exact name as ``permits(_:name:)`` says,
    /// or for `prefix*` a rule that applies to the caller and lists `q*` with `prefix` starting with `q`.
    /// A `watch` is allowed only for patterns that pass (a caller cannot learn of names it may not read).
    public func permitsAll(_ caller: Caller, pattern: String) -> Bool {
        let p = pattern.utf8
        guard p.last == UInt8(ascii: "*") else { return permits(caller, name: pattern).allowed }
        let prefix = p.dropLast()
        return rules.contains { rule in
            rule.applies(to: caller) && rule.tokens.contains { q in
                q.utf8.last == UInt8(ascii: "*") && prefix.starts(with: q.utf8.dropLast())
            }
        }
    }

    /// Whether any rule names the caller (by uid, user, gid or group), whatever tokens it lists.
    public func names(_ caller: Caller) -> Bool {
        rules.contains { $0.applies(to: caller) }
    }

    /// The caller's request rate limit: the highest `rate` among the rules whose subject matches it, or
    /// nil (no limit) when some matching rule sets none. A caller no rule matches is limited to nothing
    /// special: every read it makes is denied anyway.
    public func rate(for caller: Caller) -> Double? {
        var best: Double? = 0
        var any = false
        for rule in rules where rule.applies(to: caller) {
            any = true
            guard let r = rule.rate else { return nil }
            best = max(best ?? 0, r)
        }
        return any ? best : nil
    }
}

/// One `[[credential]]` table: systemd asks for credential `id` of `unit` and gets `token`.
public struct CredentialRule: Sendable, Equatable {
    public var unit: String
    public var id: String
    public var token: String
    public var line: Int

    public init(unit: String, id: String, token: String, line: Int = 0) {
        self.unit = unit
        self.id = id
        self.token = token
        self.line = line
    }

    /// A unit name as systemd writes it: `name.type`, from `A–Z a–z 0–9 : - _ . \ @`.
    public static func isUnitName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 255, s.contains("."), !s.hasPrefix(".") else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || ":-_.\\@".utf8.contains(c)
        }
    }

    /// A credential ID as `LoadCredential=` takes it: a file name (no `/`), printable ASCII.
    public static func isCredentialID(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 255, s != ".", s != ".." else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || "-_.@".utf8.contains(c)
        }
    }
}

/// A process on the other end of the socket, as the kernel reports it (`SO_PEERCRED`).
public struct Caller: Sendable, Hashable, CustomStringConvertible {
    public let uid: UInt32
    public let gid: UInt32
    public let pid: Int32
    /// The groups of the uid's user account (from the group database), so `gid`/`group` rules match members.
    public let supplementaryGroups: [UInt32]
    /// `/proc/PID/exe`, where readable.
    public let executable: String?

    public init(uid: UInt32, gid: UInt32, pid: Int32, supplementaryGroups: [UInt32] = [], executable: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.supplementaryGroups = supplementaryGroups
        self.executable = executable
    }

    /// Fills in the supplementary groups and executable path for a peer.
    public static func resolve(uid: UInt32, gid: UInt32, pid: Int32) -> Caller {
        Caller(uid: uid, gid: gid, pid: pid, supplementaryGroups: groups(ofUid: uid, primary: gid),
               executable: executable(of: pid))
    }

    public var description: String { "uid \(uid) gid \(gid) pid \(pid)" }

    public static func groups(ofUid uid: UInt32, primary: UInt32) -> [UInt32] {
        guard let name = Accounts.userName(uid: uid) else { return [] }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, primary, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, primary, &groups, &count) >= 0 else { return [] }
        }
        return Array(groups.prefix(Int(count)))
    }

    /// `/proc/PID/exe`, where readable.
    public static func executable(of pid: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/\(pid)/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Looks up users and groups in the system databases.
public enum Accounts {
    public static func uid(ofUser name: String) -> UInt32? {
        passwdEntry({ getpwnam_r(name, &$0, &$1, $1.count, &$2) }, { $0.pw_uid })
    }

    public static func primaryGid(uid: UInt32) -> UInt32? {
        passwdEntry({ getpwuid_r(uid, &$0, &$1, $1.count, &$2) }, { $0.pw_gid })
    }

    public static func userName(uid: UInt32) -> String? {
        passwdEntry({ getpwuid_r(uid, &$0, &$1, $1.count, &$2) }, { String(cString: $0.pw_name) })
    }

    public static func gid(ofGroup name: String) -> UInt32? {
        var grp = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getgrnam_r(name, &grp, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return grp.gr_gid
    }

    /// One reentrant passwd lookup (`getpwnam_r` / `getpwuid_r`), then a field of the entry.
    private static func passwdEntry<T>(
        _ lookup: (inout passwd, inout [CChar], inout UnsafeMutablePointer<passwd>?) -> Int32, _ field: (passwd) -> T
    ) -> T? {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard lookup(&pwd, &buffer, &result) == 0, result != nil else { return nil }
        return field(pwd)
    }
}
