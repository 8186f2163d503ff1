//! A bounded single-consumer queue that holds memory only while packets wait in it.
//!
//! Why (Banter's patch, see vendor/README.md): every socket owns two queues, its packets
//! and its heartbeat. tokio's bounded `mpsc` channel allocates its first block of 32
//! slots when it is made, whatever its bound: with 184-byte packet buffers that is about
//! 6 KB per socket before anything is sent, the largest single cost of an idle
//! connection. This queue keeps its items in a `VecDeque` that grows as packets are
//! queued and is freed when the consumer has taken the last one, so an idle socket holds
//! only the queue's shared state (about 100 bytes).
//!
//! What it keeps from tokio's channel, because engineioxide and socketioxide rely on it:
//! - the bound counts queued items and outstanding [`Permit`]s; a full queue refuses with
//!   [`TrySendError::Full`], a closed one with [`TrySendError::Closed`];
//! - FIFO order, and items queued before [`Receiver::close`] can still be received;
//! - [`Sender::closed`] resolves once the receiver is closed or dropped;
//! - `recv` returns `None` once the queue is closed (or every sender dropped) and empty.
//!
//! What it does not do: several receivers, or senders beyond the one the socket owns and
//! its clones (there is no sender count beyond what closing needs).
//! Waking is one waker for the receiver and a [`Notify`] for senders waiting for room or
//! for the close.

use std::{
    collections::VecDeque,
    fmt,
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::sync::{
    Notify,
    mpsc::error::{TryRecvError, TrySendError},
};

/// Makes a queue that holds at most `bound` items (queued and reserved).
pub(crate) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    assert!(bound > 0, "a queue must hold at least one item");
    let shared = Arc::new(Shared {
        bound,
        state: Mutex::new(State {
            items: VecDeque::new(),
            reserved: 0,
            closed: false,
            senders: 1,
            receiver_waker: None,
            room_wanted: false,
        }),
        room_or_closed: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    bound: usize,
    state: Mutex<State<T>>,
    /// Wakes senders waiting for room ([`Sender::send`]) or for the close.
    room_or_closed: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    /// Permits handed out and not yet used or dropped.
    reserved: usize,
    /// The receiver closed the queue or was dropped.
    closed: bool,
    senders: usize,
    receiver_waker: Option<Waker>,
    /// A sender waits in [`Sender::send`] for room: taking an item must wake it.
    room_wanted: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while the lock is held but an allocation failure; the state is
        // consistent at every point a panic could start, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_room(&self, state: &State<T>) -> bool {
        state.items.len() + state.reserved < self.bound
    }

    fn room_freed(&self, state: &mut State<T>) {
        if std::mem::take(&mut state.room_wanted) {
            self.room_or_closed.notify_waiters();
        }
    }
}

/// The sending half; the socket keeps one.
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// Room for one item, taken from the bound until it is used or dropped.
pub(crate) struct Permit<'a, T> {
    shared: &'a Shared<T>,
}

/// The receiving half: one consumer at a time (engineioxide holds it behind a lock).
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(TrySendError::Closed(item));
            }
            if !self.shared.has_room(&state) {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
            state.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Takes room for one item without queueing anything yet.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TrySendError::Closed(()));
        }
        if !self.shared.has_room(&state) {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit {
            shared: &self.shared,
        })
    }

    /// Queues `item`, waiting for room; gives it back if the queue is closed.
    pub(crate) async fn send(&self, mut item: T) -> Result<(), T> {
        loop {
            let room = self.shared.room_or_closed.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // The guard must not live across the await below (the future is `Send`).
            let full = {
                let mut state = self.shared.lock();
                if state.closed {
                    return Err(item);
                }
                if self.shared.has_room(&state) {
                    state.items.push_back(item);
                    let waker = state.receiver_waker.take();
                    drop(state);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return Ok(());
                }
                state.room_wanted = true;
                item
            };
            item = full;
            room.await;
        }
    }

    /// Whether the receiver has closed the queue or is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Resolves once the receiver has closed the queue or is gone.
    pub(crate) async fn closed(&self) {
        loop {
            let closed = self.shared.room_or_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.is_closed() {
                return;
            }
            closed.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.receiver_waker.take()
        };
        // The last sender is gone: a waiting receiver must see the end.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Permit<'_, T> {
    /// Queues `item` in the room this permit holds.
    pub(crate) fn send(self, item: T) {
        let waker = {
            let mut state = self.shared.lock();
            state.reserved -= 1;
            // Closed since the permit was taken: the item goes, as with tokio's permits
            // (the receiver would never read it).
            if !state.closed {
                state.items.push_back(item);
            }
            state.receiver_waker.take()
        };
        std::mem::forget(self);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.reserved -= 1;
        self.shared.room_freed(&mut state);
    }
}

