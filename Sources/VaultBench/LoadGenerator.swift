import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A closed-loop load generator speaking protocol v1: N client threads, each with its own connection,
/// keeping `pipeline` requests in flight, for a warm-up and then a fixed measured duration.
public struct LoadGenerator: Sendable {
    public enum Operation: String, Sendable, CaseIterable { case get, list, ping, echo }

    public struct Options: Sendable {
        public var socketPath: String
        public var clients = 8
        public var duration = 5.0
        public var warmup = 1.0
        public var pipeline = 1
        public var operation = Operation.get
        public var names: [String] = []
        public var proof: String?
        public init(socketPath: String) { self.socketPath = socketPath }
    }

    /// What a run measured. Latencies in microseconds.
    public struct Result: Sendable, Codable {
        public var clients: Int
        public var pipeline: Int
        public var operation: String
        public var durationSeconds: Double
        public var requests: Int
        public var ok: Int
        public var errors: [String: Int]
        public var rps: Double
        public var p50: Double
        public var p90: Double
        public var p99: Double
        public var p999: Double
        public var max: Double

        enum CodingKeys: String, CodingKey {
            case clients, pipeline, operation, requests, ok, errors, rps, max
            case durationSeconds = "duration_s", p50 = "p50_us", p90 = "p90_us", p99 = "p99_us", p999 = "p999_us"
        }
    }

    public let options: Options

    public init(options: Options) {
        self.options = options
    }

    public func run() throws -> Result {
        let o = options
        let names = o.names.isEmpty ? ["tok-000000"] : o.names
        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var latencies: [UInt64] = []
            var ok = 0
            var errors: [String: Int] = [:]
            var failure: String?
        }
        let shared = Shared()
        let start = DispatchTime.now().uptimeNanoseconds
        let measureFrom = start + UInt64(o.warmup * 1e9)
        let stopAt = measureFrom + UInt64(o.duration * 1e9)
        let group = DispatchGroup()
        for client in 0..<o.clients {
            group.enter()
            let t = Thread {
                defer { group.leave() }
                var local: [UInt64] = []
                local.reserveCapacity(1 << 16)
                var ok = 0
                var errors: [String: Int] = [:]
                guard let c = try? Connection(path: o.socketPath) else {
                    shared.lock.withLock { shared.failure = "cannot connect to \(o.socketPath)" }
                    return
                }
                var next = client * max(1, names.count / max(1, o.clients))
                var inFlight: [(UInt64, Bool)] = []  // send time, counted
                func request() -> [UInt8] {
                    let line: String
                    switch o.operation {
                    case .get:
                        let name = names[next % names.count]
                        next += 1
                        line = o.proof.map { #"{"op":"get","name":"\#(name)","proof":"\#($0)","id":1}"# } ?? #"{"op":"get","name":"\#(name)","id":1}"#
                    case .list: line = #"{"op":"list","id":1}"#
                    case .ping, .echo: line = #"{"op":"ping","id":1}"#
                    }
                    return Array((line + "\n").utf8)
                }
                while true {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if now >= stopAt && inFlight.isEmpty { break }
                    if now < stopAt {
                        while inFlight.count < o.pipeline {
                            let t0 = DispatchTime.now().uptimeNanoseconds
                            guard c.send(request()) else { break }
                            inFlight.append((t0, t0 >= measureFrom && t0 < stopAt))
                        }
                    }
                    guard let line = c.readLine() else { break }
                    let t1 = DispatchTime.now().uptimeNanoseconds
                    let (t0, counted) = inFlight.removeFirst()
                    guard counted else { continue }
                    if line.contains(#""ok":true"#) {
                        ok += 1
                        local.append(t1 - t0)
                    } else {
                        let code = line.range(of: #""code":""#).map { String(line[$0.upperBound...].prefix { $0 != "\"" }) } ?? "protocol_error"
                        errors[code, default: 0] += 1
                    }
                }
                shared.lock.withLock {
                    shared.latencies.append(contentsOf: local)
                    shared.ok += ok
                    for (k, v) in errors { shared.errors[k, default: 0] += v }
                }
            }
            t.stackSize = 1 << 20
            t.start()
        }
        group.wait()
        if let failure = shared.failure { throw BenchError(description: failure) }
        let sorted = shared.latencies.sorted()
        func pct(_ p: Double) -> Double { microseconds(atPercentile: p, ofSorted: sorted) }
        let requests = shared.ok + shared.errors.values.reduce(0, +)
        return Result(clients: o.clients, pipeline: o.pipeline, operation: o.operation.rawValue + (o.proof.map { "+proof(\($0))" } ?? ""),
                      durationSeconds: o.duration, requests: requests, ok: shared.ok, errors: shared.errors,
                      rps: Double(requests) / o.duration, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), p999: pct(0.999),
                      max: Double(sorted.last ?? 0) / 1000)
    }
}

/// The `p` quantile (0...1) of sorted nanosecond latencies, in microseconds; 0 for none.
func microseconds(atPercentile p: Double, ofSorted nanos: [UInt64]) -> Double {
    guard !nanos.isEmpty else { return 0 }
    return Double(nanos[min(nanos.count - 1, Int(Double(nanos.count) * p))]) / 1000
}

public struct BenchError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// A blocking Unix-socket connection that reads replies line by line.
final class Connection {
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0
    private var end = 0

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8).prefix($0.count - 1)) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else {
            close(fd)
            throw BenchError(description: "connect \(path): \(String(cString: strerror(errno)))")
        }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) == $0.count }
    }

    func readLine() -> String? {
        while true {
            if let nl = buffer[start..<end].firstIndex(of: 0x0a) {
                let line = String(decoding: buffer[start..<nl], as: UTF8.self)
                start = nl + 1
                return line
            }
            if start > 0 {
                buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
                end -= start
                start = 0
            }
            if end == buffer.count { buffer.append(contentsOf: [UInt8](repeating: 0, count: buffer.count)) }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + end, $0.count - end, 0) }
            if n <= 0 { return nil }
            end += n
        }
    }
}
