import ArgumentParser
import CSystemShims
import MetaGraph
import MetaLifecycle
import Foundation
import Logging
import ServiceLifecycle
import TokenVaultClient
import UnixSignals
import VaultAudit
import VaultCore
import VaultDaemon
import VaultPolicy
import VaultSystemd
import VaultMetrics
#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve tokens to local services over a Unix domain socket (protocol v1).",
        discussion: """
            Callers are identified by the kernel (SO_PEERCRED) and checked against policy.toml (default deny). \
            SIGHUP re-reads the policy; SIGTERM/SIGINT finish in-flight requests, close, and remove the socket. \
            Every setting can also be in <home>/tokenvault.toml (`tokenvault config show`); under systemd it \
            takes the socket systemd passes and reports readiness (Type=notify).

            Example:
              tokenvault serve --home /var/lib/tokenvault \\
                --socket /run/tokenvault/tokenvault.sock --socket-group ads
            """)

    @OptionGroup var vault: VaultOptions
    @OptionGroup var options: ServeOptions
    @OptionGroup var graph: GraphOptions
    @Flag(help: .hidden) var noGroupCommit = false  // one fdatasync per read, for `make bench` only

    func run() async throws {
        raiseFileLimit()
        // Settings first, so a bad file or flag starts nothing: flags, then the environment, then
        // <home>/tokenvault.toml, then the defaults (`tokenvault config show` prints the result).
        let settings = try ServeSettings.resolve(vault: vault, serve: options, graph: graph)
        var logger = Logger(label: "tokenvault")
        let level = settings.string("log_level") ?? "info"
        guard let logLevel = Logger.Level(rawValue: level) else {
            throw CLIFailure(message: "error: --log-level must be one of trace, debug, info, notice, warning, error, critical", exit: .usage)
        }
        logger.logLevel = logLevel
        // Metrics first: the read path's counters and the audit log's timer take their backend when made.
        var metricsServer: ((@escaping @Sendable () -> Void) -> MetricsServer)?
        if let listen = settings.string("metrics.listen") {
            do {
                metricsServer = MetricsServer.bootstrap(listen: try MetricsListen.parse(listen), logger: logger).make
            } catch {
                throw CLIFailure(message: "error: \(error) (from \(settings.source("metrics.listen")))", exit: .badInput)
            }
        }
        let activation: SocketActivation
        do { activation = try SocketActivation.take() } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
        let systemd = ServiceNotifier(environment: ProcessInfo.processInfo.environment)

        let v = try vault.openVault(listen: true)
        try reporting { try Vault.checkHomeIsPrivate(v.home) }
        try reporting { try v.unlock() }
        let policyPath = settings.string("policy") ?? v.home.policyPath
        let initialPolicy: Policy
        do { initialPolicy = try Policy.load(path: policyPath) } catch let e as PolicyError {
            throw CLIFailure(message: "error: \(e); the daemon was not started", exit: .badInput)
        }
        if initialPolicy.rules.isEmpty {
            logger.warning("the policy grants nothing: every read will be refused", metadata: ["file": "\(policyPath)"])
        }
        let audit: AuditLog
        var auditOptions = AuditLog.Options()
        if noGroupCommit { auditOptions.maxBatch = 1 }
        if let size = settings.int("audit.segment_size") { auditOptions.segmentBytes = size }
        auditOptions.indexSegments = settings.string("audit.index") != "false"
        auditOptions.indexLeftBehind = true
        let forwardRecords = settings.string("audit.syslog") == "true", witnessJournal = settings.string("audit.witness_journal") == "true"
        if forwardRecords || witnessJournal {
            let target = settings.string("audit.syslog_socket").map { path in
                (path: path, kind: path.hasSuffix("journal/socket") ? AuditForwarder.Kind.journal : .syslog)
            } ?? AuditForwarder.systemDefault()
            let forwarder = AuditForwarder(path: target.path, kind: target.kind)
            if forwardRecords { auditOptions.forwarder = forwarder }
            if witnessJournal { auditOptions.witnesses.append(forwarder) }
            logger.info("audit \(forwardRecords ? "records" : "witness statements") also go to \(target.kind == .journal ? "the journal" : "syslog")",
                        metadata: ["socket": "\(target.path)"])
        }
        if let command = settings.string("audit.witness_command") { auditOptions.witnesses.append(AuditWitnessCommand(command: command)) }
        auditOptions.host = v.hostID
        // Placed before the audit log opens: its flusher goes to its CPU as it starts.
        let placement = threadPlacement(settings, logger: logger)
        if let placement {
            let logger = logger
            auditOptions.onFlusherStart = {
                do { try ThreadPlacement.pinCurrentThread(to: placement.flusherCPU) } catch {
                    logger.warning("audit flusher left where the kernel puts it", metadata: ["error": "\(error)"])
                }
            }
        }
        do { audit = try AuditLog.open(for: v, options: auditOptions) } catch {
            throw CLIFailure(message: "error: the audit log cannot be opened: \(error); the daemon was not started", exit: .unavailable)
        }
        defer {
            audit.close()
            auditOptions.forwarder?.close()
            for case let w as AuditWitnessCommand in auditOptions.witnesses { w.flush() }
            for case let w as AuditForwarder in auditOptions.witnesses { w.close() }
            let c = audit.counters
            logger.info("audit log closed", metadata: ["records": "\(c.records)", "flushes": "\(c.batches)"])
        }

        var config = VaultServer.Configuration(socketPath: settings.string("socket") ?? v.home.socketPath)
        do {
            if let passed = try activation.listener(named: "tokenvault") {
                config.listeningDescriptor = passed.descriptor
                config.socketPath = SocketActivation.boundPath(passed.descriptor) ?? "fd \(passed.descriptor) from systemd"
                if options.socket != nil { logger.warning("--socket ignored: systemd passed the socket", metadata: ["socket": "\(config.socketPath)"]) }
            }
        } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
        var credentialSocket = settings.string("credential_socket").map { (path: $0, descriptor: CInt?.none) }
        do {
            if let passed = try activation.listener(named: "credentials") {
                credentialSocket = (SocketActivation.boundPath(passed.descriptor) ?? "fd \(passed.descriptor) from systemd", passed.descriptor)
            }
        } catch { throw CLIFailure(message: "error: \(error)", exit: .badInput) }
        for unused in activation.sockets where unused.descriptor != config.listeningDescriptor && unused.descriptor != credentialSocket?.descriptor {
            logger.warning("a socket systemd passed is not one serve uses; closing it", metadata: ["name": "\(unused.name)"])
            close(unused.descriptor)
        }
        func number(_ key: String, flag: String, at least: Int = 1) throws -> Int? {
            guard let text = settings.string(key) else { return nil }
            guard let n = Int(text), n >= least else {
                throw CLIFailure(message: "error: \(flag) must be a whole number of at least \(least), not \"\(text)\" (from \(settings.source(key)))", exit: .usage)
            }
            return n
        }
        config.idleTimeout = .seconds(Int64(try number("idle_timeout", flag: "--idle-timeout") ?? 60))
        config.maxConnections = try number("max_connections", flag: "--max-connections") ?? 4096
        config.maxConnectionsPerUID = try number("max_connections_per_uid", flag: "--max-connections-per-uid") ?? 1024
        if let threads = try number("threads", flag: "--threads") { config.threads = threads }
        config.loopCPUs = placement?.loopCPUs ?? []
        if let socketGroup = settings.string("socket_group") {
            guard let gid = UInt32(socketGroup) ?? Accounts.gid(ofGroup: socketGroup) else {
                throw CLIFailure(message: "error: no such group \(socketGroup) (from \(settings.source("socket_group")))", exit: .badInput)
            }
            config.socketGroup = gid
        }
        var graphOptions = graph
        graphOptions.graphURL = settings.string("graph_url")
        graphOptions.graphVersion = settings.string("graph_version")
        let warnDays = try number("warn_days", flag: "--warn-days", at: 0) ?? 7
        if let warning = GraphVersions.warning(for: graphOptions.graphVersion ?? GraphConfiguration.defaultVersion) {
            logger.warning("\(warning)", metadata: ["setting": "graph_version"])
        }
        let loginRedirect = settings.string("meta.login_redirect_uri")
        if let r = loginRedirect, URL(string: r)?.scheme?.lowercased() != "https" {
            throw CLIFailure(message: "error: meta.login_redirect_uri (\(settings.source("meta.login_redirect_uri"))) must be an https URL", exit: .badInput)
        }
        let meta = MetaTokenService(
            vault: v, graph: try graphOptions.client(warn: false), audit: audit,
            actor: CLIAudit.actor, channel: .daemon,
            notifier: settings.string("notify_command").map { Notifier(command: $0) },
            warnDays: warnDays, loginRedirectURI: loginRedirect)
        let checkInterval = try number("check_interval", flag: "--check-interval") ?? 86_400
        let sweeps = SweepLog()
        var recheck = Rechecker.Options()
        if let mode = settings.string("meta.refresh").flatMap(Rechecker.RefreshMode.init(rawValue:)) { recheck.refresh = mode }
        if let d = settings.int("meta.refresh_days") { recheck.refreshDays = d }
        if let r = settings.int("meta.remind_after") { recheck.remindAfter = Int64(r) }
        if let h = settings.int("meta.history_days") { recheck.historyDays = h }
        let rechecker = Rechecker(service: meta, interval: Int64(checkInterval), logger: logger, sweeps: sweeps, options: recheck)
        let processor = RequestProcessor(vault: v, policy: initialPolicy, audit: audit, logger: logger)
        let server = VaultServer(configuration: config, processor: processor, logger: logger)
        let reloader = PolicyReloader(path: policyPath, processor: processor, audit: audit, systemd: systemd, logger: logger)
        logger.info("policy loaded", metadata: ["file": "\(policyPath)", "rules": "\(initialPolicy.rules.count)"])
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: server), .init(service: reloader), .init(service: rechecker),
            .init(service: SystemdReadiness(server: server, systemd: systemd, rules: initialPolicy.rules.count)),
        ]
        if let credentialSocket {
            services.append(.init(service: CredentialServer(socketPath: credentialSocket.path, listeningDescriptor: credentialSocket.descriptor,
                                                            processor: processor, logger: logger)))
        } else if !initialPolicy.credentials.isEmpty {
            logger.warning("the policy has [[credential]] rules but no credential socket is served (set credential_socket)")
        }
        let status = DaemonStatus(.init(vault: v, processor: processor, server: server, audit: audit, sweeps: sweeps,
                                        warnDays: warnDays, checkInterval: checkInterval,
                                        metrics: settings.string("metrics.listen"), tokenNames: settings.string("metrics.token_names") == "true"))
        if let metricsServer { services.append(.init(service: metricsServer(status.recordGauges))) }
        services.append(.init(service: AdminServer(socketPath: v.home.root + "/admin.sock", report: status.report,
                                                   everySecond: status.sample, logger: logger)))
        let shipper = v.storeIsShared ? AuditShipper(vault: v) : nil
        if let shipper { services.append(.init(service: AuditShipping(shipper: shipper, logger: logger))) }
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch let e as ServeError {
            throw CLIFailure(message: "error: \(e)", exit: .failure)
        }
        // A clean stop: the log's last checkpoint, then the records it vouches for, to the shared store.
        audit.close()
        if let shipper { while ((try? shipper.shipOnce()) ?? 0) > 0 {} }
    }

    private func raiseFileLimit() {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }
}

