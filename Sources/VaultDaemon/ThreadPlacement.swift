import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// Which CPU each of the daemon's busy threads runs on: every event loop on a CPU of its own, and the
/// audit flusher on one no loop uses.
///
/// A read is handled on its loop and made durable by the flusher; the two hand work to each other
/// thousands of times a second. Left to itself the kernel often wakes one on the CPU of the other, and
/// then the pair shares one core while the other idles: on two cores, with the loop and the flusher on
/// one CPU, the daemon served 18–19k reads/s against 31–34k on two (Docs/BENCHMARKS.md). Pinned, they
/// never meet — but every hand-over is then a wake-up across cores, which a lone client pays on each
/// read (0.78× tvfloor at one client, against 0.90× unpinned), so pinning is asked for (`pin_threads`),
/// not the default. Only these threads are pinned; the rest of the daemon (the Meta re-checker, the
/// audit index thread, checkpoints) runs where the kernel puts it.
///
/// The CPUs are taken from those the daemon may run on (a service manager's `CPUAffinity=`, or
/// `taskset`), in order: the loops on the first, the flusher on the last. With fewer CPUs than loops
/// and a flusher, nothing is pinned.
public struct ThreadPlacement: Sendable, Equatable {
    /// The CPU of each event loop, in the loop group's order.
    public let loopCPUs: [Int32]
    /// The audit flusher's CPU, which no loop has.
    public let flusherCPU: Int32

    /// The placement for `loops` event loops on the CPUs `allowed`, or nil when there are not enough.
    public static func plan(loops: Int, allowed: [Int32]) -> ThreadPlacement? {
        let cpus = Array(Set(allowed)).sorted()
        guard loops >= 1, cpus.count >= loops + 1 else { return nil }
        return ThreadPlacement(loopCPUs: Array(cpus.prefix(loops)), flusherCPU: cpus[cpus.count - 1])
    }

    /// The CPUs this thread may run on (its affinity mask), in increasing order; empty if the kernel
    /// does not say.
    public static func allowedCPUs() -> [Int32] {
        var cpus = [CInt](repeating: 0, count: 1024)
        let n = tv_allowed_cpus(&cpus, CInt(cpus.count))
        guard n > 0 else { return [] }
        return cpus.prefix(Int(min(n, CInt(cpus.count)))).map { Int32($0) }
    }

    /// Keeps the calling thread on `cpu`. Throws with the kernel's reason when it refuses.
    public static func pinCurrentThread(to cpu: Int32) throws {
        guard tv_pin_thread_to_cpu(cpu) == 0 else {
            throw PlacementError(description: "cannot keep a thread on CPU \(cpu): \(String(cString: strerror(errno)))")
        }
    }

    public var description: String {
        "event loop\(loopCPUs.count == 1 ? "" : "s") on CPU \(loopCPUs.map(String.init).joined(separator: ",")), audit flusher on CPU \(flusherCPU)"
    }
}

public struct PlacementError: Error, CustomStringConvertible, Sendable {
    public let description: String
}
