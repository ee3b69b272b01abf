import CSystemShims
import Foundation
import TokenVaultClient
#if canImport(Glibc)
import Glibc
#endif

/// Why `tokenvault run` did not start, or stopped, its command.
public struct RunError: Error, CustomStringConvertible {
    public enum Kind: Sendable { case plan, read(TokenVaultClient.Error), spawn }
    public let kind: Kind
    public let description: String
}

/// Runs a command with tokens read through the daemon, stays beside it, and passes its exit on.
///
/// Every token is read (as the caller, under the policy, audited by the daemon) before anything starts:
/// one refused read starts nothing. Files are `memfd`s — RAM only, never on a disk, gone when the last
/// process holding them ends — duplicated into the command as descriptors 100 and up, so
/// `/dev/fd/100` opens the token for the command and for nobody else but its own user's processes and
/// root. Signals sent to `tokenvault run` are passed to the command (a terminal's ^C, which the command
/// already got, is not sent twice). With a watch, a change to a token re-reads it and then signals or
/// restarts the command as the plan says.
///
/// One thread waits on one `poll(2)`: the signal pipe and the watch connection.
public final class Supervisor {
    /// The signals passed on to the command.
    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT]
    /// The first descriptor number a `--file` token gets in the command.
    static let firstFileDescriptor: Int32 = 100
    /// How long a restart waits after SIGTERM before SIGKILL.
    public var restartGrace: Double = 10

    let client: TokenVaultClient
    let plan: RunPlan
    /// Where notes about changes go (stderr in the CLI).
    let note: (String) -> Void

    private var values: [String: TokenVaultClient.Token] = [:]
    private var files: [String: Int32] = [:]  // variable -> memfd
    private var child: pid_t = 0
    private var signalPipe: (read: Int32, write: Int32) = (-1, -1)

    public init(client: TokenVaultClient, plan: RunPlan, note: @escaping (String) -> Void) {
        self.client = client
        self.plan = plan
        self.note = note
    }

    public enum Outcome: Equatable {
        case exited(Int32)
        case killed(Int32)
    }

    /// Runs the command to its end.
    public func run() throws -> Outcome {
        if let problem = plan.problem { throw RunError(kind: .plan, description: problem) }
        try readAll()
        defer { for fd in files.values { close(fd) } }
        try openPipe()
        var watch: WatchConnection?
        if plan.onChange != .nothing {
            do {
                watch = try WatchConnection(client: client, patterns: plan.tokens)
            } catch let e as TokenVaultClient.Error {
                throw RunError(kind: .read(e), description: "cannot watch \(plan.tokens.joined(separator: ", ")): \(e)")
            }
        }
        defer { watch?.close() }
        // Catch the signals before the child exists, so none is lost between spawn and poll.
        guard tv_forward_signals(signalPipe.write, Self.forwarded + [SIGCHLD], Int32(Self.forwarded.count + 1)) == 0 else {
            throw RunError(kind: .spawn, description: "cannot catch signals: \(String(cString: strerror(errno)))")
        }
        try spawn()
        return try supervise(watch: watch)
    }

    // MARK: reading

    private func readAll() throws {
        for name in plan.tokens { values[name] = try read(name) }
        for b in plan.bindings where b.delivery == .file {
            let fd = tv_memfd("tokenvault:\(b.variable)")
            guard fd >= 0 else { throw RunError(kind: .spawn, description: "memfd_create: \(String(cString: strerror(errno)))") }
            files[b.variable] = fd
            try write(values[b.token]!.token, to: fd)
        }
    }

    private func read(_ name: String) throws -> TokenVaultClient.Token {
        let wantsProof = plan.bindings.contains { $0.token == name && $0.delivery == .proofEnv }
        do {
            return try client.getBlocking(name, proof: wantsProof ? .legacy : nil)
        } catch let e as TokenVaultClient.Error {
            throw RunError(kind: .read(e), description: "cannot read \(name): \(e)")
        }
    }

    /// Replaces a memfd's contents (the command sees the new value the next time it opens the file).
    private func write(_ token: String, to fd: Int32) throws {
        var bytes = Array(token.utf8)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        guard ftruncate(fd, 0) == 0, bytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else {
            throw RunError(kind: .spawn, description: "cannot write the token file: \(String(cString: strerror(errno)))")
        }
    }

    // MARK: the child

    private func openPipe() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw RunError(kind: .spawn, description: "pipe: \(String(cString: strerror(errno)))")
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        signalPipe = (fds[0], fds[1])
    }

    /// The command's environment: this process's, with the plan's variables set.
    private func environment() -> [String] {
        var env = ProcessInfo.processInfo.environment
        var slot = Self.firstFileDescriptor
        for b in plan.bindings {
            switch b.delivery {
            case .env: env[b.variable] = values[b.token]!.token
            case .proofEnv: env[b.variable] = values[b.token]!.appsecretProof ?? ""
            case .file:
                env[b.variable] = "/dev/fd/\(slot)"
                slot += 1
            }
        }
        return env.map { "\($0.key)=\($0.value)" }
    }

    private func spawn() throws {
        let env = environment()
        var from: [Int32] = [], to: [Int32] = []
        var slot = Self.firstFileDescriptor
        for b in plan.bindings where b.delivery == .file {
            from.append(files[b.variable]!)
            to.append(slot)
            slot += 1
        }
        var argv = plan.command.map { strdup($0) } + [nil]
        var envp = env.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp {
                if let p { memset(p, 0, strlen(p)) }  // the tokens, in this process's copy
                free(p)
            }
        }
        var pid: Int32 = 0
        let rc = tv_spawn(&pid, &argv, &envp, from, to, Int32(from.count))
        guard rc == 0 else {
            throw RunError(kind: .spawn, description: "cannot run \(plan.command[0]): \(String(cString: strerror(rc)))")
        }
        child = pid
    }

    private func supervise(watch: WatchConnection?) throws -> Outcome {
        while true {
            var fds = [pollfd(fd: signalPipe.read, events: Int16(POLLIN), revents: 0)]
            if let watch { fds.append(pollfd(fd: watch.fileDescriptor, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), watch?.hasBuffered == true ? 0 : -1)
            if n < 0 && errno != EINTR { throw RunError(kind: .spawn, description: "poll: \(String(cString: strerror(errno)))") }
            if fds[0].revents != 0 {
                var message: [UInt8] = [0, 0]
                while Glibc.read(signalPipe.read, &message, 2) == 2 {
                    let signo = Int32(message[0])
                    if signo == SIGCHLD {
                        if let outcome = reap() { return outcome }
                    } else if !(message[1] == 1 && (signo == SIGINT || signo == SIGQUIT || signo == SIGWINCH)) {
                        kill(child, signo)
                    }
                }
            }
            if let w = watch, fds.count > 1, fds[1].revents != 0 || w.hasBuffered {
                guard let change = try? w.next() else {
                    note("tokenvault run: the daemon closed the watch; the command keeps the values it has")
                    return try supervise(watch: nil)
                }
                if let ended = changed(change) { return ended }
            }
        }
    }

    /// The child's outcome once it has ended (a restart's old child is reaped in ``restart()``).
    private func reap() -> Outcome? {
        var status: Int32 = 0
        let pid = waitpid(child, &status, WNOHANG)
        guard pid == child else { return nil }
        let termsig = status & 0x7f
        if termsig == 0 { return .exited((status >> 8) & 0xff) }
        return termsig == 0x7f ? nil : .killed(termsig)
    }

    /// Handles a change; an outcome when the command could not be started again.
    private func changed(_ change: TokenVaultClient.Change) -> Outcome? {
        let fresh: TokenVaultClient.Token
        do {
            fresh = try read(change.name)
        } catch {
            note("tokenvault run: \(change.name) changed (\(change.kind.rawValue)) but \(error); the command keeps the value it has")
            return nil
        }
        guard fresh.token != values[change.name]?.token || fresh.appsecretProof != values[change.name]?.appsecretProof else { return nil }
        values[change.name] = fresh
        do {
            for b in plan.bindings where b.token == change.name && b.delivery == .file { try write(fresh.token, to: files[b.variable]!) }
        } catch {
            note("tokenvault run: \(error)")
            return nil
        }
        switch plan.onChange {
        case .nothing: return nil
        case .signal(let signo):
            note("tokenvault run: \(change.name) changed; sending signal \(signo) to pid \(child)")
            kill(child, signo)
            return nil
        case .restart:
            note("tokenvault run: \(change.name) changed; restarting \(plan.command[0])")
            return restart()
        }
    }

    /// Stops the command and starts it again with the new values; an outcome if it could not start.
    private func restart() -> Outcome? {
        kill(child, SIGTERM)
        let deadline = Date().addingTimeInterval(restartGrace)
        var status: Int32 = 0
        while waitpid(child, &status, WNOHANG) == 0 {
            if Date() > deadline {
                kill(child, SIGKILL)
                waitpid(child, &status, 0)
                break
            }
            usleep(10_000)
        }
        // Drain the SIGCHLD of the old child so the loop does not mistake it for the new one's.
        var message: [UInt8] = [0, 0]
        while Glibc.read(signalPipe.read, &message, 2) == 2 {
            if Int32(message[0]) != SIGCHLD { kill(child, Int32(message[0])) }
        }
        do {
            try spawn()
            return nil
        } catch {
            note("tokenvault run: \(error)")
            return .exited(127)
        }
    }

    /// Ends this process as the command ended: its exit code, or the same signal.
    public static func finish(_ outcome: Outcome) -> Never {
        switch outcome {
        case .exited(let code): exit(code)
        case .killed(let signo):
            tv_default_signal(signo)
            raise(signo)
            exit(128 + signo)
        }
    }
}
