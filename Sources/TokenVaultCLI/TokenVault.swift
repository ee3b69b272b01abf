import ArgumentParser
import CSystemShims
import Foundation
import VaultCore
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

@main
struct TokenVault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenvault",
        abstract: "A local vault for Meta Marketing API tokens and other API secrets.",
        discussion: """
            Tokens are sealed with XSalsa20-Poly1305 under data keys that master keys in the keyring wrap, \
            and stored in SQLite. Secrets are read from stdin or a file, never from the command line.
            """ + "\n\n" + Exit.helpText,
        version: "0.1.0",
        subcommands: [
            Init.self, Put.self, Get.self, List.self, Show.self, Remove.self, AppCommand.self,
            Import.self, Export.self, Serve.self, Run.self, Status.self, Doctor.self, ConfigCommand.self, PolicyCommand.self, AuditCommand.self, KeyCommand.self, MetaCommand.self, Proof.self, Migrate.self, BenchCommand.self,
        ])

    static func main() async {
        hardenProcess()
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let error as CLIFailure {
            FileHandle.standardError.write(Data("tokenvault: \(error.message)\n".utf8))
            Glibc.exit(error.code)
        } catch {
            exit(withError: error)
        }
    }
}

/// Every command, before it parses anything: no core dump and no ptrace attach by other processes of the
/// same user (`PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0: `get`, `proof` and `meta` hold tokens and app
/// secrets too, not only `serve`), and private files by default.
func hardenProcess() {
    _ = tv_harden_process()
    umask(0o077)
}

/// An error already worded for the user, with its exit code.
struct CLIFailure: Error {
    let message: String
    let code: Int32
}

/// Runs `body`, turning vault and store errors into worded failures with their documented exit codes.
func reporting<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as VaultError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    } catch let e as StoreError {
        throw CLIFailure(message: "error: \(e)", exit: .of(e.exitCode))
    }
}
