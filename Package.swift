// swift-tools-version:6.1
import Foundation
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "TokenVault",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tokenvault", targets: ["TokenVaultCLI"]),
        .library(name: "TokenVaultClient", targets: ["TokenVaultClient"]),
        .library(name: "VaultCore", targets: ["VaultCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // libsodium, wrapped as a system library. Only VaultCrypto imports it.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]),

        // The only other C: SO_PEERCRED (needs _GNU_SOURCE) and process hardening.
        // zlib, for gzip-compressed old audit segments (the audit module alone uses it).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        .target(name: "CSystemShims"),

        // Sealing, key material and secure memory: the only module that touches libsodium.
        .target(name: "VaultCrypto", dependencies: ["CSodium"], swiftSettings: strict),

        // The vault: keyring on disk, key hierarchy, sealed tokens, import/export, the audit interface, and
        // the storage seam (the protocols every store backend implements). No SQL, no store engine.
        .target(name: "VaultCore", dependencies: ["VaultCrypto", "CSystemShims"], swiftSettings: strict),

        // One process-wide SQLite setting that only variadic C can make (part of the SQLite store).
        .target(name: "CStoreShims", dependencies: [.product(name: "GRDBSQLite", package: "GRDB.swift")]),

        // The embedded default store: SQLite through GRDB. The only module that speaks SQLite.
        .target(
            name: "VaultSQLite",
            dependencies: ["VaultCore", "MetaLifecycle", "VaultAudit", "CStoreShims", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "GRDBSQLite", package: "GRDB.swift")],
            swiftSettings: strict),

        // The shared store for several hosts: PostgreSQL through postgres-nio. The only module that links it.
        .target(
            name: "VaultPostgres",
            dependencies: [
                "VaultCore", "MetaLifecycle", "VaultAudit",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // `--store URL`: which backend, and opening it; `migrate` between them. The CLI's one door to the stores.
        .target(name: "VaultStores", dependencies: ["VaultCore", "VaultCrypto", "VaultSQLite", "VaultPostgres", "MetaLifecycle", "VaultAudit"], swiftSettings: strict),

        // The audit log: chained, signed JSON Lines made durable by group commit; verification and reports.
        .target(name: "VaultAudit", dependencies: ["VaultCore", "VaultCrypto", "VaultWire", "CSystemShims", "CZlib", .product(name: "Metrics", package: "swift-metrics")],
                swiftSettings: strict),

        // The Graph API calls the vault makes (URLSession from FoundationNetworking: no extra HTTP stack to build).
        .target(name: "MetaGraph", swiftSettings: strict),

        // The Meta token lifecycle: exchange, extend, checks, notifications, the login redirect, re-checks.
        .target(
            name: "MetaLifecycle",
            dependencies: [
                "MetaGraph", "VaultCore", "VaultCrypto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // `tokenvault bench`: a protocol-v1 load generator and the floors it is compared with.
        .target(name: "VaultBench", swiftSettings: strict),

        // policy.toml: who may read what. Default deny.
        .target(
            name: "VaultPolicy",
            dependencies: [.product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: strict),

        // Protocol v1 on the wire: the request scanner, requests, replies and error codes, and the one
        // JSON text writer (strings, decimals, hex) the audit log's records share.
        .target(name: "VaultWire", dependencies: ["VaultCrypto", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),

        // `tokenvault serve`: protocol v1 over a Unix socket, on SwiftNIO.
        .target(
            name: "VaultDaemon",
            dependencies: [
                "VaultCore", "VaultCrypto", "VaultPolicy", "VaultWire", "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // Living under systemd: sockets it passes (LISTEN_FDS), and readiness it is told of (sd_notify).
        .target(name: "VaultSystemd", swiftSettings: strict),

        // Prometheus metrics (swift-metrics, exported by swift-prometheus) over HTTP on a Unix socket or a
        // loopback port: off unless `[metrics] listen` is set.
        .target(
            name: "VaultMetrics",
            dependencies: [
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // A client for Swift services: `try await TokenVaultClient(socketPath:).get("acme/ads")`.
        .target(
            name: "TokenVaultClient",
            dependencies: ["CSystemShims", .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict),

        // `tokenvault run`: a command with tokens read through the daemon, supervised.
        .target(
            name: "VaultRun",
            dependencies: ["CSystemShims", "TokenVaultClient"],
            swiftSettings: strict),

        // `tokenvault`: a thin shell over the library modules.
        .executableTarget(
            name: "TokenVaultCLI",
            dependencies: [
                "VaultCore", "VaultCrypto", "VaultStores", "VaultPolicy", "VaultDaemon", "VaultAudit", "TokenVaultClient", "VaultRun",
                "CSystemShims", "MetaGraph", "MetaLifecycle", "VaultBench", "VaultSystemd", "VaultMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // Helpers shared by the test targets: temporary directories, child processes, the built binary.
        .target(name: "TestSupport", dependencies: ["VaultCrypto"], path: "Tests/TestSupport", swiftSettings: strict),

        .testTarget(name: "VaultCryptoTests", dependencies: ["VaultCrypto"], swiftSettings: strict),
        // Tests reach past the store with GRDB only to play the attacker: tampering with rows on disk.
        .testTarget(
            name: "VaultCoreTests",
            dependencies: ["VaultCore", "VaultCrypto", "VaultStores", "VaultSQLite", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        // One behavioural suite for every store backend (SQLite, and PostgreSQL on the run's own cluster).
        .testTarget(
            name: "VaultStoreTests",
            dependencies: ["VaultCore", "VaultCrypto", "VaultStores", "VaultSQLite", "VaultPostgres", "MetaLifecycle", "VaultAudit", "TestSupport",
                           .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .testTarget(name: "VaultWireTests", dependencies: ["VaultWire", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "VaultPolicyTests", dependencies: ["VaultPolicy"], swiftSettings: strict),
        .testTarget(name: "VaultAuditTests", dependencies: ["VaultAudit", "VaultCore", "VaultCrypto", "VaultStores", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "VaultDaemonTests",
            dependencies: [
                "VaultDaemon", "VaultWire", "VaultCore", "VaultCrypto", "VaultStores", "VaultPolicy", "VaultAudit", "TokenVaultClient", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "MetaTests",
            dependencies: [
                "MetaGraph", "MetaLifecycle", "VaultCore", "VaultCrypto", "VaultStores", "VaultAudit", "TokenVaultCLI", "TokenVaultClient", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "VaultSystemdTests", dependencies: ["VaultSystemd", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CLITests", dependencies: ["TokenVaultCLI", "VaultCore", "VaultStores", "TokenVaultClient", "TestSupport"], swiftSettings: strict),
    ]
)

// `make fuzz` only (TOKENVAULT_FUZZ=1, built with -sanitize=fuzzer): one libFuzzer target per parser that
// reads untrusted bytes; each one's main hands its entry to libFuzzer's driver. Seeds: Fuzz/corpus/.
if ProcessInfo.processInfo.environment["TOKENVAULT_FUZZ"] != nil {
    package.targets.append(.target(name: "FuzzSupport", path: "Fuzz/FuzzSupport", swiftSettings: strict))
    for (name, deps) in [("FuzzRequest", ["VaultWire"]), ("FuzzPolicy", ["VaultPolicy"]),
                         ("FuzzAuditLine", ["VaultAudit"]), ("FuzzImport", ["VaultCore"])] {
        package.targets.append(.executableTarget(
            name: name, dependencies: (deps + ["FuzzSupport"]).map { .target(name: $0) }, path: "Fuzz/\(name)",
            swiftSettings: strict))
    }
}