/// Re-reads the policy on SIGHUP. A file that does not parse is rejected (and logged with its line); the
/// old policy stays in force. Each attempt is an audited admin action, and a new policy takes effect only
/// once its record is durable.
struct PolicyReloader: Service {
    let path: String
    let processor: RequestProcessor
    let audit: AuditLog
    let systemd: ServiceNotifier
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            systemd.reloading()
            defer { systemd.ready(status: "serving; policy reloaded") }
            // SIGHUP also re-opens the audit segment, for external log rotation.
            audit.reopen()
            do {
                let policy = try Policy.load(path: path)
                // Recorded before it takes effect: a reload whose record cannot be written changes nothing.
                let event = AuditEvent(action: "policy_reload", channel: .daemon, actor: CLIAudit.actor, outcome: .granted,
                                       reason: "\(policy.rules.count) rules")
                do { try audit.appendAndWait(event) } catch {
                    logger.error("policy reload not recorded, so not applied; the old policy stays in force", metadata: ["error": "\(error)"])
                    continue
                }
                processor.replacePolicy(policy)
                logger.info("policy reloaded", metadata: ["file": "\(path)", "rules": "\(policy.rules.count)"])
            } catch {
                logger.error("policy reload rejected; the old policy stays in force", metadata: ["error": "\(error)"])
                audit.append(AuditEvent(action: "policy_reload", channel: .daemon, actor: CLIAudit.actor, outcome: .failed,
                                        reason: "\(error)"), secret: nil) { _ in }
            }
        }
    }
}

