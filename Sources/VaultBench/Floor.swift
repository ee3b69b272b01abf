import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The floor the daemon's figures are divided by: what the machine does with no vault at all.
public enum Floor {
    /// A raw echo server on a Unix socket: one thread per connection, each request line answered with a
    /// fixed `{"id":1,"ok":true}` line. Returns the socket path and a stop function.
    public static func startEcho(path: String) throws -> @Sendable () -> Void {
        unlink(path)
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8).prefix($0.count - 1)) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, listen(listener, 512) == 0 else { throw BenchError(description: "echo floor: cannot listen on \(path)") }
        let t = Thread {
            while true {
                let c = accept(listener, nil, nil)
                if c < 0 { return }
                let conn = Thread {
                    var buf = [UInt8](repeating: 0, count: 65536)
                    let reply = Array(#"{"id":1,"ok":true}"#.utf8) + [0x0a]
                    while true {
                        let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
                        if n <= 0 { break }
                        let lines = buf[0..<n].reduce(0) { $0 + ($1 == 0x0a ? 1 : 0) }
                        for _ in 0..<lines { _ = reply.withUnsafeBytes { send(c, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) } }
                    }
                    close(c)
                }
                conn.stackSize = 1 << 18
                conn.start()
            }
        }
        t.start()
        return {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
            unlink(path)
        }
    }

    /// The cost of one small `write` + `fdatasync` on the filesystem holding `directory`, in microseconds
    /// (median of `count`).
    public static func fdatasyncMicros(directory: String, count: Int = 200) throws -> Double {
        let path = directory + "/.fsync-probe"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw BenchError(description: "cannot create \(path)") }
        defer {
            close(fd)
            unlink(path)
        }
        let line = [UInt8](repeating: 0x61, count: 300) + [0x0a]
        var samples: [Double] = []
        for _ in 0..<count {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = line.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
            _ = fdatasync(fd)
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
        }
        samples.sort()
        return samples[samples.count / 2]
    }
}
