import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The auditor's commands at scale, as an admin runs them against a real daemon: the second sink and the
/// witness command configured in tokenvault.toml, `status`, `audit index`, `query --count`, `verify --witness`.
@Suite("tokenvault audit: index, count, second sink, witnesses")
struct AuditScaleCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads"], "EAAB-scale-canary-1"), (["put", "acme/other"], "EAAB-scale-2")]
            as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/ads\"]\n".write(toFile: dir.path + "/vault/policy.toml", atomically: true, encoding: .utf8)
    }

    @Test func aDaemonWithBothSinksAndAWitnessThenTheAuditorsCommands() throws {
        let journal = dir.path + "/log.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(journal.utf8)) }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        let witnessFile = dir.path + "/witness.jsonl"
        try """
            [audit]
            syslog = true
            syslog_socket = "\(journal)"
            witness_command = "cat >> '\(witnessFile)'"
            """.write(toFile: home + "/tokenvault.toml", atomically: true, encoding: .utf8)
        let daemon = try cli.serve()
        for _ in 0..<5 { #expect(try cli.run(["get", "acme/ads", "--socket", home + "/tokenvault.sock"]).status == 0) }
        #expect(try cli.run(["get", "acme/other", "--socket", home + "/tokenvault.sock"]).status != 0)
        usleep(1_500_000)  // the idle tail is signed and witnessed within a second
        let status = try cli.run(["status", "--json"])
        let audit = (try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])?["audit"] as? [String: Any] ?? [:]
        #expect((audit["syslog_sent"] as? Int ?? 0) >= 6 && audit["syslog_dropped"] as? Int == 0, "\(status.all)")
        #expect((audit["witness_sent"] as? Int ?? 0) >= 1 && audit["witness_failed"] as? Int == 0, "\(status.all)")
        #expect(try cli.run(["status"]).stdout.contains("syslog "))
        CLI.stop(daemon)

        // What reached the socket (syslog's format: the path is not the journal's): the records, never a token.
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var messages: [String] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(listener, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            guard n > 0 else { break }
            messages.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
        #expect(messages.filter { $0.contains("\"token\":\"acme/ads\"") && $0.hasPrefix("<86>tokenvault[\(daemon.processIdentifier)]: {\"seq\":") }.count == 5)
        #expect(!messages.contains { $0.contains("EAAB-") })

        // The auditor: index, count, verify against the witness file.
        let index = try cli.run(["audit", "index"])
        #expect(index.status == 0 && index.stdout.contains("indexed 1 of 1 segment(s)"), "\(index.all)")
        #expect(try cli.run(["audit", "query", "--token", "acme/ads", "--action", "get", "--count"]).stdout == "5\n")
        #expect(try cli.run(["audit", "query", "--outcome", "denied", "--count"]).stdout == "1\n")
        let json = try cli.run(["audit", "query", "--token", "acme/*", "--json"]).stdout.split(separator: "\n")
        #expect(json.count >= 8 && json.allSatisfy { $0.hasPrefix("{\"seq\":") })
        // The collected file also holds another host's statements (a shared journal): they are not this
        // vault's to check, and are passed over unless asked for.
        let foreign = #"{"witness":"tokenvault-audit-v1","host":"other-host","seq":1,"time":"2026-12-01T00:00:00.000000Z","hash":""#
            + String(repeating: "ab", count: 32) + #"","sig":""# + String(repeating: "cd", count: 64) + "\"}\n"
        let handle = try #require(FileHandle(forWritingAtPath: witnessFile))
        handle.seekToEndOfFile()
        handle.write(Data(foreign.utf8))
        try handle.close()
        let verified = try cli.run(["audit", "verify", "--witness", witnessFile])
        #expect(verified.status == 0 && verified.stdout.contains("witness: "), "\(verified.all)")
        #expect(try cli.run(["audit", "verify", "--witness", witnessFile, "--witness-host", "other-host"]).status == 6)

        // A rewrite: the witnessed record's token changed (verify fails first; with a public key and a
        // copy, the witness check is what names it).
        let segment = home + "/audit/audit-000001.jsonl"
        let text = try String(contentsOfFile: segment, encoding: .utf8)
        try text.replacingOccurrences(of: "\"token\":\"acme/ads\"", with: "\"token\":\"acme/adz\"").write(toFile: segment, atomically: false, encoding: .utf8)
        let bad = try cli.run(["audit", "verify", "--witness", witnessFile])
        #expect(bad.status == 6, "\(bad.all)")
        #expect(try cli.run(["audit", "verify", "--witness", dir.path + "/missing.jsonl"]).status != 0)
    }

    /// The report in a real browser: headless Chromium (Debian's `chromium`, installed by `make deps` and
    /// .ci/run) loads the page and dumps the DOM it built; each section must be there with its facts.
    @Test func theHTMLReportRendersInChromiumWithEverySection() throws {
        #expect(try cli.run(["put", "acme/never"], stdin: "EAAB-scale-3").status == 0)
        let daemon = try cli.serve()
        for _ in 0..<3 { #expect(try cli.run(["get", "acme/ads", "--socket", home + "/tokenvault.sock"]).status == 0) }
        #expect(try cli.run(["get", "acme/other", "--socket", home + "/tokenvault.sock"]).status != 0)
        CLI.stop(daemon)
        let page = dir.path + "/report.html"
        let r = try cli.run(["audit", "report", "--html", page, "--since", "30d"])
        #expect(r.status == 0, "\(r.all)")

        let browser = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let browser else {
            Issue.record("headless Chromium is not installed (Debian's chromium package; `make deps` installs it)")
            return
        }
        // Bounded: a browser that hangs fails the test after a minute.
        let dom = try runProcess("/usr/bin/timeout", ["60", browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "file://" + page])
        #expect(dom.status == 0, "\(dom.stderr.suffix(500))")
        func text(_ id: String) -> String {
            guard let start = dom.stdout.range(of: "<section id=\"\(id)\">"),
                  let end = dom.stdout.range(of: "</section>", range: start.upperBound..<dom.stdout.endIndex) else { return "" }
            return String(dom.stdout[start.upperBound..<end.lowerBound]).replacingOccurrences(of: "<[^>]+>", with: " ", options: .regularExpression)
                .replacingOccurrences(of: "&amp;", with: "&")
        }
        let me = getpwuid(getuid()).map { String(cString: $0.pointee.pw_name) } ?? "uid \(getuid())"
        #expect(text("period").contains(home))
        #expect(text("verdict").contains("OK:") && text("verdict").contains("signatures through seq"), "\(text("verdict"))")
        #expect(text("reads-per-day").contains("3 reads over"))
        #expect(text("reads-per-token").contains("acme/ads") && text("reads-per-token").contains(" 3 "))
        #expect(text("reads-per-caller").contains("\(me) (uid \(getuid()))"), "\(text("reads-per-caller"))")
        #expect(text("refusals").contains("denied") && text("refusals").contains(me))
        #expect(text("admin-actions").contains("put") && text("admin-actions").contains("acme/never"))
        #expect(text("never-read").contains("acme/never") && !text("never-read").contains("acme/ads"))
        #expect(text("new-readers").contains(me))
        #expect(text("policy-vs-actual").contains("acme/other") && text("policy-vs-actual").contains("nobody"))
        #expect(!dom.stdout.contains("EAAB-"), "no token in the page")
    }
}
