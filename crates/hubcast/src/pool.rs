//! Per-thread spares of the buffers a connection needs only while it has
//! something to send: its outbound queue and the buffer a batch is built
//! in. An idle connection holds neither (memory per idle connection is a
//! target), so without spares every burst of frames would pay an
//! allocation and a free for each. The spares are bounded in number and
//! size (`SPARES`, `QUEUE_MAX`, `BUFFER_MAX` per worker thread).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::thread::LocalKey;

use bytes::Bytes;

/// Spares kept per thread, of each kind.
const SPARES: usize = 64;
/// Largest queue kept as a spare (frames).
const QUEUE_MAX: usize = 256;
/// Largest batch buffer kept as a spare (bytes).
const BUFFER_MAX: usize = 16 * 1024;
/// Capacity of a new queue (a first push would make room for four).
const QUEUE_NEW: usize = 8;

thread_local! {
    static QUEUES: RefCell<Vec<VecDeque<Bytes>>> = const { RefCell::new(Vec::new()) };
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty queue with room for a few frames.
pub(crate) fn queue() -> VecDeque<Bytes> {
    QUEUES
        .try_with(|q| q.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| VecDeque::with_capacity(QUEUE_NEW))
}

/// Gives a queue back (emptied here); dropped if large or spares are full.
pub(crate) fn recycle_queue(mut q: VecDeque<Bytes>) {
    if q.capacity() == 0 || q.capacity() > QUEUE_MAX {
        return;
    }
    q.clear();
    keep(&QUEUES, q);
}

/// An empty buffer with room for at least `min` bytes.
pub(crate) fn buffer(min: usize) -> Vec<u8> {
    let spare = BUFFERS
        .try_with(|b| {
            let mut b = b.borrow_mut();
            let i = b.iter().position(|v| v.capacity() >= min)?;
            Some(b.swap_remove(i))
        })
        .ok()
        .flatten();
    spare.unwrap_or_else(|| Vec::with_capacity(min))
}

/// Gives a buffer back (emptied here); dropped if large or spares are full.
pub(crate) fn recycle_buffer(mut b: Vec<u8>) {
    if b.capacity() == 0 || b.capacity() > BUFFER_MAX {
        return;
    }
    b.clear();
    keep(&BUFFERS, b);
}

/// Keeps `item` among the thread's spares unless they are full (or the
/// thread is exiting).
fn keep<T>(spares: &'static LocalKey<RefCell<Vec<T>>>, item: T) {
    let _ = spares.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES {
            spares.push(item);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_reused_empty_and_bounded() {
        let mut q = queue();
        q.push_back(Bytes::from_static(b"x"));
        let cap = q.capacity();
        recycle_queue(q);
        let q = queue();
        assert!(q.is_empty() && q.capacity() == cap, "the spare, emptied");

        recycle_queue(VecDeque::with_capacity(QUEUE_MAX * 2));
        assert!(
            queue().capacity() <= QUEUE_NEW.max(cap),
            "large ones are dropped"
        );

        let mut b = buffer(100);
        b.extend_from_slice(b"abc");
        recycle_buffer(b);
        let b = buffer(50);
        assert!(b.is_empty() && b.capacity() >= 100);
        assert!(
            buffer(BUFFER_MAX).capacity() >= BUFFER_MAX,
            "too small spares are skipped"
        );

        for _ in 0..SPARES * 2 {
            recycle_buffer(Vec::with_capacity(10));
        }
        assert_eq!(BUFFERS.with(|b| b.borrow().len()), SPARES);
    }
}
