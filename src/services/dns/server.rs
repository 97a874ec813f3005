//! The DNS listener: one UDP socket, one task, answers computed per query from the live
//! snapshot (nothing is cached, so a revoked peer or a changed key shows at the next query).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::resolve::{answer, Dropped, Names, Outcome, Zone};

/// Largest query read; anything longer is cut and then fails to parse (dropped, counted).
const MAX_QUERY: usize = 4096;

/// The DNS counters (all listeners together).
#[derive(Debug, Default)]
pub struct DnsCounters {
    answered: AtomicU64,
    nodata: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    malformed: AtomicU64,
    not_local: AtomicU64,
}

/// A snapshot of [`DnsCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Answers with an address.
    pub answered: u64,
    /// NOERROR answers with no record (A queries, other types).
    pub nodata: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// REFUSED answers (names outside `.pilot`).
    pub refused: u64,
    /// FORMERR and NOTIMP answers.
    pub errors: u64,
    /// Datagrams dropped: not a DNS query.
    pub malformed: u64,
    /// Datagrams dropped: from a source that is not this host (a peer through the tunnel).
    pub not_local: u64,
}

impl DnsCounters {
    /// A snapshot.
    pub fn stats(&self) -> DnsStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStats {
            answered: l(&self.answered),
            nodata: l(&self.nodata),
            nxdomain: l(&self.nxdomain),
            refused: l(&self.refused),
            errors: l(&self.errors),
            malformed: l(&self.malformed),
            not_local: l(&self.not_local),
        }
    }

    fn count(&self, r: &Result<Outcome, Dropped>) {
        let c = match r {
            Ok(Outcome::Answered) => &self.answered,
            Ok(Outcome::NoData) => &self.nodata,
            Ok(Outcome::NxDomain) => &self.nxdomain,
            Ok(Outcome::Refused) => &self.refused,
            Ok(Outcome::Error) => &self.errors,
            Err(_) => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which sources may ask: this host only (loopback, or one of our own overlay addresses).
/// A trusted peer's packet to the listener arrives through the tunnel with the peer's address
/// as its source and is dropped, so peers cannot probe whom we trust.
pub type LocalSource = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Serves `socket` until the task is aborted.
pub fn serve(
    socket: UdpSocket,
    names: Arc<dyn Names + Send + Sync>,
    zone: Zone,
    local: LocalSource,
    counters: Arc<DnsCounters>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_QUERY];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: receive failed");
                    continue;
                }
            };
            if !is_local(&from, &local) {
                counters.not_local.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let r = answer(&buf[..n], names.as_ref(), zone);
            counters.count(&r.as_ref().map(|r| r.outcome).map_err(|d| *d));
            if let Ok(reply) = r {
                if let Err(e) = socket.send_to(&reply.bytes, from).await {
                    tracing::debug!(error = %e, %from, "dns: send failed");
                }
            }
        }
    })
}

fn is_local(from: &SocketAddr, local: &LocalSource) -> bool {
    let ip = match from.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    ip.is_loopback() || local(ip)
}
