import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `tokenvault bench watch`: how long after a commit each of N watching connections has its event.
public struct WatchFanout: Sendable {
    /// Microseconds from the commit's return to each connection's event, over every change.
    public struct Result: Sendable, Codable {
        public var watchers: Int
        public var changes: Int
        public var events: Int
        public var p50: Double
        public var p99: Double
        public var max: Double
        enum CodingKeys: String, CodingKey {
            case watchers, changes, events, max = "max_us", p50 = "p50_us", p99 = "p99_us"
        }
    }

    public let socketPath: String
    public let pattern: String
    public let watchers: Int

    public init(socketPath: String, pattern: String, watchers: Int) {
        self.socketPath = socketPath
        self.pattern = pattern
        self.watchers = watchers
    }

    /// Opens the watchers, then `changes` times calls `commit` (which commits a change to a watched name and
    /// returns once it is committed) and waits for every watcher's event line.
    public func run(changes: Int, commit: (Int) throws -> Void) throws -> Result {
        raiseDescriptorLimit(to: watchers + 64)
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        let request = Array(#"{"op":"watch","names":["\#(pattern)"],"id":1}"#.utf8) + [0x0a]
        for _ in 0..<watchers {
            let c = try Connection(path: socketPath)
            guard c.send(request), let ack = c.readLine(), ack.contains(#""ok":true"#) else {
                throw BenchError(description: "watch was not acknowledged (is \(pattern) readable by this uid?)")
            }
            fds.append(dup(c.fd))  // the Connection closes its own descriptor; the dup stays open
        }
        var latencies: [UInt64] = []
        latencies.reserveCapacity(watchers * changes)
        var pollSet = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var scratch = [UInt8](repeating: 0, count: 4096)
        for change in 0..<changes {
            try commit(change)
            let committed = DispatchTime.now().uptimeNanoseconds
            var waiting = Set(0..<fds.count)
            let deadline = committed + 10_000_000_000
            while !waiting.isEmpty {
                for i in pollSet.indices { pollSet[i].revents = 0 }
                let n = poll(&pollSet, nfds_t(pollSet.count), 1000)
                let now = DispatchTime.now().uptimeNanoseconds
                if now > deadline { throw BenchError(description: "\(waiting.count) watchers had no event 10 s after a commit") }
                guard n > 0 else { continue }
                for i in pollSet.indices where pollSet[i].revents != 0 {
                    let got = scratch.withUnsafeMutableBytes { recv(pollSet[i].fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
                    if got == 0 { throw BenchError(description: "the daemon closed a watching connection") }
                    if got > 0, scratch[0..<got].contains(0x0a), waiting.remove(i) != nil {
                        latencies.append(now - committed)
                    }
                }
            }
        }
        latencies.sort()
        func pct(_ p: Double) -> Double { microseconds(atPercentile: p, ofSorted: latencies) }
        return Result(watchers: watchers, changes: changes, events: latencies.count, p50: pct(0.5), p99: pct(0.99),
                      max: Double(latencies.last ?? 0) / 1000)
    }
}

/// `tokenvault bench credential`: systemd's side of `LoadCredential=`, N connections one after another.
public struct CredentialClient: Sendable {
    public struct Result: Sendable, Codable {
        public var connections: Int
        public var seconds: Double
        public var perSecond: Double
        public var p50: Double
        public var p99: Double
        public var bytes: Int
        enum CodingKeys: String, CodingKey {
            case connections, seconds, bytes, perSecond = "per_second", p50 = "p50_us", p99 = "p99_us"
        }
    }

    public let socketPath: String
    public let unit: String
    public let id: String

    public init(socketPath: String, unit: String, id: String) {
        self.socketPath = socketPath
        self.unit = unit
        self.id = id
    }

    /// Reads one credential as systemd does: bind `\0<random>/unit/<unit>/<id>`, connect, read to EOF.
    public func read() throws -> [UInt8] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw BenchError(description: "socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let name = [0] + Array(String(format: "%016llx/unit/%@/%@", UInt64.random(in: 0...UInt64.max), unit, id).utf8)
        var local = sockaddr_un()
        local.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &local.sun_path) { $0.copyBytes(from: name) }
        let localLength = socklen_t(MemoryLayout<sa_family_t>.size + name.count)
        guard withUnsafePointer(to: &local, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, localLength) } }) == 0 else {
            throw BenchError(description: "bind abstract address: \(String(cString: strerror(errno)))")
        }
        var remote = sockaddr_un()
        remote.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &remote.sun_path) { $0.copyBytes(from: Array(socketPath.utf8).prefix($0.count - 1)) }
        guard withUnsafePointer(to: &remote, { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }) == 0 else {
            throw BenchError(description: "connect \(socketPath): \(String(cString: strerror(errno)))")
        }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return out
    }

    public func run(connections: Int) throws -> Result {
        var latencies: [UInt64] = []
        var bytes = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<connections {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let got = try read()
            latencies.append(DispatchTime.now().uptimeNanoseconds - t0)
            guard !got.isEmpty else { throw BenchError(description: "the credential socket sent nothing (is there a [[credential]] rule for \(unit) \(id), and is this root?)") }
            bytes += got.count
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        latencies.sort()
        func pct(_ p: Double) -> Double { microseconds(atPercentile: p, ofSorted: latencies) }
        return Result(connections: connections, seconds: seconds, perSecond: Double(connections) / seconds,
                      p50: pct(0.5), p99: pct(0.99), bytes: bytes)
    }
}

func raiseDescriptorLimit(to wanted: Int) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(wanted) else { return }
    limit.rlim_cur = min(limit.rlim_max, rlim_t(wanted))
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
