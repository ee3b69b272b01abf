import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The auditor's report: one self-contained HTML page (no scripts run, nothing fetched), built in one
/// streaming pass over the log (``Builder``), so ten million records fit in seconds and little memory.
///
/// Sections, each a `<section id=…>`: the period, host and vault; the verdict (exactly which seqs the
/// signatures and MACs cover); reads per day on a continuous axis with days that hold no record at all
/// drawn as gaps; reads per token; reads per caller (user names and executables); refusals by reason
/// and caller; admin actions; tokens never read; readers new in the period; and who the policy lets read
/// each token beside who did. The figures are also embedded as JSON (`<script type="application/json"
/// id="report-data">`), for scripts.
public enum AuditReport {
    /// What the caller knows that the log does not: where the report is from, the tokens stored now, and
    /// who the policy lets read each one (rule subjects, as `uid 1001` or `gid 2000`, with user or group names).
    public struct Context: Sendable {
        public var host: String
        public var vault: String
        public var tokens: [String]
        public var policyReaders: [String: [String]]
        public init(host: String = "", vault: String = "", tokens: [String] = [], policyReaders: [String: [String]] = [:]) {
            self.host = host
            self.vault = vault
            self.tokens = tokens
            self.policyReaders = policyReaders
        }
    }

    public struct Refusal: Codable, Sendable, Equatable {
        public var outcome: String
        public var reason: String
        public var caller: String
        public var count: Int
    }

    public struct AdminAction: Codable, Sendable, Equatable {
        public var seq: Int64
        public var time: String
        public var action: String
        public var token: String?
        public var caller: String
        public var outcome: String
        public var reason: String?
    }

    public struct Data: Codable, Sendable, Equatable {
        public var verified: Bool
        public var verdict: String
        /// Records in the period.
        public var records: Int
        /// Days with a read (ascending).
        public var days: [String]
        /// token → day → granted reads.
        public var readsPerTokenPerDay: [String: [String: Int]]
        /// token → "uid N (exe)" → reads.
        public var callersPerToken: [String: [String: Int]]
        /// day → refused reads (denied, rate_limited, not_found, failed).
        public var refusalsPerDay: [String: Int]
        public var periodFrom = ""
        public var periodUntil = ""
        public var host = ""
        public var vault = ""
        /// Every day of the period, in order, and how many records (of any kind) each holds: 0 is a gap.
        public var axis: [String] = []
        public var recordsPerDay: [String: Int] = [:]
        public var readsPerDay: [String: Int] = [:]
        public var readsPerToken: [String: Int] = [:]
        /// "user (uid N) exe" → granted reads, and the tokens each read.
        public var readsPerCaller: [String: Int] = [:]
        public var tokensPerCaller: [String: [String]] = [:]
        public var refusals: [Refusal] = []
        public var adminActions: [AdminAction] = []
        public var adminTotal = 0
        public var neverRead: [String] = []
        public var newReaders: [String] = []
        /// token → who the policy lets read it, and who read it in the period.
        public var policyReaders: [String: [String]] = [:]
        public var actualReaders: [String: [String]] = [:]
    }

    static let reads: Set<String> = ["get", "get+proof", "list", "credential"]
    static let admin: Set<String> = ["init", "put", "rm", "import", "export", "migrate", "app_add", "app_rm", "key_new", "key_rotate",
                                     "key_reseal", "key_retire", "policy_reload", "proof", "proof_legacy", "meta_exchange", "meta_extend",
                                     "audit_prune"]
    static let adminRows = 500

    /// Accumulates a report from records, oldest first. Records before the period only teach it who
    /// read before (for "new readers"); records after it are ignored.
    public struct Builder {
        let since: String?
        let until: String?
        var data: Data
        private var priorReaders = Set<String>()
        private var readers = Set<String>()
        private var firstTime: String?
        private var lastTime: String?
        private var refusals: [String: Refusal] = [:]
        private var users: [UInt32: String] = [:]
        private var callerTokens: [String: Set<String>] = [:]
        private var tokenReaders: [String: Set<String>] = [:]

        public init(since: String?, until: String?) {
            self.since = since
            self.until = until
            data = Data(verified: false, verdict: "", records: 0, days: [], readsPerTokenPerDay: [:], callersPerToken: [:], refusalsPerDay: [:])
        }

