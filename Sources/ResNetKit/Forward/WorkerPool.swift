// Persistent worker threads for the plan's parallel loops.
//
// Why not DispatchQueue.concurrentPerform: measured on Linux (swift-corelibs-libdispatch), it ran every
// iteration on the calling thread, so a "two-thread" plan used one core. A plan runs about a hundred
// parallel regions per ResNet-50 call, so waking threads must be cheap: workers spin briefly on a
// generation counter after each region (the next layer usually starts within microseconds) and only then
// sleep on a condition variable, so an idle process does not burn CPU.

import Foundation
import Synchronization

final class WorkerPool: @unchecked Sendable {
    /// The process-wide pool; it grows to the largest thread count any plan asked for.
    static let shared = WorkerPool()

    private let condition = NSCondition()
    private let generation = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private var workers = 0                      // guarded by condition (grows only while not busy)
    // Published by `generation` (release) and read by workers after they see it (acquire).
    private var job: ((Int) -> Void)?
    private var chunks = 0

    /// Runs `body(0) … body(count - 1)`, chunk 0 on the calling thread and chunk i on worker i.
    /// When another caller holds the pool (concurrent plan runs), runs every chunk on this thread.
    func run(_ count: Int, _ body: (Int) -> Void) {
        if count <= 1 || !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            for i in 0..<count { body(i) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        condition.lock()
        while workers < count - 1 {
            workers += 1
            let index = workers
            let start = generation.load(ordering: .acquiring)
            let thread = Thread { [unowned self] in self.work(index: index, seen: start) }
            thread.name = "resnet-plan-\(index)"
            thread.start()
        }
        let total = workers
        condition.unlock()
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            chunks = count
            remaining.store(total, ordering: .relaxed)
            condition.lock()
            generation.add(1, ordering: .releasing)
            condition.broadcast()
            condition.unlock()
            body(0)
            var spins = 0
            while remaining.load(ordering: .acquiring) != 0 {
                spins += 1
                if spins > 4096 { sched_yield() }
            }
            job = nil
        }
    }

    private func work(index: Int, seen start: Int) {
        var seen = start
        while true {
            var current = generation.load(ordering: .acquiring)
            var spins = 0
            while current == seen && spins < 50_000 {
                spins += 1
                current = generation.load(ordering: .acquiring)
            }
            if current == seen {
                condition.lock()
                while generation.load(ordering: .acquiring) == seen { condition.wait() }
                condition.unlock()
                current = generation.load(ordering: .acquiring)
            }
            seen = current
            if index < chunks, let job { job(index) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
