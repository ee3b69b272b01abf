import Foundation
import TestSupport
import Testing
import VaultCore
import VaultPostgres
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@Suite("Store URLs and PostgreSQL passwords")
struct StoreLocationTests {
    let home = VaultHome(root: "/srv/vault")

    func problem(_ text: String, passwordFile: String? = nil) -> String {
        do {
            _ = try StoreLocation.parse(text, passwordFile: passwordFile)
            return ""
        } catch { return "\(error)" }
    }

    @Test func theDefaultIsSQLiteInTheHomeAndTheFlagWins() throws {
        #expect(try StoreLocation.resolve(flag: nil, passwordFile: nil, configured: nil, home: home, environment: [:]) == .sqlite(path: "/srv/vault/vault.db"))
        #expect(try StoreLocation.resolve(flag: nil, passwordFile: nil, configured: "sqlite:/data/v.db", home: home, environment: [:])
                == .sqlite(path: "/data/v.db"))
        #expect(try StoreLocation.resolve(flag: nil, passwordFile: nil, configured: "sqlite:/data/v.db", home: home,
                                          environment: ["TOKENVAULT_STORE": "sqlite:/env.db"]) == .sqlite(path: "/env.db"))
        #expect(try StoreLocation.resolve(flag: "sqlite:/flag.db", passwordFile: nil, configured: "sqlite:/c.db", home: home,
                                          environment: ["TOKENVAULT_STORE": "sqlite:/env.db"]) == .sqlite(path: "/flag.db"))
    }

    @Test func postgresURLsAsLibpqNamesThem() throws {
        guard case .postgres(let tcp) = try StoreLocation.parse("postgres://vault@db.internal:6432/tv?sslmode=verify-full&sslrootcert=/etc/ca.pem") else {
            Issue.record("not postgres"); return
        }
        #expect(tcp.user == "vault" && tcp.host == "db.internal" && tcp.port == 6432 && tcp.database == "tv")
        #expect(tcp.tls == .verifyFull && tcp.rootCertificate == "/etc/ca.pem" && tcp.socketPath == nil)
        guard case .postgres(let socket) = try StoreLocation.parse("postgres:///tv?host=/run/postgresql&user=vault") else {
            Issue.record("not postgres"); return
        }
        #expect(socket.socketPath == "/run/postgresql/.s.PGSQL.5432" && socket.user == "vault" && socket.tls == .disable)
        // TLS is the default over TCP, checked in full.
        guard case .postgres(let plain) = try StoreLocation.parse("postgresql://vault@db.internal/tv") else { Issue.record("not postgres"); return }
        #expect(plain.tls == .verifyFull)
    }

    @Test func aURLWithAPasswordIsRefusedAndNeverEchoed() {
        let message = problem("postgres://vault:hunter2@db.internal/tv")
        #expect(message.contains("--store-password-file") && !message.contains("hunter2"))
        let query = problem("postgres:///tv?host=/run/postgresql&user=vault&password=hunter2")
        #expect(query.contains("password") && query.contains("--store-password-file") && !query.contains("hunter2"))
        #expect(!problem("mysql://root:hunter2@x/db").contains("hunter2"))
        #expect(!problem("postgres://u:hun@ter2@db.internal/tv").contains("ter2"), "masked up to the authority's last @")
        #expect(!problem("postgres://u@db.internal/tv?sslmode=prefer&sslrootcert=/x&secret=hunter2").contains("hunter2"))
    }

    @Test func weakTLSAndUnknownParametersAreRefused() {
        #expect(problem("postgres://vault@db.internal/tv?sslmode=require").contains("verify-full"))
        #expect(problem("postgres://vault@db.internal/tv?sslmode=prefer").contains("verify-full"))
        #expect(problem("postgres://vault@db.internal/tv?sslmode=disable").contains("in the clear"))
        #expect(problem("postgres://vault@127.0.0.1/tv?sslmode=disable").isEmpty, "loopback may go without TLS")
        #expect(problem("postgres://vault@127.evil.example/tv?sslmode=disable").contains("in the clear"), "a name is not loopback")
        #expect(problem("postgres://vault@db.internal/tv?connect_timeout=3").contains("unknown parameter connect_timeout"))
        #expect(problem("postgres://db.internal/tv").contains("no user"))
        #expect(problem("postgres://vault@db.internal/").contains("no database"))
        #expect(problem("sqlite:").contains("no file"))
        #expect(problem("sqlite:/x.db", passwordFile: "/p").contains("PostgreSQL"))
    }

    @Test func thePasswordComesFromAPrivateFileOrPgpass() throws {
        let dir = TempDir()
        let file = dir.path + "/pw"
        try "s3cret\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
        let loc = try PostgresLocation.parse("postgres://vault@db.internal/tv", passwordFile: file)
        #expect(throws: PostgresLocation.Problem.self) { try loc.password(environment: [:]) }
        chmod(file, 0o600)
        #expect(try loc.password(environment: [:]) == "s3cret")

        let pgpass = dir.path + "/pgpass"
        try """
            # comment
            other.host:5432:tv:vault:wrong
            db.internal:5432:*:vault:pa\\:ss
            *:*:*:*:fallback
            """.write(toFile: pgpass, atomically: true, encoding: .utf8)
        chmod(pgpass, 0o600)
        let viaPgpass = try PostgresLocation.parse("postgres://vault@db.internal/tv")
        #expect(try viaPgpass.password(environment: ["PGPASSFILE": pgpass]) == "pa:ss")
        let other = try PostgresLocation.parse("postgres://someone@elsewhere/db")
        #expect(try other.password(environment: ["PGPASSFILE": pgpass]) == "fallback")
        #expect(try other.password(environment: ["PGPASSFILE": dir.path + "/missing"]) == nil)
    }

    /// A real login with a password, from a file, against the cluster (its `vault_pw` role uses scram).
    @Test(.enabled(if: PostgresServer.isAvailable)) func aPasswordLoginWorksAndAWrongOneIsExplained() throws {
        let dir = TempDir()
        _ = try? PostgresServer.psql("postgres", "CREATE ROLE vault_pw LOGIN PASSWORD 'right-one'")
        let url = try PostgresServer.freshDatabase()
        let db = PostgresServer.database(of: url)
        try PostgresServer.psql(db, "GRANT ALL ON SCHEMA public TO vault_pw")
        try PostgresServer.psql("postgres", "ALTER DATABASE \(db) OWNER TO vault_pw")
        let file = dir.path + "/pw"
        try "right-one\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let location = try StoreLocation.parse(PostgresServer.url(database: db, user: "vault_pw"), passwordFile: file)
        let store = try location.open(create: true)
        #expect(try store.tokenNames().isEmpty)
        store.close()
        try "wrong-one\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let wrong = try StoreLocation.parse(PostgresServer.url(database: db, user: "vault_pw"), passwordFile: file)
        #expect { _ = try wrong.open(create: true) } throws: { "\($0)".contains("refused the login") && !"\($0)".contains("wrong-one") }
    }
}