        /// "alice (uid 1001) /usr/bin/python3": the user name where this host knows the uid.
        mutating func caller(_ e: AuditEntry) -> String {
            let name: String
            if let known = users[e.uid] { name = known } else {
                name = Self.userName(e.uid).map { "\($0) (uid \(e.uid))" } ?? "uid \(e.uid)"
                users[e.uid] = name
            }
            return e.exe.map { "\(name) \($0)" } ?? name
        }

        static func userName(_ uid: UInt32) -> String? {
            var pw = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 4096)
            guard getpwuid_r(uid, &pw, &buffer, buffer.count, &result) == 0, result != nil, let name = pw.pw_name else { return nil }
            return String(cString: name)
        }

        public mutating func add(_ e: AuditEntry) {
            if let until, e.time >= until { return }
            let isRead = AuditReport.reads.contains(e.action)
            if let since, e.time < since {
                if isRead && e.outcome == "granted" { priorReaders.insert(caller(e)) }
                return
            }
            data.records += 1
            if firstTime == nil { firstTime = e.time }
            lastTime = e.time
            data.recordsPerDay[e.day, default: 0] += 1
            if isRead {
                let token = e.token ?? "(list)"
                if e.outcome == "granted" {
                    let who = caller(e)
                    data.readsPerDay[e.day, default: 0] += 1
                    data.readsPerTokenPerDay[token, default: [:]][e.day, default: 0] += 1
                    data.callersPerToken[token, default: [:]]["uid \(e.uid)" + (e.exe.map { " (\($0))" } ?? ""), default: 0] += 1
                    data.readsPerToken[token, default: 0] += 1
                    data.readsPerCaller[who, default: 0] += 1
                    callerTokens[who, default: []].insert(token)
                    tokenReaders[token, default: []].insert(who)
                    readers.insert(who)
                } else {
                    data.refusalsPerDay[e.day, default: 0] += 1
                }
            }
            if e.outcome != "granted" && (isRead || e.action == "watch") {
                let who = caller(e)
                let reason = e.reason ?? e.outcome
                let key = e.outcome + "\u{0}" + reason + "\u{0}" + who
                refusals[key, default: Refusal(outcome: e.outcome, reason: reason, caller: who, count: 0)].count += 1
            }
            if AuditReport.admin.contains(e.action) || e.action.hasPrefix("meta_") || e.action.hasPrefix("key_") {
                data.adminTotal += 1
                if data.adminActions.count < AuditReport.adminRows {
                    data.adminActions.append(AdminAction(seq: e.seq, time: e.time, action: e.action, token: e.token, caller: caller(e),
                                                         outcome: e.outcome, reason: e.reason))
                }
            }
        }

