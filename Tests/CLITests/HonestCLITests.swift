import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The rest of "a CLI that never misleads": each test fails on the CLI as a new user found it.
@Suite("a CLI that never misleads")
struct HonestCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads"], "EAAB-honest-1"), (["put", "acme/page"], "EAAB-honest-2"),
                              (["put", "other/x"], "EAAB-honest-3")] as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
    }

    /// Runs `tokenvault ARGS` on a pseudo-terminal (util-linux `script`), typing `answer` once it asks.
    func onTerminal(_ args: [String], answer: String) throws -> ProcessResult {
        let command = ([CLI.binary] + args).map { "'\($0)'" }.joined(separator: " ")
        return try runProcess("/bin/sh", ["-c", "(sleep 1; printf '\(answer)\\n') | script -qec \"\(command)\" /dev/null"],
                              environment: testEnvironment(home: home))
    }

    /// README's table, row by row, is the one `--help` prints from the CLI's Exit table (ExitCodes.swift).
    @Test func theExitCodeTableIsTheREADMEs() throws {
        let readme = try String(contentsOfFile: Self.root + "/README.md", encoding: .utf8)
        let rows = readme.split(separator: "\n").filter { $0.hasPrefix("| ") && $0.dropFirst(2).first?.isNumber == true }
            .map { $0.dropFirst(2).dropLast(2).components(separatedBy: " | ") }
        #expect(rows.count == 13, "\(rows)")
        let dump = try cli.run(["--experimental-dump-help"]).stdout
        let object = try #require(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any])
        let help = try #require((object["command"] as? [String: Any])?["discussion"] as? String)
        let listed = help.components(separatedBy: "Exit codes: ").last?.dropLast().components(separatedBy: "; ") ?? []
        #expect(listed == rows.map { "\($0[0]) \($0[1])" }, "README: \(rows)\nhelp: \(listed)")
    }

    @Test func aWrongExportPassphraseIsAKeyProblem() throws {
        try "correct horse battery".write(toFile: dir.path + "/pass", atomically: true, encoding: .utf8)
        try "wrong horse battery".write(toFile: dir.path + "/wrong", atomically: true, encoding: .utf8)
        #expect(try cli.run(["export", "--sealed", "--output", dir.path + "/b.tvx", "--export-passphrase-file", dir.path + "/pass"]).status == 0)
        let r = try cli.run(["import", "--format", "sealed", dir.path + "/b.tvx", "--export-passphrase-file", dir.path + "/wrong", "--force"])
        #expect(r.status == 5 && r.stderr.contains("passphrase does not open this sealed export"), "\(r.all)")
    }

    @Test func metaCheckOfATokenWithoutAnAppSaysWhatToDo() throws {
        let r = try cli.run(["meta", "check", "acme/ads"])
        #expect(r.status == 2, "\(r.all)")
        #expect(r.stderr.contains("acme/ads was stored without an app, so Meta cannot check it") && !r.stderr.contains("(none"), "\(r.stderr)")
        #expect(r.stderr.contains("tokenvault put acme/ads --app APP --force"))
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run the CLI as another user"))
    func anotherUsersVaultIsPermissionDeniedNotMissing() throws {
        chmod(dir.path, 0o755)
        let r = try runProcess("/usr/bin/setpriv", ["--reuid", "65534", "--regid", "65534", "--clear-groups", CLI.binary, "get", "acme/ads", "--home", home])
        #expect(r.status == 8, "\(r.all)")
        #expect(r.stderr.contains("permission denied") && r.stderr.contains("--socket") && !r.stderr.contains("run `tokenvault init`"), "\(r.stderr)")
    }

    @Test func listTakesAPrefix() throws {
        let r = try cli.run(["list", "acme/", "--json"])
        let names = r.stdout.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["name"] as? String }
        #expect(names == ["acme/ads", "acme/page"], "\(r.all)")
        #expect(try cli.run(["list", "acme/*"]).stdout.contains("acme/page"))
        #expect(!(try cli.run(["list", "acme/*"]).stdout.contains("other/x")))
    }

    @Test func rmAsksOnATerminalAndNotInAScript() throws {
        let declined = try onTerminal(["rm", "acme/ads"], answer: "n")
        #expect(declined.status == 1 && declined.all.contains("Delete token acme/ads?"), "\(declined.all)")
        #expect(try cli.run(["show", "acme/ads"]).status == 0, "declined: still there")
        let accepted = try onTerminal(["rm", "acme/ads"], answer: "y")
        #expect(accepted.status == 0 && accepted.all.contains("removed acme/ads"), "\(accepted.all)")
        let yes = try onTerminal(["rm", "acme/page", "--yes"], answer: "n")
        #expect(yes.status == 0 && !yes.all.contains("Delete token"), "--yes does not ask: \(yes.all)")
        #expect(try cli.run(["rm", "other/x"]).status == 0, "no terminal: no question")
    }

    @Test func appRmRefusesWhileTokensUseTheAppAndIsAudited() throws {
        #expect(try cli.run(["app", "add", "acme", "--app-id", "1234"], stdin: "app-secret-acme").status == 0)
        #expect(try cli.run(["put", "acme/shop", "--app", "acme"], stdin: "EAAB-shop").status == 0)
        let used = try cli.run(["app", "rm", "acme", "--yes"])
        #expect(used.status == 2 && used.stderr.contains("still used by 1 token"), "\(used.all)")
        #expect(try cli.run(["rm", "acme/shop", "--yes"]).status == 0)
        #expect(try cli.run(["app", "rm", "acme", "--yes"]).status == 0)
        #expect(!(try cli.run(["app", "list"]).all.contains("1234")))
        #expect(try cli.run(["app", "rm", "acme", "--yes"]).status == 3)
        #expect(try cli.run(["audit", "query", "--action", "app_rm", "--json"]).stdout.contains("\"outcome\":\"granted\""))
        #expect(try cli.run(["key", "retire", "--help"]).stdout.contains("--yes"))
    }

    @Test func auditTailFollowPrintsTheHeaderOnce() throws {
        // tail -f for 4 s (coreutils' timeout stops it), while three records arrive one by one.
        let log = dir.path + "/tail.out"
        let done = DispatchSemaphore(value: 0)
        let env = testEnvironment(home: home)
        DispatchQueue.global().async {
            _ = try? runProcess("/bin/sh", ["-c", "timeout 4 '\(CLI.binary)' audit tail -f > '\(log)'"], environment: env)
            done.signal()
        }
        usleep(800_000)
        for i in 0..<3 {
            #expect(try cli.run(["put", "late/\(i)"], stdin: "EAAB-late").status == 0)
            usleep(600_000)
        }
        done.wait()
        let out = try String(contentsOfFile: log, encoding: .utf8)
        #expect(out.components(separatedBy: "SEQ ").count - 1 == 1, "one header: \(out)")
        #expect(out.contains("late/2"), "\(out)")
    }

    @Test func theDocsLinkOnlyToFilesInTheRepository() throws {
        let docs = try FileManager.default.contentsOfDirectory(atPath: Self.root + "/Docs").filter { $0.hasSuffix(".md") }.map { "Docs/" + $0 }
        var broken: [String] = []
        for file in docs + ["README.md", "Keys/README.md"] {
            guard let text = try? String(contentsOfFile: Self.root + "/" + file, encoding: .utf8) else { continue }
            if text.contains("../shared") { broken.append("\(file) names ../shared") }
            let base = (file as NSString).deletingLastPathComponent
            var rest = Substring(text)
            while let open = rest.range(of: "](") {
                rest = rest[open.upperBound...]
                guard let close = rest.firstIndex(of: ")") else { break }
                let target = String(rest[..<close]).split(separator: "#").first.map(String.init) ?? ""
                rest = rest[close...]
                if target.isEmpty || target.contains("://") || target.hasPrefix("mailto:") { continue }
                let resolved = URL(fileURLWithPath: Self.root + "/" + base + "/" + target).standardized.path
                if !resolved.hasPrefix(Self.root + "/") || !FileManager.default.fileExists(atPath: resolved) {
                    broken.append("\(file) → \(target)")
                }
            }
        }
        #expect(broken.isEmpty, "\(broken)")
    }
}

