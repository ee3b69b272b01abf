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

    /// Accumulates a report from records. Records before the period only teach it who read before (for
    /// "new readers"); records after it are ignored. Records straight from a scan (``add(_:)`` with an
    /// ``AuditMatch``) are counted from their fields in place: days, tokens and callers are interned to
    /// small integers, and only the rows the page shows are ever turned into text, so ten million records
    /// take seconds, not a minute.
    public struct Builder {
        let since: String?
        let until: String?
        private let sinceBytes: [UInt8]?
        private let untilBytes: [UInt8]?
        private var records = 0
        private var firstTime: String?
        /// The time of the last record counted.
        private var lastSeen: [UInt8] = []
        // Interned days, tokens, callers and actions.
        private var dayIDs: [DayKey: Int] = [:]
        private var dayNames: [String] = []
        private var lastDay: (key: DayKey, id: Int)?
        private var tokenIDs: [String: Int] = [:]
        private var tokenNames: [String] = []
        private var callerSlots: [UInt32: [(exe: [UInt8]?, id: Int)]] = [:]
        private var callers: [(uid: UInt32, exe: String?)] = []
        private var kinds: [String: Kind] = [:]
        // Counts, by interned id.
        private var recordsPerDay: [Int] = []
        private var readsPerDay: [Int] = []
        private var refusalsPerDay: [Int] = []
        private var readsPerToken: [Int] = []
        private var readsPerCaller: [Int] = []
        /// tokenID << 16 | dayID → granted reads.
        private var tokenDay: [Int: Int] = [:]
        /// tokenID << 32 | callerID → granted reads.
        private var tokenCaller: [Int: Int] = [:]
        private var priorReaders = Set<Int>()
        private var refusals: [RefusalKey: Int] = [:]
        private var adminTotal = 0
        private var adminActions: [(seq: Int64, time: String, action: String, token: String?, caller: Int, outcome: String, reason: String?)] = []

        enum Kind { case read, watch, admin, other }

        struct DayKey: Hashable {
            var head: UInt64
            var tail: UInt16
        }

        struct RefusalKey: Hashable {
            var outcome: String
            var reason: String
            var caller: Int
        }

        public init(since: String?, until: String?) {
            self.since = since
            self.until = until
            sinceBytes = since.map { Array($0.utf8) }
            untilBytes = until.map { Array($0.utf8) }
        }

        /// A record a scan matched, counted from its fields in place where it is laid out as written.
        public mutating func add(_ m: AuditMatch) {
            guard let f = m.fields else { return add(m.entry) }
            let line = m.line
            func text(_ r: Range<Int>) -> String { JSONUnescape.string(UnsafeRawBufferPointer(rebasing: line[r])) }
            let exe = f.exe.map { UnsafeRawBufferPointer(rebasing: line[$0]) }
            if let exe, exe.contains(UInt8(ascii: "\\")) {
                var plain = text(f.exe!)
                return plain.withUTF8 { e in
                    add(seq: f.seq, time: UnsafeRawBufferPointer(rebasing: line[f.time]), action: text(f.action),
                        outcome: UnsafeRawBufferPointer(rebasing: line[f.outcome]), token: f.token.map(text),
                        reason: { f.reason.map(text) }, uid: f.uid, exe: UnsafeRawBufferPointer(e))
                }
            }
            add(seq: f.seq, time: UnsafeRawBufferPointer(rebasing: line[f.time]), action: text(f.action),
                outcome: UnsafeRawBufferPointer(rebasing: line[f.outcome]), token: f.token.map(text),
                reason: { f.reason.map(text) }, uid: f.uid, exe: exe)
        }

        public mutating func add(_ e: AuditEntry) {
            var time = e.time, outcome = e.outcome
            time.withUTF8 { t in
                outcome.withUTF8 { o in
                    guard var exe = e.exe else {
                        return add(seq: e.seq, time: UnsafeRawBufferPointer(t), action: e.action, outcome: UnsafeRawBufferPointer(o),
                                   token: e.token, reason: { e.reason }, uid: e.uid, exe: nil)
                    }
                    exe.withUTF8 { x in
                        add(seq: e.seq, time: UnsafeRawBufferPointer(t), action: e.action, outcome: UnsafeRawBufferPointer(o),
                            token: e.token, reason: { e.reason }, uid: e.uid, exe: UnsafeRawBufferPointer(x))
                    }
                }
            }
        }

        private static let granted = Array("granted".utf8)

        private mutating func add(seq: Int64, time: UnsafeRawBufferPointer, action: String, outcome: UnsafeRawBufferPointer,
                                  token: String?, reason: () -> String?, uid: UInt32, exe: UnsafeRawBufferPointer?) {
            if let untilBytes, AuditMatcher.compare(time, untilBytes) >= 0 { return }
            let kind = kind(action)
            let granted = outcome.elementsEqual(Self.granted)
            if let sinceBytes, AuditMatcher.compare(time, sinceBytes) < 0 {
                if kind == .read && granted { priorReaders.insert(caller(uid, exe)) }
                return
            }
            records += 1
            let timeText = { String(decoding: time, as: UTF8.self) }
            if firstTime == nil { firstTime = timeText() }
            let day = day(time)
            recordsPerDay[day] += 1
            let outcomeText = { String(decoding: outcome, as: UTF8.self) }
            if kind == .read {
                let t = tokenID(token ?? "(list)")
                if granted {
                    let c = caller(uid, exe)
                    readsPerDay[day] += 1
                    readsPerToken[t] += 1
                    readsPerCaller[c] += 1
                    tokenDay[t << 16 | day, default: 0] += 1
                    tokenCaller[t << 32 | c, default: 0] += 1
                } else {
                    refusalsPerDay[day] += 1
                }
            }
            if !granted && (kind == .read || kind == .watch) {
                let o = outcomeText()
                refusals[RefusalKey(outcome: o, reason: reason() ?? o, caller: caller(uid, exe)), default: 0] += 1
            }
            if kind == .admin {
                adminTotal += 1
                if adminActions.count < AuditReport.adminRows {
                    adminActions.append((seq, timeText(), action, token, caller(uid, exe), outcomeText(), reason()))
                }
            }
            lastSeen.removeAll(keepingCapacity: true)
            lastSeen.append(contentsOf: time)
        }

        private mutating func kind(_ action: String) -> Kind {
            if let k = kinds[action] { return k }
            let k: Kind = AuditReport.reads.contains(action) ? .read : action == "watch" ? .watch
                : AuditReport.admin.contains(action) || action.hasPrefix("meta_") || action.hasPrefix("key_") ? .admin : .other
            kinds[action] = k
            return k
        }

        private mutating func day(_ time: UnsafeRawBufferPointer) -> Int {
            guard time.count >= 10 else { return internDay(String(decoding: time, as: UTF8.self), key: DayKey(head: 0, tail: 0)) }
            let key = DayKey(head: time.loadUnaligned(as: UInt64.self), tail: time.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
            if let last = lastDay, last.key == key { return last.id }
            let id = dayIDs[key] ?? internDay(String(decoding: time.prefix(10), as: UTF8.self), key: key)
            lastDay = (key, id)
            return id
        }

        private mutating func internDay(_ name: String, key: DayKey) -> Int {
            if let i = dayNames.firstIndex(of: name) { return i }
            dayNames.append(name)
            recordsPerDay.append(0)
            readsPerDay.append(0)
            refusalsPerDay.append(0)
            dayIDs[key] = dayNames.count - 1
            return dayNames.count - 1
        }

        private mutating func tokenID(_ name: String) -> Int {
            if let id = tokenIDs[name] { return id }
            tokenNames.append(name)
            readsPerToken.append(0)
            tokenIDs[name] = tokenNames.count - 1
            return tokenNames.count - 1
        }

        /// One caller: a uid and the executable it ran.
        private mutating func caller(_ uid: UInt32, _ exe: UnsafeRawBufferPointer?) -> Int {
            if let slots = callerSlots[uid] {
                for s in slots where s.exe.map({ exe?.elementsEqual($0) ?? false }) ?? (exe == nil) { return s.id }
            }
            let id = callers.count
            callers.append((uid, exe.map { String(decoding: $0, as: UTF8.self) }))
            callerSlots[uid, default: []].append((exe.map(Array.init), id))
            readsPerCaller.append(0)
            return id
        }

        /// "alice (uid 1001) /usr/bin/python3": the user name where this host knows the uid.
        static func callerName(_ uid: UInt32, _ exe: String?, users: inout [UInt32: String]) -> String {
            let name: String
            if let known = users[uid] { name = known } else {
                name = userName(uid).map { "\($0) (uid \(uid))" } ?? "uid \(uid)"
                users[uid] = name
            }
            return exe.map { "\(name) \($0)" } ?? name
        }

        static func userName(_ uid: UInt32) -> String? {
            var pw = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: 4096)
            guard getpwuid_r(uid, &pw, &buffer, buffer.count, &result) == 0, result != nil, let name = pw.pw_name else { return nil }
            return String(cString: name)
        }

        /// The report's figures, with the verdict and what the caller knows.
        public func finish(verification: AuditVerifier.Report, context: Context) -> Data {
            var users: [UInt32: String] = [:]
            let who = callers.map { Self.callerName($0.uid, $0.exe, users: &users) }
            let short = callers.map { "uid \($0.uid)" + ($0.exe.map { " (\($0))" } ?? "") }
            var d = Data(verified: verification.ok, verdict: AuditReport.verdict(verification), records: records, days: [],
                         readsPerTokenPerDay: [:], callersPerToken: [:], refusalsPerDay: [:])
            for (day, name) in dayNames.enumerated() {
                d.recordsPerDay[name] = recordsPerDay[day]
                if readsPerDay[day] > 0 { d.readsPerDay[name] = readsPerDay[day] }
                if refusalsPerDay[day] > 0 { d.refusalsPerDay[name] = refusalsPerDay[day] }
            }
            for (t, name) in tokenNames.enumerated() where readsPerToken[t] > 0 { d.readsPerToken[name] = readsPerToken[t] }
            for (c, name) in who.enumerated() where readsPerCaller[c] > 0 { d.readsPerCaller[name, default: 0] += readsPerCaller[c] }
            for (key, n) in tokenDay { d.readsPerTokenPerDay[tokenNames[key >> 16], default: [:]][dayNames[key & 0xffff]] = n }
            var callerTokens: [String: Set<String>] = [:], tokenReaders: [String: Set<String>] = [:]
            for (key, n) in tokenCaller {
                let token = tokenNames[key >> 32], c = key & 0xffff_ffff
                d.callersPerToken[token, default: [:]][short[c], default: 0] += n
                callerTokens[who[c], default: []].insert(token)
                tokenReaders[token, default: []].insert(who[c])
            }
            d.days = d.readsPerDay.keys.sorted()
            let lastTime = lastSeen.isEmpty ? nil : String(decoding: lastSeen, as: UTF8.self)
            d.periodFrom = since ?? firstTime ?? ""
            d.periodUntil = until ?? lastTime ?? ""
            d.host = context.host
            d.vault = context.vault
            let from = String((since ?? firstTime ?? "").prefix(10)), to = String((until.map { AuditReport.dayBefore($0) } ?? lastTime ?? "").prefix(10))
            d.axis = AuditReport.days(from: from, through: to)
            d.tokensPerCaller = callerTokens.mapValues { $0.sorted() }
            var merged: [String: Refusal] = [:]
            for (key, n) in refusals {
                let caller = who[key.caller]
                merged[key.outcome + "\u{0}" + key.reason + "\u{0}" + caller, default: Refusal(outcome: key.outcome, reason: key.reason, caller: caller, count: 0)].count += n
            }
            d.refusals = merged.values.sorted { $0.count != $1.count ? $0.count > $1.count : ($0.reason, $0.caller) < ($1.reason, $1.caller) }
            d.adminTotal = adminTotal
            d.adminActions = adminActions.map {
                AdminAction(seq: $0.seq, time: $0.time, action: $0.action, token: $0.token, caller: who[$0.caller], outcome: $0.outcome, reason: $0.reason)
            }
            d.neverRead = context.tokens.filter { d.readsPerToken[$0] == nil }.sorted()
            let readers = Set(who.indices.filter { readsPerCaller[$0] > 0 }.map { who[$0] })
            d.newReaders = since == nil ? [] : readers.subtracting(priorReaders.map { who[$0] }).sorted()
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
