//! The per-shard budget of request memory (Redpanda's request memory semaphore).
//!
//! A connection acquires permits for a frame's size as soon as it has read the
//! 4-byte length — before it reserves buffer space or reads the body — and holds
//! them until the response has been written. When the shard's budget is spent,
//! connections stop reading and TCP pushes back on the clients, so a flood of
//! producers slows down instead of growing the heap. Waiters are served in
//! order; a frame larger than the whole budget waits for the whole budget.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use futures::channel::oneshot;

pub struct MemoryBudget {
    capacity: usize,
    available: Cell<usize>,
    waiters: RefCell<VecDeque<(usize, oneshot::Sender<()>)>>,
}

/// Bytes held from a [`MemoryBudget`]; returned on drop.
pub struct Permit {
    budget: Rc<MemoryBudget>,
    bytes: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

struct Waiting {
    budget: Rc<MemoryBudget>,
    bytes: usize,
    rx: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.granted {
            self.rx.close();
            if let Ok(Some(())) = self.rx.try_recv() {
                self.budget.release(self.bytes);
            }
        }
    }
}

impl MemoryBudget {
    pub fn new(capacity: usize) -> Rc<MemoryBudget> {
        let capacity = capacity.max(1);
        Rc::new(MemoryBudget {
            capacity,
            available: Cell::new(capacity),
            waiters: RefCell::new(VecDeque::new()),
        })
    }

    pub fn available(&self) -> usize {
        self.available.get()
    }

    /// Waits until `bytes` (at most the whole budget) can be taken.
    pub async fn acquire(self: &Rc<Self>, bytes: usize) -> Permit {
        let bytes = bytes.min(self.capacity);
        if self.waiters.borrow().is_empty() && self.available.get() >= bytes {
            self.available.set(self.available.get() - bytes);
            return Permit {
                budget: self.clone(),
                bytes,
            };
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push_back((bytes, tx));
        // The releaser deducts our bytes before waking us; `Waiting` gives them back
        // if we are cancelled between that and building the permit.
        let mut waiting = Waiting {
            budget: self.clone(),
            bytes,
            rx,
            granted: false,
        };
        let _ = (&mut waiting.rx).await;
        waiting.granted = true;
        Permit {
            budget: self.clone(),
            bytes,
        }
    }

    fn release(&self, bytes: usize) {
        self.available.set(self.available.get() + bytes);
        loop {
            let mut waiters = self.waiters.borrow_mut();
            let Some((need, _)) = waiters.front() else {
                return;
            };
            if *need > self.available.get() {
                return;
            }
            let (need, tx) = waiters.pop_front().expect("front exists");
            drop(waiters);
            self.available.set(self.available.get() - need);
            if tx.send(()).is_err() {
                // The waiter went away (its connection closed): give the bytes back.
                self.available.set(self.available.get() + need);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_served_in_order_and_bytes_come_back() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let b = MemoryBudget::new(100);
            let p1 = b.acquire(60).await;
            assert_eq!(b.available(), 40);
            let b2 = b.clone();
            let waiter = compio::runtime::spawn(async move { b2.acquire(500).await });
            compio::time::sleep(std::time::Duration::from_millis(10)).await;
            assert!(
                !waiter.is_finished(),
                "a frame larger than what is left waits"
            );
            drop(p1);
            let p2 = waiter.await.unwrap();
            assert_eq!(b.available(), 0, "clamped to the whole budget");
            drop(p2);
            assert_eq!(b.available(), 100);
        });
    }

    #[test]
    fn a_waiter_that_goes_away_does_not_leak_bytes() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let b = MemoryBudget::new(10);
            let p = b.acquire(10).await;
            let b2 = b.clone();
            let waiter = compio::runtime::spawn(async move { b2.acquire(5).await });
            compio::time::sleep(std::time::Duration::from_millis(10)).await;
            drop(waiter); // cancels the task (dropped on the runtime's next turn)
            drop(p);
            compio::time::sleep(std::time::Duration::from_millis(10)).await;
            assert_eq!(b.available(), 10);
        });
    }
}
