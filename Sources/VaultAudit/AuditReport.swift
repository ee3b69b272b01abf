import Foundation

/// The auditor's report: one self-contained HTML page (no scripts, no external files), with the
/// verification verdict, reads per token per day, callers per token and refusals over time as SVG charts.
/// The figures are also embedded as JSON (`<script type="application/json" id="report-data">`).
public enum AuditReport {
    public struct Data: Codable, Sendable, Equatable {
        public var verified: Bool
        public var verdict: String
        public var records: Int
        public var days: [String]
        /// token → day → granted reads.
        public var readsPerTokenPerDay: [String: [String: Int]]
        /// token → "uid N (exe)" → reads.
        public var callersPerToken: [String: [String: Int]]
        /// day → refused reads (denied, rate_limited, not_found, failed).
        public var refusalsPerDay: [String: Int]
    }

    static let reads: Set<String> = ["get", "get+proof", "list"]

    public static func data(entries: [AuditEntry], verification: AuditVerifier.Report) -> Data {
        var perTokenDay: [String: [String: Int]] = [:]
        var callers: [String: [String: Int]] = [:]
        var refusals: [String: Int] = [:]
        var days = Set<String>()
        for e in entries where reads.contains(e.action) {
            days.insert(e.day)
            let token = e.token ?? "(list)"
            if e.outcome == "granted" {
                perTokenDay[token, default: [:]][e.day, default: 0] += 1
                let who = "uid \(e.uid)" + (e.exe.map { " (\($0))" } ?? "")
                callers[token, default: [:]][who, default: 0] += 1
            } else {
                refusals[e.day, default: 0] += 1
            }
        }
        let verdict = verification.problem.map { "FAILED: \($0)" }
            ?? "OK: \(verification.records) records, seq 1–\(verification.lastSeq), chain, MACs and signatures verified"
        return Data(verified: verification.ok, verdict: verdict, records: entries.count, days: days.sorted(),
                    readsPerTokenPerDay: perTokenDay, callersPerToken: callers, refusalsPerDay: refusals)
    }

    public static func html(entries: [AuditEntry], verification: AuditVerifier.Report, generated: Date) -> String {
        let d = data(entries: entries, verification: verification)
        let tokens = d.readsPerTokenPerDay.keys.sorted()
        let totalPerDay = d.days.map { day in tokens.reduce(0) { $0 + (d.readsPerTokenPerDay[$1]?[day] ?? 0) } }
        let json = (try? JSONEncoder.sortedKeys.encode(d)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        var h = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>TokenVault audit report</title>
            <style>
            body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
            table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
            th:first-child,td:first-child{text-align:left}.ok{background:#e6f4ea;padding:1em}.bad{background:#fce8e6;padding:1em}
            </style></head><body>
            <h1>TokenVault audit report</h1>
            <p>Generated \(escape(ISO8601DateFormatter().string(from: generated))) from \(d.records) records.</p>
            <h2>Verification</h2><p class="\(d.verified ? "ok" : "bad")" id="verdict">\(escape(d.verdict))</p>
            <h2>Reads per day</h2>
            \(barChart(labels: d.days, values: totalPerDay, color: "#1a73e8", id: "reads-chart"))
            <h2>Reads per token per day</h2>
            <table id="reads-table"><tr><th>token</th>\(d.days.map { "<th>\(escape($0))</th>" }.joined())<th>total</th></tr>

            """
        for token in tokens {
            let row = d.days.map { d.readsPerTokenPerDay[token]?[$0] ?? 0 }
            h += "<tr><td>\(escape(token))</td>\(row.map { "<td>\($0)</td>" }.joined())<td>\(row.reduce(0, +))</td></tr>\n"
        }
        h += "</table>\n<h2>Callers per token</h2>\n<table id=\"callers-table\"><tr><th>token</th><th>caller</th><th>reads</th></tr>\n"
        for token in d.callersPerToken.keys.sorted() {
            for (who, n) in d.callersPerToken[token]!.sorted(by: { $0.value > $1.value }) {
                h += "<tr><td>\(escape(token))</td><td>\(escape(who))</td><td>\(n)</td></tr>\n"
            }
        }
        h += "</table>\n<h2>Refusals over time</h2>\n"
        h += barChart(labels: d.days, values: d.days.map { d.refusalsPerDay[$0] ?? 0 }, color: "#d93025", id: "refusals-chart")
        h += "\n<script type=\"application/json\" id=\"report-data\">\(json.replacingOccurrences(of: "</", with: "<\\/"))</script>\n"
        h += "</body></html>\n"
        return h
    }

    /// A bar chart as inline SVG: one bar per label, its value above it.
    static func barChart(labels: [String], values: [Int], color: String, id: String) -> String {
        guard !labels.isEmpty else { return "<p id=\"\(id)\">No data.</p>" }
        let width = max(320, labels.count * 48 + 40), height = 180
        let top = max(values.max() ?? 1, 1)
        var svg = "<svg id=\"\(id)\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height + 40)\" role=\"img\">"
        for (i, (label, value)) in zip(labels, values).enumerated() {
            let h = Int(Double(value) / Double(top) * Double(height - 20))
            let x = 30 + i * 48
            svg += "<rect x=\"\(x)\" y=\"\(height - h)\" width=\"36\" height=\"\(h)\" fill=\"\(color)\"><title>\(escape(label)): \(value)</title></rect>"
            svg += "<text x=\"\(x + 18)\" y=\"\(height - h - 4)\" font-size=\"11\" text-anchor=\"middle\">\(value)</text>"
            svg += "<text x=\"\(x + 18)\" y=\"\(height + 14)\" font-size=\"10\" text-anchor=\"middle\">\(escape(String(label.suffix(5))))</text>"
        }
        return svg + "</svg>"
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

extension JSONEncoder {
    static var sortedKeys: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
