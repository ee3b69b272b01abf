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
#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve tokens to local services over a Unix domain socket (protocol v1).",
        discussion: """
            Example: tokenvault serve --home /var/lib/tokenvault --socket /run/tokenvault/tokenvault.sock --socket-group ads
            Callers are identified by the kernel (SO_PEERCRED) and checked against policy.toml (default deny).
            SIGHUP re-reads the policy; SIGTERM/SIGINT finish in-flight requests, close, and remove the socket.
            """)

    @OptionGroup var vault: VaultOptions
    @Option(help: ArgumentHelp("The socket (default: <home>/tokenvault.sock).", valueName: "path")) var socket: String?
    @Option(help: ArgumentHelp("The policy file (default: <home>/policy.toml).", valueName: "file")) var policy: String?
    @Option(help: ArgumentHelp("Give the socket this group (name or gid), so members can connect.", valueName: "group"))
    var socketGroup: String?
    @Option(help: "Close connections idle this many seconds.") var idleTimeout = 60
    @Option(help: "Refuse connections beyond this many.") var maxConnections = 4096
    @Option(help: "Refuse a uid's connections beyond this many, so one caller cannot lock the others out.")
    var maxConnectionsPerUid = 1024
    @Option(help: "Event-loop threads (default: one per core but one, left to the audit flusher).") var threads: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @OptionGroup var graph: GraphOptions
    @Option(help: ArgumentHelp("Run this when a Meta token needs an admin (JSON on stdin); also notify_command in <home>/tokenvault.toml.",
                               valueName: "command"))
    var notifyCommand: String?
    @Option(help: "Seconds between Meta re-checks of each token (default 86400; sooner near expiry).") var checkInterval: Int?
    @Option(help: "Notify this many days before a token or its data access expires (default 7).") var warnDays: Int?
    @Flag(help: .hidden) var noGroupCommit = false  // one fdatasync per read, for `make bench` only

    func run() async throws {
        raiseFileLimit()
        var logger = Logger(label: "tokenvault")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        let v = try vault.openVault(listen: true)
        try reporting { try Vault.checkHomeIsPrivate(v.home) }
        try reporting { try v.unlock() }
        let policyPath = policy ?? v.home.policyPath
        let initialPolicy: Policy
        do { initialPolicy = try Policy.load(path: policyPath) } catch let e as PolicyError {
            throw CLIFailure(message: "error: \(e); the daemon was not started", code: 2)
        }
        let audit: AuditLog
        var auditOptions = AuditLog.Options()
        if noGroupCommit { auditOptions.maxBatch = 1 }
        do { audit = try AuditLog.open(for: v, options: auditOptions) } catch {
            throw CLIFailure(message: "error: the audit log cannot be opened: \(error); the daemon was not started", code: 7)
        }
        defer {
            audit.close()
            let c = audit.counters
            logger.info("audit log closed", metadata: ["records": "\(c.records)", "flushes": "\(c.batches)"])
        }

        var config = VaultServer.Configuration(socketPath: socket ?? v.home.socketPath)
        config.idleTimeout = .seconds(Int64(idleTimeout))
        config.maxConnections = maxConnections
        config.maxConnectionsPerUID = maxConnectionsPerUid
        if let threads { config.threads = threads }
        if let socketGroup {
            guard let gid = UInt32(socketGroup) ?? Accounts.gid(ofGroup: socketGroup) else {
                throw CLIFailure(message: "error: no such group \(socketGroup)", code: 2)
            }
            config.socketGroup = gid
        }
        let settings = try vault.settings()
        var graphOptions = graph
        if graphOptions.graphURL == nil { graphOptions.graphURL = settings.graphURL }
        if let version = settings.graphVersion, graph.graphVersion == GraphConfiguration.defaultVersion { graphOptions.graphVersion = version }
        let meta = MetaTokenService(
            vault: v, graph: try graphOptions.client(), audit: audit,
            actor: CLIAudit.actor, channel: .daemon,
            notifier: (notifyCommand ?? settings.notifyCommand).map { Notifier(command: $0) },
            warnDays: warnDays ?? settings.warnDays ?? 7)
        let rechecker = Rechecker(service: meta, interval: Int64(checkInterval ?? settings.checkInterval ?? 86_400), logger: logger)
        let processor = RequestProcessor(vault: v, policy: initialPolicy, audit: audit, logger: logger)
        let server = VaultServer(configuration: config, processor: processor, logger: logger)
        let reloader = PolicyReloader(path: policyPath, processor: processor, audit: audit, logger: logger)
        logger.info("policy loaded", metadata: ["file": "\(policyPath)", "rules": "\(initialPolicy.rules.count)"])
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server), .init(service: reloader), .init(service: rechecker)]
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
            throw CLIFailure(message: "error: \(e)", code: 1)
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
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
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
    do {
        return try TokenVaultClient(socketPath: socket).getBlocking(name).token
    } catch let e as TokenVaultClient.Error {
        let code: Int32
        switch e {
        case .notFound: code = 3
        case .denied: code = 8
        case .unavailable, .connect, .impostor: code = 7
        case .rateLimited: code = 9
        case .badRequest, .unknownOp, .tooLarge: code = 2
        case .internal, .protocolError: code = 1
        }
        throw CLIFailure(message: "error: \(e.code): \(e)", code: code)
    }
}
