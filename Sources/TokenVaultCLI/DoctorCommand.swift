import ArgumentParser
import Foundation
import MetaGraph
import MetaLifecycle
import VaultAudit
import VaultCore
import VaultDaemon
import VaultPolicy
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault doctor`: every check an admin would run by hand, each problem with the command that fixes it.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check the vault, its keys, audit log, policy, socket and Meta settings; say how to fix each problem.",
        discussion: """
            Checks the home's and the keyring's modes and owners, every master key the store needs, that every \
            sealed token and app secret opens, `audit verify`, the policy (one that grants nothing or grants \
            every token is a problem), the socket and its group, tokens that have expired, expire soon or \
            were found invalid, and the Graph settings. Exit 0 when all is well, 1 when a problem was found.

            Example:
              sudo -u tokenvault tokenvault doctor --home /var/lib/tokenvault \\
                --keys /etc/tokenvault/keys
            """)

    @OptionGroup var vault: VaultOptions
    @OptionGroup var serve: ServeOptions
    @OptionGroup var graph: GraphOptions
    @Flag(help: "One JSON object per check: check, ok, message, fix.") var json = false

    struct Finding {
        let check: String
        let ok: Bool
        let message: String
        var fix: String?
    }

    func run() throws {
        let findings = examine()
        if json {
            for f in findings {
                var o: [String: Any] = ["check": f.check, "ok": f.ok, "message": f.message]
                if let fix = f.fix { o["fix"] = fix }
                print(Output.jsonLine(o))
            }
        } else {
            let width = findings.map(\.check.count).max() ?? 0
            for f in findings {
                print("\(f.ok ? "ok     " : "PROBLEM") \(f.check.padding(toLength: width, withPad: " ", startingAt: 0))  \(f.message)")
                if let fix = f.fix { print(String(repeating: " ", count: width + 10) + "fix: \(fix)") }
            }
            let problems = findings.filter { !$0.ok }.count
            print(problems == 0 ? "\nall \(findings.count) checks passed" : "\n\(problems) problem\(problems == 1 ? "" : "s") found")
        }
        if findings.contains(where: { !$0.ok }) { throw ExitCode(Exit.failure.rawValue) }
    }

    func examine() -> [Finding] {
        var out: [Finding] = []
        func ok(_ check: String, _ message: String) { out.append(Finding(check: check, ok: true, message: message)) }
        func problem(_ check: String, _ message: String, fix: String?) { out.append(Finding(check: check, ok: false, message: message, fix: fix)) }
        let home = vault.vaultHome

        // The home and its owner.
        var st = stat()
        guard stat(home.root, &st) == 0 else {
            problem("home", "no vault home at \(home.root)", fix: "tokenvault init --home \(home.root)")
            return out
        }
        if st.st_uid != geteuid() {
            problem("home", "\(home.root) is owned by uid \(st.st_uid), not by uid \(geteuid()) that runs this", fix: "run doctor as the vault's user (sudo -u …), or chown -R \(geteuid()) \(home.root)")
        } else if st.st_mode & 0o077 != 0 {
            problem("home", "\(home.root) is mode \(String(st.st_mode & 0o777, radix: 8)): others can see into the vault", fix: "chmod 700 \(home.root)")
        } else {
            ok("home", "\(home.root) is private (0700, yours)")
        }

        // Settings: the same resolution serve does.
        let settings: ServeSettings
        do { settings = try ServeSettings.resolve(vault: vault, serve: serve, graph: graph) } catch let e as CLIFailure {
            problem("config", e.message.replacingOccurrences(of: "error: ", with: ""), fix: "edit \(home.root)/tokenvault.toml (see `tokenvault config show`)")
            return out
        } catch {
            problem("config", "\(error)", fix: "edit \(home.root)/tokenvault.toml")
            return out
        }
        ok("config", "settings resolve (`tokenvault config show` prints them)")

        // The keyring's directory and files.
        let keysDir = home.keysDirectory
        if stat(keysDir, &st) != 0 {
            problem("keyring", "no keyring at \(keysDir)", fix: "restore the key files from your backup into \(keysDir) (mode 0700, each key 0600)")
        } else {
            var loose: [String] = []
            if st.st_mode & 0o077 != 0 { loose.append("\(keysDir) is mode \(String(st.st_mode & 0o777, radix: 8))") }
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: keysDir)) ?? []).sorted() {
                var f = stat()
                guard lstat(keysDir + "/" + name, &f) == 0, (f.st_mode & S_IFMT) == S_IFREG else { continue }
                if f.st_mode & 0o077 != 0 { loose.append("\(name) is mode \(String(f.st_mode & 0o777, radix: 8))") }
            }
            if loose.isEmpty {
                ok("keyring", "\(keysDir) and its files are private")
            } else {
                problem("keyring", loose.joined(separator: "; "), fix: "chmod 700 \(keysDir) && chmod 600 \(keysDir)/*")
            }
        }

        // The vault itself: opens, keys present, every seal opens.
        let v: Vault
        do { v = try vault.openVault() } catch {
            let (message, fix) = Self.explain(error)
            problem("store", message, fix: fix ?? "see the message above")
            return out
        }
        if let keys = try? v.masterKeys() {
            let missing = keys.filter { $0.source == nil }
            if missing.isEmpty {
                ok("keys", "\(keys.count) master key\(keys.count == 1 ? "" : "s") in the keyring, current \(keys.first(where: \.isCurrent)?.id ?? "none")")
            } else {
                problem("keys", "the store needs master key\(missing.count == 1 ? "" : "s") \(missing.map(\.id).joined(separator: ", ")), not in \(keysDir)",
                        fix: "copy \(missing.map(\.id).joined(separator: ", ")) from your key backup (or another host) into \(keysDir), mode 0600")
            }
        }
        do {
            try v.unlock()
            let opened = try v.openAll()
            ok("store", "every sealed token opens (\(opened)), metadata MACs hold")
        } catch {
            let (message, fix) = Self.explain(error)
            problem("store", message, fix: fix ?? "restore it from a backup (Docs/OPERATIONS.md), or put the key the message names in \(keysDir)")
        }

        // The audit log.
        do {
            if let report = try AuditCommand.verifyLocal(v, directory: home.auditDirectory) {
                if let bad = report.problem {
                    problem("audit", "audit verify fails after \(report.records) good records: \(bad)",
                            fix: "tokenvault audit verify (details), then Docs/AUDIT.md: keep the damaged segment as evidence")
                } else {
                    ok("audit", "\(report.records) records verify (seq \(report.firstSeq)–\(report.lastSeq)); the checkpoint is \(report.lastSeq - max(report.checkpointSeq ?? 0, report.anchorSeq ?? 0)) behind")
                }
            } else {
                ok("audit", "nothing audited yet")
            }
        } catch {
            let (message, fix) = Self.explain(error)
            problem("audit", message, fix: fix ?? "tokenvault audit verify")
        }

        // The policy.
        let policyPath = settings.string("policy") ?? home.policyPath
        do {
            let policy = try Policy.load(path: policyPath)
            let everything = policy.rules.filter { $0.tokens.contains("*") }
            if policy.rules.isEmpty {
                problem("policy", "\(policyPath) grants nothing: every read over the socket is refused",
                        fix: "add an [[allow]] rule (uid/user/gid/group and tokens) to \(policyPath), then `tokenvault policy reload`")
            } else if !everything.isEmpty {
                problem("policy", "\(policyPath) grants every token (\"*\") at line\(everything.count == 1 ? "" : "s") \(everything.map { String($0.line) }.joined(separator: ", "))",
                        fix: "list the names or prefixes each caller needs (\"acme/*\") in \(policyPath)")
            } else {
                ok("policy", "\(policy.rules.count) rule\(policy.rules.count == 1 ? "" : "s") in \(policyPath)")
            }
        } catch {
            problem("policy", "\(error)", fix: "fix \(policyPath) (`tokenvault policy check` explains a decision)")
        }

        // The socket: a live daemon, or a stale file; its group.
        let socketPath = settings.string("socket") ?? home.socketPath
        if let group = settings.string("socket_group"), UInt32(group) == nil, Accounts.gid(ofGroup: group) == nil {
            problem("socket", "socket_group \(group) (\(settings.source("socket_group"))) is no group on this host", fix: "groupadd \(group), or change socket_group")
        }
        if access(socketPath, F_OK) == 0 {
            if let pid = DaemonProbe.pid(socketPath: socketPath) {
                ok("socket", "a daemon (pid \(pid)) answers on \(socketPath)")
            } else {
                problem("socket", "\(socketPath) exists but no daemon answers on it", fix: "systemctl restart tokenvault (or `tokenvault serve`)")
            }
        } else {
            ok("socket", "no daemon is serving \(socketPath) now (not needed for the CLI)")
        }

        // Tokens that need someone.
        let warnDays = settings.int("warn_days") ?? 7
        if let records = try? v.list() {
            let now = Int64(Date().timeIntervalSince1970)
            let states = (try? MetaTokenService.states(of: v)) ?? [:]
            var clean = true
            for r in records {
                let expiry = TokenExpiry(r, now: now, warnDays: warnDays)
                let m = states[r.name]
                if m?.appMismatch == true {
                    clean = false
                    problem("token \(r.name)", "it was issued for app \(m?.appId ?? "?"), not for \(r.app ?? "its app")",
                            fix: "store it with the app it belongs to (`tokenvault put \(r.name) --app APP --force`), or get one from \(r.app ?? "its app")")
                } else if m?.state == TokenState.scopeMissing.rawValue {
                    clean = false
                    problem("token \(r.name)", "a required scope is missing (requires \(m?.required.joined(separator: ",") ?? ""))",
                            fix: "`tokenvault meta login \(r.name) --app \(r.app ?? "APP") --rerequest --force`, or for a system user, Business Manager")
                } else if r.valid == false {
                    clean = false
                    problem("token \(r.name)", "Meta says it is invalid\(r.lastError.map { ": \($0)" } ?? "")",
                            fix: "re-issue it (Docs/META.md), then `tokenvault put \(r.name) --force`")
                } else if case .expired(let e)? = expiry {
                    clean = false
                    problem("token \(r.name)", "expired \(Output.date(e))", fix: "re-issue it, then `tokenvault put \(r.name) --force` (or `tokenvault meta login \(r.name)`)")
                } else if case .expiring(let e)? = expiry {
                    clean = false
                    problem("token \(r.name)", "expires \(Output.date(e)), within \(warnDays) days", fix: "tokenvault meta extend \(r.name)")
                }
            }
            if clean { ok("tokens", "\(records.count) token\(records.count == 1 ? "" : "s"), none expired, expiring within \(warnDays) days, or invalid") }
        }

        // The Graph settings.
        let url = settings.string("graph_url") ?? GraphConfiguration.defaultBaseURL.absoluteString
        let version = settings.string("graph_version") ?? GraphConfiguration.defaultVersion
        if let u = URL(string: url), u.scheme == "https" || ["127.0.0.1", "localhost", "::1"].contains(u.host ?? "") {
            if let warning = GraphVersions.warning(for: version) {
                problem("graph", "graph_version \(version) (\(settings.source("graph_version"))): \(warning)", fix: "graph_version = \"\(GraphConfiguration.defaultVersion)\"")
            } else {
                ok("graph", "\(url), \(version)" + (GraphVersions.version(version)?.availableUntil.map { " (available until \($0))" } ?? ""))
            }
        } else {
            problem("graph", "graph_url \(url) (\(settings.source("graph_url"))) is not https: tokens would cross the network in clear", fix: "graph_url = \"https://graph.facebook.com\"")
        }
        return out
    }

    /// An error's message, and the fix it names ("…; refusing to use it. Fix: chmod 600 …"), when it names one.
    static func explain(_ error: any Error) -> (message: String, fix: String?) {
        let text = (error as? CLIFailure).map { $0.message.replacingOccurrences(of: "error: ", with: "") } ?? "\(error)"
        if let r = text.range(of: " Fix: ") { return (String(text[..<r.lowerBound]), String(text[r.upperBound...])) }
        return (text, nil)
    }
}