/// Tells systemd (`Type=notify`) when the socket serves, and when the daemon begins to stop.
struct SystemdReadiness: Service {
    let server: VaultServer
    let systemd: ServiceNotifier
    let rules: Int

    func run() async throws {
        // Returning would end the service group: without systemd this only waits for the stop.
        let managed = systemd.address != nil
        if managed {
            try await server.waitUntilServing()
            systemd.ready(status: "serving on \(server.configuration.socketPath); \(rules) policy rules")
        }
        try? await gracefulShutdown()
        if managed { systemd.stopping() }
    }
}

/// Ships this host's audit records to the shared store every second (best effort: a record is durable
/// locally before any disclosure; the copy follows with bounded lag, and resumes after an outage).
struct AuditShipping: Service {
    let shipper: AuditShipper
    let logger: Logger

    func run() async throws {
        var failing = false
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                while try shipper.shipOnce() > 0 {}
                if failing { logger.info("audit shipping resumed") }
                failing = false
            } catch {
                if !failing { logger.warning("audit records not shipped to the store; retrying every second", metadata: ["error": "\(error)"]) }
                failing = true
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
        // What the last second added is shipped after the audit log closes (its last checkpoint vouches for it).
    }
}

/// `get --socket`: read through the daemon, with the contract's errors as exit codes.
func readThroughDaemon(socket: String, name: String) throws -> String {
    try throughDaemon(socket: socket) { try $0.getBlocking(name).token }
}

