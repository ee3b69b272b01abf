import Foundation
import Testing
import VaultPolicy

@Suite("policy.toml")
struct PolicyTests {
    let text = """
        # ads sync reads its own tokens
        [[allow]]
        uid = 1001
        tokens = ["acme/*", "shared/reporting"]
        proof = true
        rate = 50

        [[allow]]
        group = "root"
        tokens = ["ops/backup"]

        [[allow]]
        user = "nobody"
        tokens = ["*"]
        """

    func caller(_ uid: UInt32, gid: UInt32 = 5000, groups: [UInt32] = []) -> Caller {
        Caller(uid: uid, gid: gid, pid: 1, supplementaryGroups: groups)
    }

    @Test func parsesTheDesignExample() throws {
        let policy = try Policy.parse(text)
        #expect(policy.rules.count == 3)
        #expect(policy.rules[0] == Policy.Rule(subject: .uid(1001), tokens: ["acme/*", "shared/reporting"], proof: true, rate: 50, line: 2))
        #expect(policy.rules[1].subject == .gid(0) && policy.rules[1].line == 8)
        #expect(policy.rules[2].subject == .uid(65534))
    }

    @Test func exactNamesAndPrefixes() throws {
        let policy = try Policy.parse(text)
        let ads = caller(1001)
        #expect(policy.decide(ads, name: "acme/ads").allowed)
        #expect(policy.decide(ads, name: "acme/").allowed)
        #expect(policy.decide(ads, name: "shared/reporting").allowed)
        #expect(!policy.decide(ads, name: "shared/reporting2").allowed)
        #expect(!policy.decide(ads, name: "acmeX/ads").allowed)
        #expect(!policy.decide(ads, name: "ops/backup").allowed)
        #expect(policy.decide(ads, name: "acme/ads").proof)
        #expect(policy.decide(caller(65534), name: "anything/at/all").allowed)
        #expect(!policy.decide(caller(65534), name: "x").proof)
        // The daemon's verdict-only path agrees with decide on every case.
        for (who, name) in [(ads, "acme/ads"), (ads, "acme/"), (ads, "acme"), (ads, "shared/reporting"), (ads, "shared/reporting2"),
                            (ads, "acmeX/ads"), (ads, "ops/backup"), (caller(65534), "x"), (caller(7), "acme/ads")] {
            let d = policy.decide(who, name: name)
            #expect(policy.permits(who, name: name) == (d.allowed, d.proof), "\(who.uid) \(name)")
        }
        // list's filter agrees with decide too, and a caller no rule applies to never reads the names.
        let all = ["acme/ads", "acme/", "acme", "shared/reporting", "shared/reporting2", "acmeX/ads", "ops/backup"]
        for who in [ads, caller(65534)] {
            #expect(policy.readableNames(by: who, from: { all }) == all.filter { policy.decide(who, name: $0).allowed })
        }
        #expect(policy.readableNames(by: caller(7), from: { Issue.record("names read for a caller with no rule"); return all }).isEmpty)
    }

    @Test func defaultDenyIncludesRoot() throws {
        let policy = try Policy.parse("[[allow]]\nuid = 1001\ntokens = [\"*\"]\n")
        let d = policy.decide(caller(0, gid: 0), name: "acme/ads")
        #expect(!d.allowed)
        #expect(d.explanation.contains("default deny"))
        #expect(!Policy.denyAll.decide(caller(0, gid: 0), name: "x").allowed)
        #expect(try Policy.parse("").rules.isEmpty)
    }

    @Test func groupRulesMatchPrimaryAndSupplementaryGroups() throws {
        let policy = try Policy.parse("[[allow]]\ngid = 1002\ntokens = [\"ads/*\"]\n")
        #expect(policy.decide(caller(1, gid: 1002), name: "ads/x").allowed)
        #expect(policy.decide(caller(1, gid: 7, groups: [9, 1002]), name: "ads/x").allowed)
        #expect(!policy.decide(caller(1, gid: 7, groups: [9]), name: "ads/x").allowed)
    }

    @Test func rateIsTheMostGenerousMatchingRule() throws {
        let policy = try Policy.parse("""
            [[allow]]
            uid = 1
            tokens = ["a"]
            rate = 5
            [[allow]]
            uid = 1
            tokens = ["b"]
            rate = 20
            [[allow]]
            uid = 2
            tokens = ["a"]
            """)
        #expect(policy.rate(for: caller(1)) == 20)
        #expect(policy.rate(for: caller(2)) == nil)
    }

    @Test(arguments: [
        ("[[allow]]\nuid = 1\ntokens = [\"a\"\n", 3, "parsing"),
        ("[[allow]]\nuid = 1\n\n[[allow]]\nuid = 2\ntokens = [\"a\"]\n", 1, "tokens must be"),
        ("[[allow]]\nuid = 1\nuser = \"root\"\ntokens = [\"a\"]\n", 1, "exactly one"),
        ("[[allow]]\nuid = 1\ntokens = [\"a\"]\n[[allow]]\nuid = 1\ntokens = [\"a*b\"]\n", 4, "only at the end"),
        ("[[allow]]\nuser = \"no-such-user-xyz\"\ntokens = [\"a\"]\n", 1, "no such user"),
        ("[[allow]]\nuid = 1\ntokens = [\"a\"]\nrole = \"admin\"\n", 1, "unknown key"),
        ("[[allow]]\nuid = -1\ntokens = [\"a\"]\n", 1, "non-negative"),
        ("[[allow]]\nuid = 1\ntokens = [\"a\"]\nrate = 0\n", 1, "positive"),
        ("default = \"allow\"\n", 1, "unknown key"),
    ])
    func badFilesNameTheirLine(text: String, line: Int, fragment: String) {
        #expect {
            try Policy.parse(text, path: "policy.toml")
        } throws: { error in
            guard let e = error as? PolicyError else { return false }
            return e.line == line && e.message.contains(fragment) && "\(e)".hasPrefix("policy.toml:\(line):")
        }
    }
}

/// The inputs the fuzzer found that crashed the TOML library underneath (an assertion that a release
/// build turns into undefined behaviour), and the rest of the seed corpus: each is parsed or refused with
/// a line number, on every test run.
@Suite("policy.toml against the fuzz corpus")
struct PolicyFuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/FuzzPolicy").path

    @Test func everyCorpusFileParsesOrIsRefusedWithALine() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus)
        #expect(files.contains { $0.hasPrefix("crash-") })
        for name in files {
            let text = String(decoding: FileManager.default.contents(atPath: Self.corpus + "/" + name) ?? Data(), as: UTF8.self)
            do { _ = try Policy.parse(text) } catch let e as PolicyError {
                #expect(e.line > 0, "\(name): \(e)")
            }
        }
    }

    @Test(arguments: ["[\u{1}", "[\u{FFFD}", "\u{FEFF}[\u{FFFD}", "[\u{6E4}", "[\n", "s=[}", "a = {b = 1}", "a = \"\"\"x\"\"\"",
                      "a = 0x1f", "a = 1979-05-27", "a = \"\\q\"", "a.b = 1", "[[allow]\n"])
    func malformedPolicyTextIsRefusedBeforeTheLibrary(text: String) {
        #expect(throws: PolicyError.self) { try Policy.parse(text) }
    }
}
