import Foundation
import Synchronization
import Testing
@testable import VaultDaemon

/// Each event loop on a CPU of its own and the audit flusher on one no loop has (``ThreadPlacement``).
@Suite("thread placement")
struct ThreadPlacementTests {
    @Test func theLoopsTakeTheFirstCPUsAndTheFlusherTheLast() {
        #expect(ThreadPlacement.plan(loops: 1, allowed: [0, 1]) == ThreadPlacement(loopCPUs: [0], flusherCPU: 1))
        #expect(ThreadPlacement.plan(loops: 3, allowed: [0, 1, 2, 3, 4, 5, 6, 7]) == ThreadPlacement(loopCPUs: [0, 1, 2], flusherCPU: 7))
        // A mask narrowed by CPUAffinity= or taskset, given in any order.
        #expect(ThreadPlacement.plan(loops: 2, allowed: [7, 2, 5, 2]) == ThreadPlacement(loopCPUs: [2, 5], flusherCPU: 7))
    }

    @Test func tooFewCPUsPinNothing() {
        #expect(ThreadPlacement.plan(loops: 1, allowed: [3]) == nil)
        #expect(ThreadPlacement.plan(loops: 2, allowed: [0, 1]) == nil)
        #expect(ThreadPlacement.plan(loops: 1, allowed: []) == nil)
    }

    /// Pinned for real: a thread kept on one CPU sees only that CPU in its mask, and the thread that
    /// started it keeps its own.
    @Test func aPinnedThreadRunsOnlyOnItsCPU() throws {
        let before = ThreadPlacement.allowedCPUs()
        #expect(!before.isEmpty)
        let cpu = before.last!
        let seen = Mutex<(mask: [Int32], error: String?)>(([], nil))
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            do { try ThreadPlacement.pinCurrentThread(to: cpu) } catch { seen.withLock { $0.error = "\(error)" } }
            seen.withLock { $0.mask = ThreadPlacement.allowedCPUs() }
            done.signal()
        }
        t.start()
        #expect(done.wait(timeout: .now() + 10) == .success)
        seen.withLock {
            #expect($0.error == nil)
            #expect($0.mask == [cpu])
        }
        #expect(ThreadPlacement.allowedCPUs() == before)
    }

    @Test func aCPUTheMachineLacksIsAClearError() {
        #expect {
            try ThreadPlacement.pinCurrentThread(to: 4000)
        } throws: { error in
            "\(error)".contains("cannot keep a thread on CPU 4000")
        }
        #expect(throws: PlacementError.self) { try ThreadPlacement.pinCurrentThread(to: -1) }
    }
}
