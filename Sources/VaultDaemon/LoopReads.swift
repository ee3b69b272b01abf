import NIOCore
import VaultWire
import VaultCore

/// One event loop's SQLite reader, holding one read transaction for all the lookups of a loop tick and
/// released by a task that runs once the tick's reads are handled. A burst of reads then takes SQLite's
/// shared lock once (two `fcntl`s and an `fstat`) instead of once per read; each read still sees every
/// write committed before its tick began. Used only on its own event loop.
public final class LoopReads: @unchecked Sendable {
    private let loop: any EventLoop
    private let reader: any HeldTokenReader
    private var releaseScheduled = false

    public init(loop: any EventLoop, vault: Vault) {
        self.loop = loop
        self.reader = vault.makeHeldReader()
    }

    /// The reader, its release scheduled for the end of this tick.
    func forThisTick() -> any HeldTokenReader {
        loop.preconditionInEventLoop()
        if !releaseScheduled {
            releaseScheduled = true
            loop.execute {
                self.releaseScheduled = false
                self.reader.release()
            }
        }
        return reader
    }
}
