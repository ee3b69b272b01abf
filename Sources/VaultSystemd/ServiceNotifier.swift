#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd how the service is doing (`sd_notify(3)`): one datagram to `$NOTIFY_SOCKET` per state
/// change, for `Type=notify` units. Without `$NOTIFY_SOCKET` (not under systemd) it does nothing.
public struct ServiceNotifier: Sendable {
    /// The socket's address as `sockaddr_un` wants it: a path, or `@name` for the abstract namespace.
    public let address: String?

    public init(environment: [String: String]) {
        let value = environment["NOTIFY_SOCKET"] ?? ""
        address = (value.hasPrefix("/") || value.hasPrefix("@")) && value.utf8.count < 108 ? value : nil
    }

    /// `READY=1`, with a status line for `systemctl status`.
    public func ready(status: String) { send("READY=1\nSTATUS=\(Self.line(status))") }

    /// `RELOADING=1` with the monotonic time systemd ≥ 253 asks for; `ready` again when done.
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let usec = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
        send("RELOADING=1\nMONOTONIC_USEC=\(usec)")
    }

    public func stopping() { send("STOPPING=1\nSTATUS=draining in-flight requests") }

    public func status(_ text: String) { send("STATUS=\(Self.line(text))") }

    /// Sends one message; best effort (systemd not listening must not stop the daemon).
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard let address else { return false }
        let fd = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let path = Array(address.utf8)
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in path.enumerated() { raw[i] = b }
            if path.first == UInt8(ascii: "@") { raw[0] = 0 }  // abstract namespace
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count)
        let bytes = Array(message.utf8)
        let sent = bytes.withUnsafeBytes { buf in
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf.baseAddress, buf.count, CInt(MSG_NOSIGNAL), $0, length) }
            }
        }
        return sent == bytes.count
    }

    private static func line(_ s: String) -> String {
        String(s.map { $0 == "\n" ? " " : $0 })
    }
}
