import Foundation
import VaultCore
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Reading secrets without them ever touching argv: stdin, a file, or a no-echo terminal prompt.
enum SecretInput {
    /// Reads a secret from stdin (prompting without echo when stdin is a terminal). One trailing
    /// newline (`\n` or `\r\n`) is dropped.
    static func readStdin(what: String) throws -> SecretBytes {
        if isatty(0) == 1 { return try prompt("\(what.prefix(1).uppercased() + what.dropFirst()): ", fd: 0) }
        return try readAll(fd: 0, source: "stdin", what: what)
    }

    static func readFile(_ path: String, what: String) throws -> SecretBytes {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CLIFailure(message: "error: cannot open \(path): \(String(cString: strerror(errno)))", exit: .failure)
        }
        defer { close(fd) }
        return try readAll(fd: fd, source: path, what: what)
    }

    private static func readAll(fd: Int32, source: String, what: String) throws -> SecretBytes {
        let limit = Vault.maxSecretBytes + 2
        var buffer = [UInt8](repeating: 0, count: limit + 1)
        defer { wipe(&buffer) }
        var count = 0
        while count < buffer.count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CLIFailure(message: "error: cannot read \(source): \(String(cString: strerror(errno)))", exit: .failure)
            }
            if n == 0 { break }
            count += n
        }
        if count > limit {
            throw CLIFailure(message: "error: the \(what) on \(source) is longer than \(Vault.maxSecretBytes) bytes; nothing was stored", exit: .badInput)
        }
        if count > 0 && buffer[count - 1] == 0x0a { count -= 1 }
        if count > 0 && buffer[count - 1] == 0x0d { count -= 1 }
        return SecretBytes(copying: buffer[0..<count])
    }

    /// Asks on the terminal with echo off. Used when stdin is a terminal, and for passphrases.
    /// `flag` is the option that gives the same passphrase from a file, named when there is no terminal.
    static func prompt(_ text: String, fd requested: Int32? = nil, flag: String = "--passphrase-file") throws -> SecretBytes {
        let fd = requested ?? open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw CLIFailure(message: "error: a passphrase is needed and there is no terminal to ask on: use \(flag) FILE", exit: .key)
        }
        defer { if requested == nil { close(fd) } }
        FileHandle.standardError.write(Data(text.utf8))
        var saved = termios()
        let isTerminal = tcgetattr(fd, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if isTerminal { tcsetattr(fd, TCSAFLUSH, &saved) }
            FileHandle.standardError.write(Data("\n".utf8))
        }
        var line: [UInt8] = []
        defer { wipe(&line) }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != 0x0a {
            line.append(byte)
            if line.count > Vault.maxSecretBytes { break }
        }
        if line.last == 0x0d { line.removeLast() }
        return SecretBytes(copying: line)
    }
}

/// Writes bytes to stdout with no intermediate String.
func writeStdout(_ secret: SecretBytes) {
    secret.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = write(1, raw.baseAddress! + done, raw.count - done)
            if n < 0 { if errno == EINTR { continue }; return }
            done += n
        }
    }
}

func printErr(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Asks before a destructive command, on a terminal only: scripts (no terminal on stdin) and `--yes` go on
/// without a question. Anything but "y" or "yes" stops with nothing changed.
func confirm(_ question: String, yes: Bool) throws {
    guard !yes, isatty(0) == 1 else { return }
    let tty = open("/dev/tty", O_RDWR | O_CLOEXEC)
    guard tty >= 0 else { return }
    defer { close(tty) }
    let prompt = Array("\(question) [y/N] ".utf8)
    _ = prompt.withUnsafeBytes { write(tty, $0.baseAddress, $0.count) }
    var answer: [UInt8] = []
    var byte: UInt8 = 0
    while answer.count < 16, read(tty, &byte, 1) == 1, byte != 0x0a { answer.append(byte) }
    let text = String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
    guard text == "y" || text == "yes" else {
        throw CLIFailure(message: "not confirmed; nothing was changed (--yes skips the question)", exit: .failure)
    }
}
