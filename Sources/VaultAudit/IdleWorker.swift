import Foundation
import CSystemShims
#if canImport(Glibc)
import Glibc
#endif

/// One thread that runs background jobs, in order, at the kernel's idle priority (SCHED_IDLE): it gets
/// a core only when no other thread of the machine wants one, so work the log can wait for (a finished
/// segment's index) never takes CPU from the event loops, the flusher or the services they answer.
///
/// Under a load that keeps every core busy the jobs wait; they are never dropped while the process
/// runs. What was still queued at exit is not done (a segment without an index is scanned instead).
final class IdleWorker: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var running = 0

    init(name: String) {
        let thread = Thread {  // the worker lives as long as the process
            tv_set_thread_name(name)
            _ = tv_make_thread_idle()  // if refused (a seccomp filter), the jobs still run, at normal priority
            self.work()
        }
        thread.start()
    }

    /// Queues `job`; it runs after every job queued before it.
    func async(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.broadcast()  // a waiting `drain` shares the condition: wake the worker too
        condition.unlock()
    }

    /// Waits until every job queued so far has run (for tests).
    func drain() {
        condition.lock()
        while !jobs.isEmpty || running > 0 { condition.wait() }
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            running += 1
            condition.unlock()
            job()
            condition.lock()
            running -= 1
            condition.broadcast()
            condition.unlock()
        }
    }
}
