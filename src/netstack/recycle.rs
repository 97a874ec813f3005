//! Packet buffers on their way back to the side that fills them, so that no packet costs an
//! allocation, a cross-thread free or a copy at the packet boundary.
//!
//! Two loops run in userspace mode (`Netstack::spawn` + `PacketPort::into_inner`):
//! * inbound: the data plane's decrypting thread swaps each decrypted packet's buffer for a
//!   recycled one (`StackWriter`); the driver hands the buffer back here once smoltcp has read
//!   the packet;
//! * outbound: the driver builds each packet in a recycled buffer (`TxTok`); the data plane's
//!   encrypting thread swaps it for the buffer it gave last time (`StackReader`) and hands that
//!   one back here.
//!
//! Each side moves buffers in batches (one lock per batch, not per packet). A [`Recycler`]
//! keeps at most `cap` buffers: beyond that they are freed, so the memory held is bounded
//! whatever the traffic did.

use std::sync::Arc;

use parking_lot::Mutex;

/// Spare buffers a [`Spares`] takes from its [`Recycler`] at once.
pub(super) const REFILL: usize = 64;

/// A bounded stack of spare packet buffers shared by two threads.
#[derive(Debug)]
pub(super) struct Recycler {
    spare: Mutex<Vec<Vec<u8>>>,
    cap: usize,
}

impl Recycler {
    pub(super) fn new(cap: usize) -> Self {
        Recycler {
            spare: Mutex::new(Vec::with_capacity(cap)),
            cap,
        }
    }

    /// Gives back every buffer of `bufs` (as many as fit; the rest are freed).
    pub(super) fn put_all(&self, bufs: &mut Vec<Vec<u8>>) {
        if bufs.is_empty() {
            return;
        }
        let mut spare = self.spare.lock();
        let room = self.cap.saturating_sub(spare.len());
        let keep = bufs.len().min(room);
        spare.extend(bufs.drain(..keep));
        drop(spare);
        bufs.clear();
    }

    /// Moves up to `max` spare buffers to `into`.
    pub(super) fn take(&self, into: &mut Vec<Vec<u8>>, max: usize) {
        let mut spare = self.spare.lock();
        let n = spare.len().min(max);
        let from = spare.len() - n;
        into.extend(spare.drain(from..));
    }

    /// A thread's own cache of this recycler's buffers (see [`Spares`]).
    pub(super) fn spares(self: &Arc<Self>) -> Spares {
        Spares {
            spare: Vec::with_capacity(REFILL),
            from: Arc::clone(self),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.spare.lock().len()
    }
}

/// One thread's spare buffers, refilled from a shared [`Recycler`] [`REFILL`] at a time (one
/// lock per refill, not per buffer).
#[derive(Debug)]
pub(super) struct Spares {
    spare: Vec<Vec<u8>>,
    from: Arc<Recycler>,
}

impl Spares {
    /// A spare buffer, if this cache or its recycler has one.
    pub(super) fn pop(&mut self) -> Option<Vec<u8>> {
        if self.spare.is_empty() {
            self.from.take(&mut self.spare, REFILL);
        }
        self.spare.pop()
    }

    /// Keeps `buf` for a later [`Spares::pop`].
    pub(super) fn push(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_cap_and_hands_out_what_it_keeps() {
        let r = Recycler::new(3);
        let mut bufs: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 4]).collect();
        r.put_all(&mut bufs);
        assert!(bufs.is_empty());
        assert_eq!(r.len(), 3);
        let mut got = Vec::new();
        r.take(&mut got, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(r.len(), 1);
        r.take(&mut got, 10);
        assert_eq!(got.len(), 3);
        assert_eq!(r.len(), 0);
        r.take(&mut got, 10);
        assert_eq!(got.len(), 3);
    }
}