        /// The report's figures, with the verdict and what the caller knows.
        public func finish(verification: AuditVerifier.Report, context: Context) -> Data {
            var d = data
            d.verified = verification.ok
            d.verdict = AuditReport.verdict(verification)
            d.days = d.readsPerDay.keys.sorted()
            d.periodFrom = since ?? firstTime ?? ""
            d.periodUntil = until ?? lastTime ?? ""
            d.host = context.host
            d.vault = context.vault
            let from = String((since ?? firstTime ?? "").prefix(10)), to = String((until.map { AuditReport.dayBefore($0) } ?? lastTime ?? "").prefix(10))
            d.axis = AuditReport.days(from: from, through: to)
            d.tokensPerCaller = callerTokens.mapValues { $0.sorted() }
            d.refusals = refusals.values.sorted { $0.count != $1.count ? $0.count > $1.count : ($0.reason, $0.caller) < ($1.reason, $1.caller) }
            d.neverRead = context.tokens.filter { d.readsPerToken[$0] == nil }.sorted()
            d.newReaders = since == nil ? [] : readers.subtracting(priorReaders).sorted()
            d.policyReaders = context.policyReaders
            d.actualReaders = tokenReaders.mapValues { $0.sorted() }
            return d
        }
    }

    /// Exactly what was verified, in words.
    static func verdict(_ v: AuditVerifier.Report) -> String {
        if let p = v.problem { return "FAILED: \(p)" }
        var parts = ["\(v.records) records, seq \(v.firstSeq)–\(v.lastSeq): hash chain" + (v.checkedMACs ? " and MACs of every record" : " of every record")]
        parts.append("signatures through seq \(v.signedThrough)")
        if let c = v.checkpointSeq { parts.append("vault.db's checkpoint at seq \(c)") }
        if let a = v.anchorSeq { parts.append("the keyring's anchor at seq \(a)") }
        if let p = v.prunedThrough { parts.append("seq 1–\(p) pruned, as the signed prune record states") }
        return "OK: " + parts.joined(separator: "; ")
    }

    /// The report of the records in `entries` (for tests and small logs; the CLI streams into a ``Builder``).
    public static func data(entries: [AuditEntry], verification: AuditVerifier.Report, context: Context = Context(),
                            since: String? = nil, until: String? = nil) -> Data {
        var b = Builder(since: since, until: until)
        for e in entries { b.add(e) }
        return b.finish(verification: verification, context: context)
    }

    public static func html(entries: [AuditEntry], verification: AuditVerifier.Report, generated: Date) -> String {
        html(data(entries: entries, verification: verification), generated: generated)
    }

    // MARK: - the page

    public static func html(_ d: Data, generated: Date) -> String {
        let json = (try? JSONEncoder.sortedKeys.encode(d)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>TokenVault audit report</title>
            <style>
            body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
            table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
            th:first-child,td:first-child{text-align:left}td.l,th.l{text-align:left}.ok{background:#e6f4ea;padding:1em}.bad{background:#fce8e6;padding:1em}
            .muted{color:#666}
            </style></head><body>
            <h1>TokenVault audit report</h1>
            <section id="period"><h2>Period</h2><table>
            <tr><th>from</th><td class="l">\(escape(d.periodFrom.isEmpty ? "the first record" : d.periodFrom))</td></tr>
            <tr><th>until</th><td class="l">\(escape(d.periodUntil.isEmpty ? "the last record" : d.periodUntil))</td></tr>
            <tr><th>host</th><td class="l">\(escape(d.host))</td></tr><tr><th>vault</th><td class="l">\(escape(d.vault))</td></tr>
            <tr><th>records</th><td class="l">\(d.records) in the period</td></tr>
            <tr><th>generated</th><td class="l">\(escape(ISO8601DateFormatter().string(from: generated)))</td></tr></table></section>
            <section id="verdict"><h2>Verification</h2><p class="\(d.verified ? "ok" : "bad")" id="verdict-text">\(escape(d.verdict))</p></section>
            <section id="reads-per-day"><h2>Reads per day</h2>
            \(dayChart(d))
            </section>

            """
        h += section("reads-per-token", "Reads per token", ["token", "reads", "callers"],
                     d.readsPerToken.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { token, n in
                         [token, String(n), (d.actualReaders[token] ?? []).joined(separator: ", ")]
                     }, empty: "No token was read in the period.")
        h += section("reads-per-caller", "Reads per caller", ["caller", "reads", "tokens"],
                     d.readsPerCaller.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map { who, n in
                         [who, String(n), (d.tokensPerCaller[who] ?? []).joined(separator: ", ")]
                     }, empty: "Nobody read a token in the period.")
        h += section("refusals", "Refusals by reason and caller", ["reason", "outcome", "caller", "count"],
                     d.refusals.map { [$0.reason, $0.outcome, $0.caller, String($0.count)] }, empty: "No read was refused in the period.",
                     before: dayChart(d, values: d.refusalsPerDay, id: "refusals-chart", color: "#d93025", what: "refusals"))
        h += section("admin-actions", "Admin actions" + (d.adminTotal > d.adminActions.count ? " (the first \(d.adminActions.count) of \(d.adminTotal))" : ""),
                     ["time", "action", "token", "caller", "outcome", "reason"],
                     d.adminActions.map { [String($0.time.prefix(19)) + "Z", $0.action, $0.token ?? "-", $0.caller, $0.outcome, $0.reason ?? ""] },
                     empty: "No admin action in the period.")
        h += section("never-read", "Tokens never read in the period", ["token"], d.neverRead.map { [$0] },
                     empty: d.vault.isEmpty ? "The vault's token list was not available." : "Every stored token was read.")
        h += section("new-readers", "Readers new in the period", ["caller", "tokens"],
                     d.newReaders.map { [$0, (d.tokensPerCaller[$0] ?? []).joined(separator: ", ")] },
                     empty: d.periodFrom.isEmpty || d.newReaders.isEmpty && d.readsPerCaller.isEmpty ? "No reader in the period." : "Every reader had read before the period.")
        let tokens = Set(d.policyReaders.keys).union(d.actualReaders.keys).sorted()
        h += section("policy-vs-actual", "Who may read each token, and who did", ["token", "the policy lets", "read it in the period"],
                     tokens.map { t in
                         [t, (d.policyReaders[t] ?? []).joined(separator: ", ").ifEmpty("nobody"),
                          (d.actualReaders[t] ?? []).joined(separator: ", ").ifEmpty("nobody")]
                     }, empty: "No policy or reads to compare.")
        h += "<script type=\"application/json\" id=\"report-data\">\(json.replacingOccurrences(of: "</", with: "<\\/"))</script>\n"
        h += "</body></html>\n"
        return h
    }

    static func section(_ id: String, _ title: String, _ header: [String], _ rows: [[String]], empty: String, before: String = "") -> String {
        var h = "<section id=\"\(id)\"><h2>\(escape(title))</h2>\n" + before + "\n"
        if rows.isEmpty { return h + "<p class=\"muted\">\(escape(empty))</p></section>\n" }
        h += "<table><tr>" + header.map { "<th class=\"l\">\(escape($0))</th>" }.joined() + "</tr>\n"
        for row in rows {
            h += "<tr>" + row.map { "<td class=\"l\">\(escape($0))</td>" }.joined() + "</tr>\n"
        }
        return h + "</table></section>\n"
    }

    /// Reads per day as inline SVG: every day of the period on the axis; a day with no record at all (the
    /// daemon down, or records missing) is a grey hatched band, a day with records but no read an empty slot.
    static func dayChart(_ d: Data, values: [String: Int]? = nil, id: String = "reads-chart", color: String = "#1a73e8",
                         what: String = "reads") -> String {
        let values = values ?? d.readsPerDay
        guard !d.axis.isEmpty else { return "<p class=\"muted\" id=\"\(id)\">No records in the period.</p>" }
        let n = d.axis.count
        let bar = max(2, min(36, 1000 / n)), gap = bar > 6 ? 4 : 1
        let width = 40 + n * (bar + gap), height = 180
        let top = max(values.values.max() ?? 1, 1)
        var svg = "<svg id=\"\(id)\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height + 40)\" role=\"img\">"
        svg += "<defs><pattern id=\"gap\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
        svg += "<rect width=\"3\" height=\"6\" fill=\"#bbb\"/></pattern></defs>"
        let labelEvery = max(1, n / 12)
        var gaps = 0
        for (i, day) in d.axis.enumerated() {
            let x = 30 + i * (bar + gap)
            let reads = values[day] ?? 0
            if (d.recordsPerDay[day] ?? 0) == 0 {
                gaps += 1
                svg += "<rect class=\"gap\" x=\"\(x)\" y=\"0\" width=\"\(bar)\" height=\"\(height)\" fill=\"url(#gap)\"><title>\(escape(day)): no records</title></rect>"
            } else {
                let h = Int(Double(reads) / Double(top) * Double(height - 20))
                svg += "<rect x=\"\(x)\" y=\"\(height - h)\" width=\"\(bar)\" height=\"\(h)\" fill=\"\(color)\"><title>\(escape(day)): \(reads) \(what)</title></rect>"
            }
            if i % labelEvery == 0 {
                svg += "<text x=\"\(x)\" y=\"\(height + 14)\" font-size=\"10\">\(escape(String(day.suffix(5))))</text>"
            }
        }
        svg += "</svg>"
        let total = values.values.reduce(0, +)
        return svg + "\n<p id=\"\(id)-summary\">\(total) \(what) over \(n) days, at most \(top) in a day"
            + (gaps > 0 ? "; \(gaps) day(s) hold no record at all (hatched): the daemon was down, or records are missing" : "") + ".</p>"
    }

    /// Every `YYYY-MM-DD` from `from` through `to` (UTC), at most ten years.
    static func days(from: String, through to: String) -> [String] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        guard var day = f.date(from: from), let end = f.date(from: to), day <= end else { return from.isEmpty ? [] : [from] }
        var out: [String] = []
        while day <= end && out.count < 3660 {
            out.append(f.string(from: day))
            day.addTimeInterval(86_400)
        }
        return out
    }

    /// The day of the instant just before `time` (an exclusive upper bound at midnight ends the day before).
    static func dayBefore(_ time: String) -> String {
        time.hasSuffix("T00:00:00.000000Z") ? previousDay(String(time.prefix(10))) : time
    }

    static func previousDay(_ day: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        guard let d = f.date(from: day) else { return day }
        return f.string(from: d.addingTimeInterval(-86_400))
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}

extension String {
    fileprivate func ifEmpty(_ other: String) -> String { isEmpty ? other : self }
}

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
