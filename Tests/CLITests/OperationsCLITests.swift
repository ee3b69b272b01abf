import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `serve` as systemd runs it (socket activation, `Type=notify`), and its settings from `tokenvault.toml`.
@Suite("serve under systemd, and its config file")
struct OperationsCLITests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads"], "EAAB-activated-7731")] as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
    }

    /// A listening Unix socket bound at `path`, as a socket unit's ListenStream= makes it.
    func listeningSocket(_ path: String) -> CInt {
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        precondition(bound == 0 && listen(fd, 64) == 0)
        return fd
    }

    /// Starts `serve` the way systemd does: the socket as fd 3, LISTEN_PID naming the daemon itself (the shell
    /// sets it to its own pid, then execs), LISTEN_FDS and LISTEN_FDNAMES.
    func spawnActivated(listening: CInt, extraEnv: [String: String]) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, listening, 3)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ["/bin/sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=tokenvault exec \"$0\" serve", CLI.binary]
        var env = testEnvironment(home: home, extraEnv)
        env.removeValue(forKey: "LISTEN_PID")
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var pid: pid_t = 0
        precondition(posix_spawn(&pid, "/bin/sh", &actions, nil, cArgs, cEnv) == 0)
        return pid
    }

    func waitExit(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status >> 8) & 0xff
    }

    @Test func socketActivationAndReadinessReachSystemd() throws {
        let socketPath = dir.path + "/activated.sock"
        let listening = listeningSocket(socketPath)
        defer { close(listening) }
        let notify = NotifySocket(path: dir.path + "/notify")
        let pid = spawnActivated(listening: listening, extraEnv: ["NOTIFY_SOCKET": notify.path])
        var stopped = false
        defer { if !stopped { kill(pid, SIGKILL); _ = waitExit(pid) } }

        let ready = notify.receive(timeout: 20)
        #expect(ready?.hasPrefix("READY=1\nSTATUS=serving on \(socketPath)") == true, "got \(ready ?? "nothing")")
        // The daemon serves on the socket it was handed and made none of its own.
        #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).stdout == "EAAB-activated-7731")
        #expect(access(home + "/tokenvault.sock", F_OK) != 0)

        kill(pid, SIGHUP)
        #expect(notify.receive(timeout: 10)?.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") == true)
        #expect(notify.receive(timeout: 10)?.hasPrefix("READY=1") == true)

        kill(pid, SIGTERM)
        #expect(notify.receive(timeout: 10)?.hasPrefix("STOPPING=1") == true)
        #expect(waitExit(pid) == 0)
        stopped = true
        // systemd made the socket and removes it (RemoveOnStop=): the daemon leaves it alone.
        var st = stat()
        #expect(lstat(socketPath, &st) == 0)
    }

    @Test func statusReportsWhatTheDaemonDid() throws {
        let socketPath = home + "/tokenvault.sock", admin = home + "/admin.sock"
        let p = try cli.serve(waitingFor: [socketPath, admin])
        defer { CLI.stop(p) }
        var st = stat()
        #expect(lstat(admin, &st) == 0 && st.st_mode & 0o777 == 0o600, "admin.sock is owner-only")
        for _ in 0..<3 { #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).status == 0) }
        #expect(try cli.run(["get", "nope/x", "--socket", socketPath]).status == 8)

        let json = try cli.run(["status", "--json"])
        #expect(json.status == 0, "\(json.all)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let reads = try #require(o["reads"] as? [String: Any])
        #expect(reads["granted_total"] as? Int == 3 && reads["refused_total"] as? Int == 1, "\(reads)")
        let audit = try #require(o["audit"] as? [String: Any])
        #expect((audit["seq"] as? Int ?? 0) >= 4 && audit["flush_p99_us"] is Int, "\(audit)")
        // The keyring is writable, so the anchor is kept and the lag counts from the later of the two.
        #expect(audit["anchor_seq"] is Int && audit["checkpoint_seq"] is Int && audit["checkpoint_lag"] is Int, "\(audit)")
        #expect(o["policy_rules"] as? Int == 1 && o["pid"] as? Int == Int(p.processIdentifier))
        #expect((o["tokens"] as? [String: Any])?["total"] as? Int == 1)
        #expect((o["keys"] as? [String: Any])?["master_keys"] as? Int == 1)
        #expect(!json.stdout.contains("EAAB"), "no token in the status")

        let table = try cli.run(["status"])
        #expect(table.status == 0 && table.stdout.contains("reads") && table.stdout.contains("3 granted, 1 refused"), "\(table.stdout)")

        // Another user: the socket's mode keeps them out, and they are told whose it is.
        if getuid() == 0 {
            chmod(dir.path, 0o755); chmod(home, 0o711)
            defer { chmod(home, 0o700) }
            let r = try runProcess("/usr/bin/setpriv", ["--reuid", "65534", "--regid", "65534", "--clear-groups", CLI.binary, "status",
                                                        "--admin-socket", admin])
            #expect(r.status == 8 && r.stderr.contains("the daemon owner's"), "\(r.all)")
        }
    }

    /// GET /metrics over a Unix socket, HTTP/1.0 (the server closes after answering).
    func scrape(_ path: String) -> String {
        let fd = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        guard withUnsafePointer(to: &sa, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }) == 0
        else { return "" }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET /metrics HTTP/1.0\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var out: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            out += buffer[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    @Test func metricsAreOffByDefaultAndNameNoTokenUnlessAsked() throws {
        let metrics = dir.path + "/metrics.sock"
        for tokenNames in [false, true] {
            try "[metrics]\nlisten = \"unix:\(metrics)\"\ntoken_names = \(tokenNames)\n".write(toFile: home + "/tokenvault.toml", atomically: true, encoding: .utf8)
            let socketPath = home + "/tokenvault.sock"
            let p = try cli.serve(waitingFor: [socketPath, metrics])
            defer { CLI.stop(p) }  // at the end of each round: the next one serves on the same paths
            var st = stat()
            #expect(lstat(metrics, &st) == 0 && st.st_mode & 0o077 == 0, "the metrics socket is the owner's")
            for _ in 0..<2 { #expect(try cli.run(["get", "acme/ads", "--socket", socketPath]).status == 0) }
            let text = scrape(metrics)
            #expect(text.hasPrefix("HTTP/1.0 200") || text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200))")
            #expect(text.contains(#"tokenvault_reads_total{outcome="granted"} 2"#), "\(text)")
            #expect(text.contains("tokenvault_audit_flush_seconds_bucket"), "\(text)")
            #expect(text.contains(#"tokenvault_tokens{state="total"} 1"#), "\(text)")
            if !tokenNames { #expect(!text.contains("acme/ads"), "no token name unless metrics.token_names: \(text)") }
            #expect(!text.contains("EAAB"))
        }
        // Not off the host by default: a non-loopback address is refused before anything starts.
        try "[metrics]\nlisten = \"0.0.0.0:9464\"\n".write(toFile: home + "/tokenvault.toml", atomically: true, encoding: .utf8)
        let refused = try cli.run(["serve"])
        #expect(refused.status == 2 && refused.stderr.contains("only a loopback address"), "\(refused.all)")
    }

    @Test func statusWithNoDaemonSaysSo() throws {
        let r = try cli.run(["status"])
        #expect(r.status == 7 && r.stderr.contains("no daemon answers on \(home)/admin.sock"), "\(r.all)")
    }

    @Test func aPassedDescriptorThatIsNoListeningSocketIsRefused() throws {
        let datagram = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        defer { close(datagram) }
        let pid = spawnActivated(listening: datagram, extraEnv: [:])
        #expect(waitExit(pid) == 2)
    }

    @Test func theConfigFileSetsServeAndFlagsOverrideIt() throws {
        let configured = dir.path + "/from-config.sock"
        try """
            # serve settings
            socket = "\(configured)"
            idle_timeout = 30
            log_level = "warning"

            [audit]
            segment_size = 2097152
            """.write(toFile: home + "/tokenvault.toml", atomically: true, encoding: .utf8)
        let shown = try cli.run(["config", "show"])
        #expect(shown.status == 0, "\(shown.all)")
        let lines = shown.stdout.split(separator: "\n").map(String.init)
        func row(_ key: String) -> String { lines.first { $0.hasPrefix(key + " ") } ?? "" }
        #expect(row("socket").contains(configured) && row("socket").hasSuffix("tokenvault.toml:2"))
        #expect(row("idle_timeout").contains("30") && row("idle_timeout").hasSuffix("tokenvault.toml:3"))
        #expect(row("audit.segment_size").contains("2097152") && row("audit.segment_size").hasSuffix("tokenvault.toml:7"))
        #expect(row("max_connections").contains("4096") && row("max_connections").hasSuffix("default"))
        let overridden = try cli.run(["config", "show", "--idle-timeout", "5", "--json"])
        #expect(overridden.stdout.contains(#"{"key":"idle_timeout","source":"flag --idle-timeout","value":"5"}"#), "\(overridden.stdout)")

        // serve uses the file's socket.
        let p = try cli.serve(waitingFor: [configured])
        defer { CLI.stop(p) }
        #expect(try cli.run(["get", "acme/ads", "--socket", configured]).stdout == "EAAB-activated-7731")
    }

    @Test func aBadSettingNamesTheFileAndLineAndStartsNothing() throws {
        let cases: [(String, String)] = [
            ("socket = \"/tmp/x.sock\"\nidle-timeout = 5\n", "tokenvault.toml:2: unknown setting \"idle-timeout\" (did you mean \"idle_timeout\"?)"),
            ("\n\nmax_connections = \"many\"\n", "tokenvault.toml:3: max_connections must be a whole number"),
            ("threads = 0\n", "tokenvault.toml:1: threads must be 1 to 256, not 0"),
            ("log_level = \"loud\"\n", "tokenvault.toml:1: log_level must be one of"),
            ("policy = \"policy.toml\"\n", "tokenvault.toml:1: policy must be an absolute path"),
            ("[audit]\nsegment_bytes = 5\n", "tokenvault.toml:2: unknown setting \"audit.segment_bytes\""),
            ("[metrix]\nlisten = \"x\"\n", "tokenvault.toml:1: unknown section [metrix]"),
            ("socket = \n", "tokenvault.toml:1:"),
        ]
        for (text, message) in cases {
            try text.write(toFile: home + "/tokenvault.toml", atomically: true, encoding: .utf8)
            let r = try cli.run(["serve"])
            #expect(r.status == 2 && r.stderr.contains(message), "\(text): \(r.stderr)")
            #expect(access(home + "/tokenvault.sock", F_OK) != 0)
        }
    }
}

/// The units in dist/systemd as systemd itself reads them.
@Suite("dist/systemd units")
struct SystemdUnitTests {
    static let dist = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("dist/systemd").path
    static let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.enabled(if: analyze != nil, "systemd-analyze is not installed here: the units are not verified"))
    func systemdAnalyzeVerifyPasses() throws {
        let dir = TempDir()
        for unit in ["tokenvault.service", "tokenvault.socket"] {
            var text = try String(contentsOfFile: Self.dist + "/" + unit, encoding: .utf8)
            // verify checks that ExecStart's binary exists: point it at the one this run built.
            text = text.replacingOccurrences(of: "/usr/local/bin/tokenvault", with: CLI.binary)
            try text.write(toFile: dir.path + "/" + unit, atomically: true, encoding: .utf8)
        }
        let r = try runProcess(Self.analyze!, ["verify", "--man=no", dir.path + "/tokenvault.socket", dir.path + "/tokenvault.service"])
        #expect(r.status == 0 && r.all.isEmpty, "\(r.all)")
    }

    @Test func theServiceIsHardenedAndInstallable() throws {
        let service = try String(contentsOfFile: Self.dist + "/tokenvault.service", encoding: .utf8)
        for directive in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=tokenvault", "NoNewPrivileges=yes",
                          "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "MemoryDenyWriteExecute=yes",
                          "LockPersonality=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
                          "CapabilityBoundingSet=\n", "[Install]\nWantedBy=multi-user.target"] {
            #expect(service.contains(directive), "tokenvault.service lacks \(directive)")
        }
        let dropIn = try String(contentsOfFile: Self.dist + "/credentials.conf", encoding: .utf8)
        #expect(dropIn.contains("LoadCredential="))
        let socket = try String(contentsOfFile: Self.dist + "/tokenvault.socket", encoding: .utf8)
        #expect(socket.contains("FileDescriptorName=tokenvault") && socket.contains("WantedBy=sockets.target"))
    }
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET`.
final class NotifySocket {
    let path: String
    private let fd: CInt

    init(path: String) {
        self.path = path
        fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue), 0)
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    }

    deinit { close(fd) }

    func receive(timeout seconds: Int) -> String? {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[..<n], as: UTF8.self) : nil
    }
}

/// What a new user ran into (issue "a CLI that never misleads"): each message or help text says what is true.
@Suite("messages that do not mislead")
struct HonestMessagesTests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let r = try CLI(home: dir.path + "/vault").run(["init"])
        precondition(r.status == 0, r.all)
    }

    @Test func sealedExportWithoutATerminalNamesItsOwnFlag() throws {
        // setsid: no controlling terminal, as under cron or CI.
        let r = try runProcess("/usr/bin/setsid", ["--wait", CLI.binary, "export", "--sealed", "--output", dir.path + "/b.tvx"],
                               environment: testEnvironment(home: home))
        #expect(r.status == 5 && r.stderr.contains("use --export-passphrase-file FILE"), "\(r.stderr)")
        #expect(access(dir.path + "/b.tvx", F_OK) != 0)
    }

    @Test func proofHelpShowsOnlyFlagsThatExist() throws {
        let help = try cli.run(["proof", "--help"]).stdout
        #expect(!help.contains("--shell"))
        #expect(help.contains("tokenvault proof acme/ads | jq"))
    }

    @Test func auditQueryRefusesAnOutcomeThatDoesNotExist() throws {
        let r = try cli.run(["audit", "query", "--outcome", "refused"])
        #expect(r.status == 64 && r.stderr.contains("--outcome must be one of granted, denied, not_found, rate_limited, failed"), "\(r.stderr)")
        #expect(try cli.run(["audit", "query", "--outcome", "denied"]).status == 0)
    }

    /// `--pin-threads true`: the daemon's event loop and audit flusher each on a CPU of its own (with CPUs
    /// enough). By default, or with more loops than CPUs but one, they are left where the kernel puts them.
    @Test func serveKeepsTheLoopAndTheFlusherOnCPUsOfTheirOwn() throws {
        /// Name and Cpus_allowed_list of a `/proc/…/status` file.
        func nameAndCPUs(_ status: String) throws -> (name: String, cpus: String) {
            let lines = try String(contentsOfFile: status, encoding: .utf8).split(separator: "\n")
            let field = { (key: String) in
                lines.first { $0.hasPrefix(key + ":") }.map { $0.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces) } ?? ""
            }
            return (field("Name"), field("Cpus_allowed_list"))
        }
        func masks(_ p: Process) throws -> [(name: String, cpus: String)] {
            let tasks = "/proc/\(p.processIdentifier)/task"
            return try FileManager.default.contentsOfDirectory(atPath: tasks).map { try nameAndCPUs("\(tasks)/\($0)/status") }
        }
        let mine = try nameAndCPUs("/proc/self/status").cpus
        let log = dir.path + "/serve.log"
        let daemon = try cli.serve(["--threads", "1", "--pin-threads", "true"], stderr: log)
        let pinned = try masks(daemon)
        CLI.stop(daemon)
        let said = try String(contentsOfFile: log, encoding: .utf8)
        let flusher = try #require(pinned.first { $0.name == "tv-audit-flush" })
        if ProcessInfo.processInfo.activeProcessorCount >= 2 {
            #expect(said.contains("threads pinned: event loop on CPU"), "\(said)")
            #expect(Int(flusher.cpus) != nil, "the flusher may run on \(flusher.cpus)")
            let loops = pinned.filter { $0.name.hasPrefix("NIO-ELT") && Int($0.cpus) != nil }
            #expect(loops.count == 1 && loops[0].cpus != flusher.cpus, "\(pinned)")
            // Nothing else is pinned: the rest of the daemon runs wherever the kernel puts it.
            #expect(pinned.filter { Int($0.cpus) != nil && $0.cpus != mine }.count == 2, "\(pinned)")
        } else {
            #expect(said.contains("threads not pinned"), "\(said)")
        }

        for args in [["--threads", "1"], ["--threads", "1", "--pin-threads", "false"], ["--threads", "256", "--pin-threads", "true"]] {
            let daemon = try cli.serve(args, stderr: log)
            let free = try masks(daemon)
            CLI.stop(daemon)
            #expect(free.allSatisfy { $0.cpus == mine }, "\(args): \(free)")
            if args.contains("256") {
                #expect(try String(contentsOfFile: log, encoding: .utf8).contains("threads not pinned: 256 event loops and the audit flusher need 257 CPUs"))
            }
        }
    }

    @Test func serveWarnsWhenThePolicyGrantsNothing() throws {
        try "# nobody yet\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        let log = dir.path + "/serve.log"
        CLI.stop(try cli.serve(stderr: log))
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("the policy grants nothing: every read will be refused"))
    }
}

/// `tokenvault doctor` finds each fault a test seeds, with the command that fixes it.
@Suite("doctor")
struct DoctorTests {
    let dir = TempDir()
    var home: String { dir.path + "/vault" }
    var cli: CLI { CLI(home: home) }

    init() throws {
        let cli = CLI(home: dir.path + "/vault")
        for (args, stdin) in [(["init"], nil), (["put", "acme/ads"], "EAAB-doctor-1")] as [([String], String?)] {
            let r = try cli.run(args, stdin: stdin)
            precondition(r.status == 0, r.all)
        }
        try "[[allow]]\nuid = \(getuid())\ntokens = [\"acme/*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
    }

    func findings() throws -> (status: Int32, problems: [[String: Any]]) {
        let r = try cli.run(["doctor", "--json"])
        let objects = r.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        return (r.status, objects.filter { $0["ok"] as? Bool == false })
    }

    func keyFile() throws -> String {
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: home + "/keys").first { $0.first?.isNumber == true })
        return home + "/keys/" + name
    }

    @Test func aHealthyVaultPasses() throws {
        let r = try cli.run(["doctor"])
        #expect(r.status == 0 && r.stdout.contains("checks passed"), "\(r.stdout)")
    }

    @Test func aLooseKeyModeIsFoundWithItsChmod() throws {
        let key = try keyFile()
        chmod(key, 0o644)
        let (status, problems) = try findings()
        #expect(status == 1)
        #expect(problems.contains { $0["check"] as? String == "keyring" && ($0["fix"] as? String ?? "").contains("chmod 600") }, "\(problems)")
    }

    @Test func aMissingKeyIsFound() throws {
        let key = try keyFile()
        try FileManager.default.moveItem(atPath: key, toPath: dir.path + "/aside")
        let (status, problems) = try findings()
        #expect(status == 1)
        #expect(problems.contains { $0["check"] as? String == "keys" && ($0["message"] as? String ?? "").contains((key as NSString).lastPathComponent) }, "\(problems)")
    }

    @Test func aTamperedAuditLogIsFound() throws {
        let segment = home + "/audit/audit-000001.jsonl"
        var text = try String(contentsOfFile: segment, encoding: .utf8)
        text = text.replacingOccurrences(of: "acme/ads", with: "acme/adz")
        try text.write(toFile: segment, atomically: false, encoding: .utf8)
        let (status, problems) = try findings()
        #expect(status == 1)
        #expect(problems.contains { $0["check"] as? String == "audit" && ($0["message"] as? String ?? "").contains("audit verify fails") }, "\(problems)")
    }

    @Test func anEmptyOrEverythingPolicyIsFound() throws {
        try "# nobody\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        var (status, problems) = try findings()
        #expect(status == 1 && problems.contains { ($0["message"] as? String ?? "").contains("grants nothing") }, "\(problems)")
        try "[[allow]]\nuid = 0\ntokens = [\"*\"]\n".write(toFile: home + "/policy.toml", atomically: true, encoding: .utf8)
        (status, problems) = try findings()
        #expect(status == 1 && problems.contains { ($0["message"] as? String ?? "").contains("grants every token") }, "\(problems)")
    }
}
