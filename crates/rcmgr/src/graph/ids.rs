//! Connection and stream numbers, handed out in blocks per thread so that threads opening
//! streams at once do not all write one counter's cache line. One thread alone gets 1, 2,
//! 3, ... as go numbers them; several threads get distinct numbers from distinct blocks.

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// A manager's two counters.
#[derive(Debug)]
pub(crate) struct Ids {
    conns: CachePadded<AtomicU64>,
    streams: CachePadded<AtomicU64>,
    /// Tells this manager apart from every other one of the process (for the blocks).
    instance: u64,
}

/// Which of the two counters.
#[derive(Clone, Copy)]
enum Counter {
    Conn,
    Stream,
}

/// Numbers a thread takes from a counter at once.
#[cfg(not(rcmgr_loom))]
const BLOCK: u64 = 256;

impl Ids {
    pub(crate) fn new() -> Self {
        Ids {
            conns: CachePadded::new(AtomicU64::new(1)),
            streams: CachePadded::new(AtomicU64::new(1)),
            instance: new_instance(),
        }
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.next(&self.conns, Counter::Conn)
    }

    pub(crate) fn next_stream(&self) -> u64 {
        self.next(&self.streams, Counter::Stream)
    }

    #[inline]
    fn next(&self, counter: &AtomicU64, which: Counter) -> u64 {
        #[cfg(not(rcmgr_loom))]
        {
            use std::cell::Cell;
            /// A thread's current block: the manager it came from, the next number, the end.
            type Block = Cell<(u64, u64, u64)>;
            thread_local! {
                static BLOCKS: [Block; 2] = const { [Cell::new((0, 0, 0)), Cell::new((0, 0, 0))] };
            }
            let owner = self.instance;
            BLOCKS.with(|blocks| {
                let block = &blocks[which as usize];
                let (from, next, end) = block.get();
                if from == owner && next < end {
                    block.set((from, next + 1, end));
                    return next;
                }
                // Ordering: Relaxed — only distinct numbers are needed.
                let start = counter.fetch_add(BLOCK, Ordering::Relaxed);
                block.set((owner, start + 1, start + BLOCK));
                start
            })
        }
        #[cfg(rcmgr_loom)]
        {
            let _ = (which, self.instance);
            // Ordering: Relaxed — only distinct numbers are needed.
            counter.fetch_add(1, Ordering::Relaxed)
        }
    }
}

/// A number no other manager of this process has (under loom, where ids come straight from
/// the counters, it is not needed).
fn new_instance() -> u64 {
    #[cfg(not(rcmgr_loom))]
    {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        // Ordering: Relaxed — only distinct numbers are needed.
        INSTANCES.fetch_add(1, Ordering::Relaxed)
    }
    #[cfg(rcmgr_loom)]
    {
        0
    }
}
