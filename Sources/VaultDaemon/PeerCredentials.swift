import CSystemShims
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's account of who is on the other end of a Unix socket (`SO_PEERCRED`).
public enum PeerCredentials {
    /// For a raw socket descriptor.
    public static func of(fd: Int32) -> (uid: UInt32, gid: UInt32, pid: Int32)? {
        var c = tv_peer_credentials()
        guard tv_get_peer_credentials(fd, &c) == 0 else { return nil }
        return (c.uid, c.gid, c.pid)
    }

    /// For a NIO channel: the same `getsockopt`, through NIO's socket-option interface.
    static func of(channel: Channel) -> EventLoopFuture<tv_peer_credentials> {
        guard let provider = channel as? SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(ServeError("the channel is not a socket"))
        }
        return provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(tv_so_peercred()))
    }
}