/// Runs `body` with a client of the daemon on `socket`; the contract's errors become the CLI's exit codes.
func throughDaemon<T>(socket: String, _ body: (TokenVaultClient) throws -> T) throws -> T {
    do {
        return try body(TokenVaultClient(socketPath: socket))
    } catch let e as TokenVaultClient.Error {
        throw CLIFailure(message: "error: \(e.code): \(e)", exit: Exit.of(e))
    }
}

extension Exit {
    /// The exit code for one of the contract's errors.
    static func of(_ e: TokenVaultClient.Error) -> Exit {
        switch e {
        case .notFound: return .notFound
        case .denied: return .denied
        case .unavailable, .connect, .impostor: return .unavailable
        case .rateLimited: return .rateLimited
        case .badRequest, .unknownOp, .tooLarge: return .badInput
        case .internal, .protocolError: return .failure
        }
    }
}

extension Serve {
    /// Where the event loops and the audit flusher run (``ThreadPlacement``): nil unless `pin_threads = true`,
    /// and with too few CPUs for a loop each and the flusher (said in the log).
    func threadPlacement(_ settings: ServeSettings, logger: Logger) -> ThreadPlacement? {
        guard settings.string("pin_threads") == "true" else { return nil }
        let loops = max(1, settings.int("threads") ?? 1)
        let cpus = ThreadPlacement.allowedCPUs()
        guard let placement = ThreadPlacement.plan(loops: loops, allowed: cpus) else {
            logger.info("threads not pinned: \(loops) event loop\(loops == 1 ? "" : "s") and the audit flusher need \(loops + 1) CPUs; the daemon may use \(cpus.count)")
            return nil
        }
        logger.info("threads pinned: \(placement.description)")
        return placement
    }
}
