//! The packet boundary: the data plane's side of the stack's channels, and the same port as
//! the data plane's inner side (`wg::Inner`).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Counters, Packet};

/// The data plane's side of the packet boundary (see the module docs).
#[derive(Debug)]
pub struct PacketPort {
    /// Packets the stack sends: encrypt each to the peer owning its destination.
    pub from_stack: mpsc::Receiver<Packet>,
    /// Packets for the stack: decrypted, source already checked.
    pub to_stack: mpsc::Sender<Packet>,
    /// The stack's counters: packets dropped on the way in are counted there.
    pub(super) counters: Arc<Counters>,
}

impl PacketPort {
    /// This port as the data plane's inner side ([`crate::wg::Inner`]), for
    /// `DataPlane::start`: its threads read what the stack sends (`from_stack`, waiting on
    /// `rt`'s timer) and write decrypted packets to the stack (`to_stack`; a full queue drops,
    /// as a full NIC ring would).
    pub fn into_inner(self, mtu: u16, rt: tokio::runtime::Handle) -> crate::wg::Inner {
        crate::wg::Inner {
            reader: Box::new(StackReader {
                rx: self.from_stack,
                rt,
            }),
            writer: Box::new(StackWriter {
                tx: self.to_stack,
                counters: self.counters,
            }),
            mtu,
        }
    }
}

struct StackReader {
    rx: mpsc::Receiver<Packet>,
    rt: tokio::runtime::Handle,
}

impl crate::wg::InnerReader for StackReader {
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        use crate::wg::INNER_OFFSET;
        if bufs.is_empty() {
            return Ok(0);
        }
        let first = match self.rx.try_recv() {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Empty) => {
                let rx = &mut self.rx;
                self.rt
                    .block_on(async { tokio::time::timeout(timeout, rx.recv()).await })
                    .ok()
                    .flatten()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                std::thread::sleep(timeout);
                None
            }
        };
        let mut n = 0;
        let mut next = first;
        while let Some(p) = next {
            let room = bufs[n].len().saturating_sub(INNER_OFFSET);
            let len = p.len().min(room);
            bufs[n][INNER_OFFSET..INNER_OFFSET + len].copy_from_slice(&p[..len]);
            sizes[n] = len;
            n += 1;
            next = if n < bufs.len() {
                self.rx.try_recv().ok()
            } else {
                None
            };
        }
        Ok(n)
    }
}

struct StackWriter {
    tx: mpsc::Sender<Packet>,
    counters: Arc<Counters>,
}

impl crate::wg::InnerWriter for StackWriter {
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        for b in bufs.iter() {
            if let Some(p) = b.get(crate::wg::INNER_OFFSET..) {
                if self.tx.try_send(p.to_vec()).is_err() {
                    self.counters
                        .packets_in_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}