impl<T> Receiver<T> {
    /// Takes the next item, waiting for one; `None` once the queue is closed or every
    /// sender is gone, and it is empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Takes the next item if there is one.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        match self.take(&mut state) {
            Some(item) => Ok(item),
            None if state.closed || state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// [`Self::recv`] as a poll function.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = self.take(&mut state) {
            return Poll::Ready(Some(item));
        }
        if state.closed || state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.receiver_waker {
            Some(waker) => waker.clone_from(cx.waker()),
            none => *none = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Refuses new items from now on; those queued can still be received.
    pub(crate) fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room_or_closed.notify_waiters();
    }

    fn take(&self, state: &mut State<T>) -> Option<T> {
        let item = state.items.pop_front()?;
        if state.items.is_empty() {
            // The point of this queue: an idle socket keeps no buffer.
            state.items = VecDeque::new();
        }
        self.shared.room_freed(state);
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Sender")
            .field("queued", &state.items.len())
            .field("reserved", &state.reserved)
            .field("bound", &self.shared.bound)
            .field("closed", &state.closed)
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Receiver")
            .field("queued", &state.items.len())
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_the_bound_counts_permits() {
        let (tx, mut rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Full(()))));
        permit.send(2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        // A dropped permit gives its room back.
        drop(tx.try_reserve().unwrap());
        tx.try_send(4).unwrap();
        tx.try_send(5).unwrap();
        assert_eq!(rx.recv().await, Some(4));
    }

    #[tokio::test]
    async fn the_buffer_is_freed_once_drained() {
        let (tx, mut rx) = channel::<[u8; 184]>(128);
        assert_eq!(
            tx.shared.lock().items.capacity(),
            0,
            "nothing allocated up front"
        );
        for _ in 0..10 {
            tx.try_send([0; 184]).unwrap();
        }
        assert!(tx.shared.lock().items.capacity() >= 10);
        while rx.try_recv().is_ok() {}
        assert_eq!(tx.shared.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn closing_keeps_what_was_queued_and_refuses_the_rest() {
        let (tx, mut rx) = channel::<u32>(4);
        tx.try_send(1).unwrap();
        let permit = tx.try_reserve().unwrap();
        rx.close();
        assert!(tx.is_closed());
        tx.closed().await;
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        assert!(matches!(tx.try_reserve(), Err(TrySendError::Closed(()))));
        permit.send(3);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(
            rx.recv().await,
            None,
            "an item sent after the close is dropped"
        );
        assert_eq!(tx.send(5).await, Err(5));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_and_for_the_last_sender_leaving() {
        let (tx, mut rx) = channel::<u32>(1);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::task::yield_now().await;
        tx.try_send(7).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), (Some(7), None));
    }

    #[tokio::test]
    async fn send_waits_for_room_and_closed_waits_for_the_close() {
        let (tx, mut rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let tx = Arc::new(tx);
        let sender = tx.clone();
        let sending = tokio::spawn(async move { sender.send(2).await });
        tokio::task::yield_now().await;
        assert!(!sending.is_finished(), "no room yet");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(sending.await.unwrap(), Ok(()));
        assert_eq!(rx.recv().await, Some(2));

        let watcher = tx.clone();
        let watching = tokio::spawn(async move { watcher.closed().await });
        tokio::task::yield_now().await;
        assert!(!watching.is_finished());
        drop(rx);
        watching.await.unwrap();
    }
}
