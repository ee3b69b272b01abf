import Foundation
import Synchronization
import TestSupport
import Testing
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

let binary = tokenvaultBinary

let clientsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("clients/python").path

@discardableResult
func tv(_ args: [String], home: String, graph: String, stdin: String? = nil) throws -> ProcessResult {
    try runProcess(binary, args, environment: ProcessInfo.processInfo.environment.merging(["TOKENVAULT_HOME": home, "TOKENVAULT_GRAPH_URL": graph]) { $1 },
                   stdin: stdin)
}

/// `tokenvault serve` on `home`, talking to `graph`, returned once its socket is there (or after 10 s).
func startDaemon(home: String, graph: String) throws -> Process {
    let daemon = Process()
    daemon.executableURL = URL(fileURLWithPath: binary)
    daemon.arguments = ["serve"]
    daemon.environment = ProcessInfo.processInfo.environment.merging(["TOKENVAULT_HOME": home, "TOKENVAULT_GRAPH_URL": graph]) { $1 }
    daemon.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try daemon.run()
    for _ in 0..<200 where access(home + "/tokenvault.sock", F_OK) != 0 { usleep(50_000) }
    return daemon
}

func hmacHex(_ key: String, _ message: String) -> String {
    Array(key.utf8).withUnsafeBytes { k in Array(message.utf8).withUnsafeBytes { hexString(HMACSHA256.mac(key: k, message: $0)) } }
}