/// Help that survives the argument parser's own wrapping (at 80 columns): prose is written as whole
/// paragraphs, which the parser wraps; examples stand on short, indented lines of their own, which it leaves.
@Suite("help text layout")
struct HelpLayoutTests {
    @Test func everyDiscussionIsParagraphsAndShortExampleLines() throws {
        let dump = try runProcess(CLI.binary, ["--experimental-dump-help"]).stdout
        let root = try #require(try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any])
        var problems: [String] = []
        func walk(_ command: [String: Any], _ path: String) {
            let lines = (command["discussion"] as? String ?? "").components(separatedBy: "\n")
            for (i, line) in lines.enumerated() {
                let indented = line.hasPrefix("  ")
                if indented && line.count > 78 { problems.append("\(path): example longer than 78 columns: \(line)") }
                if !indented && line.contains("tokenvault ") && line.hasPrefix("Example") {
                    problems.append("\(path): an example inline with prose: \(line)")
                }
                if i + 1 < lines.count, !line.isEmpty, !indented, !lines[i + 1].isEmpty, !lines[i + 1].hasPrefix("  ") {
                    problems.append("\(path): a paragraph broken by hand after \"\(line.suffix(30))\"")
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] {
                walk(sub, path + " " + (sub["commandName"] as? String ?? "?"))
            }
        }
        walk(try #require(root["command"] as? [String: Any]), "tokenvault")
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
