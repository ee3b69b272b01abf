// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "TokenVault",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tokenvault", targets: ["TokenVaultCLI"]),
        .library(name: "VaultCore", targets: ["VaultCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // libsodium, wrapped as a system library. Only VaultCrypto imports it.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]),

        // Sealing, key material and secure memory: the only module that touches libsodium.
        .target(name: "VaultCrypto", dependencies: ["CSodium"], swiftSettings: strict),

        // SQLite through GRDB: the only module that touches SQL.
        .target(
            name: "VaultStore",
            dependencies: [.product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),

        // The vault: keyring on disk, key hierarchy, sealed tokens, import/export.
        .target(name: "VaultCore", dependencies: ["VaultCrypto", "VaultStore"], swiftSettings: strict),

        // `tokenvault`: a thin shell over VaultCore.
        .executableTarget(
            name: "TokenVaultCLI",
            dependencies: [
                "VaultCore", "VaultCrypto", "VaultStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        .testTarget(name: "VaultCryptoTests", dependencies: ["VaultCrypto"], swiftSettings: strict),
        // Tests reach past the store with GRDB only to play the attacker: tampering with rows on disk.
        .testTarget(
            name: "VaultCoreTests",
            dependencies: ["VaultCore", "VaultCrypto", "VaultStore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .testTarget(name: "CLITests", dependencies: ["TokenVaultCLI"], swiftSettings: strict),
    ]
)