@Suite("Meta commands end to end")
struct MetaEndToEndTests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }

    @Test func loginFlowRefusesAForgedStateThenStoresTheToken() async throws {
        let graph = try await FakeGraph { req in
            if req.path.hasSuffix("oauth/access_token") {
                return req.query["code"] == "AQB-login-code" && req.query["redirect_uri"]?.hasPrefix("http://localhost:") == true
                    ? FakeGraph.ok(#"{"access_token":"EAAB-from-login","token_type":"bearer","expires_in":5183944}"#)
                    : FakeGraph.error(400, code: 100, subcode: 36007, message: "Invalid verification code format.")
            }
            return FakeGraph.debug(valid: true, expiresAt: Int64(Date().timeIntervalSince1970) + 5_183_944)
        }
        #expect(try tv(["init"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["app", "add", "acme", "--app-id", "138483919580948"], home: home, graph: graph.url, stdin: appSecret).status == 0)

        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["meta", "login", "acme/ads", "--app", "acme", "--timeout", "30"]
        p.environment = ProcessInfo.processInfo.environment.merging(["TOKENVAULT_HOME": home, "TOKENVAULT_GRAPH_URL": graph.url]) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        var printed = ""
        while !printed.contains("state=") || !printed.hasSuffix("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            printed += String(decoding: chunk, as: UTF8.self)
        }
        let dialog = try #require(printed.split(separator: "\n").first { $0.hasPrefix("https://www.facebook.com/v") && $0.contains("/dialog/oauth?") })
        let items = URLComponents(string: String(dialog))?.queryItems ?? []
        let redirect = try #require(items.first { $0.name == "redirect_uri" }?.value)
        let state = try #require(items.first { $0.name == "state" }?.value)
        #expect(items.first { $0.name == "scope" }?.value == "ads_read,ads_management")
        #expect(items.first { $0.name == "client_id" }?.value == "138483919580948")

        func hit(_ query: String) async throws -> Int {
            let (_, r) = try await URLSession.shared.data(from: URL(string: redirect.replacingOccurrences(of: "localhost", with: "127.0.0.1") + "?" + query)!)
            return (r as? HTTPURLResponse)?.statusCode ?? 0
        }
        #expect(try await hit("code=AQB-attacker&state=forged") == 400)
        #expect(try tv(["list", "--json"], home: home, graph: graph.url).stdout.isEmpty, "nothing stored for a forged state")
        #expect(try await hit("code=AQB-login-code&state=\(state)") == 200)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(try tv(["get", "acme/ads"], home: home, graph: graph.url).stdout == "EAAB-from-login")
        #expect(try tv(["show", "acme/ads", "--json"], home: home, graph: graph.url).stdout.contains("\"valid\":true"))
        await graph.stop()
    }

    @Test func checkCommandExitCodesAndNotifications() async throws {
        let graph = try await FakeGraph { req in
            req.query["input_token"] == "EAAB-good" ? FakeGraph.debug(valid: true) : FakeGraph.debug(valid: false, code: 190, subcode: 458)
        }
        #expect(try tv(["init"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["app", "add", "acme", "--app-id", "138483919580948"], home: home, graph: graph.url, stdin: appSecret).status == 0)
        #expect(try tv(["put", "good", "--app", "acme"], home: home, graph: graph.url, stdin: "EAAB-good").status == 0)
        #expect(try tv(["put", "bad", "--app", "acme"], home: home, graph: graph.url, stdin: "EAAB-bad").status == 0)
        #expect(try tv(["meta", "check", "good"], home: home, graph: graph.url).status == 0)
        let inbox = dir.path + "/inbox"
        let r = try tv(["meta", "check", "--notify-command", "cat >> \(inbox)"], home: home, graph: graph.url)
        #expect(r.status == 10)
        #expect(r.stdout.contains("bad: INVALID") && r.stdout.contains("the user removed the app"))
        #expect(!r.stdout.contains("EAAB") && !r.stderr.contains("EAAB") && !r.stdout.contains(appSecret))
        let notes = try String(contentsOfFile: inbox, encoding: .utf8).split(separator: "\n")
        #expect(notes.count == 1 && notes[0].contains("\"event\":\"token_invalid\"") && notes[0].contains("\"token\":\"bad\""))
        // Again: no state change, no second notification.
        #expect(try tv(["meta", "check", "--notify-command", "cat >> \(inbox)"], home: home, graph: graph.url).status == 10)
        #expect(try String(contentsOfFile: inbox, encoding: .utf8).split(separator: "\n").count == 1)
        // proof for scripts, checked against an independent HMAC.
        let proof = try tv(["proof", "good", "--legacy"], home: home, graph: graph.url).stdout
        #expect(proof.contains(hmacHex(appSecret, "EAAB-good")))
        await graph.stop()
    }

    @Test(.enabled(if: pythonHasFacebookBusiness(), "needs `pip install facebook-business` (.ci/run installs it)"))
    func facebookBusinessSDKReadsTokenAndProofFromTheDaemon() async throws {
        let graph = try await FakeGraph { req in
            if req.path.hasSuffix("debug_token") { return FakeGraph.debug(valid: true, type: "SYSTEM_USER", expiresAt: 0) }
            guard req.path.hasSuffix("/act_101") || req.path.hasSuffix("/act_101/") else { return FakeGraph.error(404, code: 803, message: "Unknown path") }
            guard req.query["access_token"] == "EAAB-sdk-token",
                  req.query["appsecret_proof"] == hmacHex(appSecret, "EAAB-sdk-token") else {
                return FakeGraph.error(400, code: 190, message: "Invalid appsecret_proof provided in the API argument")
            }
            return FakeGraph.ok(#"{"id":"act_101","name":"Acme Ads","account_status":1}"#)
        }
        #expect(try tv(["init"], home: home, graph: graph.url).status == 0)
        #expect(try tv(["app", "add", "acme", "--app-id", "138483919580948"], home: home, graph: graph.url, stdin: appSecret).status == 0)
        #expect(try tv(["put", "acme/ads", "--kind", "system_user", "--app", "acme"], home: home, graph: graph.url, stdin: "EAAB-sdk-token").status == 0)
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\nproof = true\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        let daemon = try startDaemon(home: home, graph: graph.url)
        defer { kill(daemon.processIdentifier, SIGTERM); daemon.waitUntilExit() }
        let socket = home + "/tokenvault.sock"

        let script = """
            import json, os, sys
            sys.path.insert(0, os.environ["CLIENTS"])
            from tokenvault_client import TokenVaultClient
            from tokenvault_facebook import facebook_ads_api
            from facebook_business.adobjects.adaccount import AdAccount
            vault = TokenVaultClient(os.environ["SOCK"])
            facebook_ads_api("acme/ads", vault=vault, proof="legacy", graph_url=os.environ["FAKE_GRAPH"])
            account = AdAccount("act_101").api_get(fields=["name"])
            print(json.dumps({"name": account["name"], "kind": vault.get("acme/ads")["kind"]}))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        p.environment = ProcessInfo.processInfo.environment.merging(["CLIENTS": clientsDirectory, "FAKE_GRAPH": graph.url, "SOCK": socket]) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(errors) \(graph.requests.map { "\($0.path) \($0.query.keys.sorted())" })")
        #expect(output.contains(#""name": "Acme Ads""#) && output.contains(#""kind": "system_user""#))
        #expect(graph.requests.contains { $0.path.contains("/act_101") && $0.query["appsecret_proof"] != nil })
        await graph.stop()
    }
}
