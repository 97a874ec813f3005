//! The TUN device (`pilot0`): our overlay IPv6 address with the overlay /80 route, MTU 1420 by
//! default, GSO/GRO offload when the kernel offers it. It is one [`Inner`] side of the data
//! plane.
//!
//! The kernel's own chatter on the interface (router and neighbour solicitations, MLD:
//! multicast destinations and link-local sources) is filtered out by the data plane, not
//! forwarded and not counted as an error (see [`crate::wg::core::inner_dst`]).

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tun_rs::{DeviceBuilder, GROTable, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::wg::inner::{Inner, InnerReader, InnerWriter, INNER_OFFSET};

/// Default interface name.
pub const DEFAULT_NAME: &str = "pilot0";
pub use crate::config::{DEFAULT_MTU, MIN_MTU};

const _: () = assert!(VIRTIO_NET_HDR_LEN == INNER_OFFSET);

/// Most segments one offloaded read can split into.
const MAX_GSO_SEGMENTS: usize = 128;

/// How to create the TUN device.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Interface name.
    pub name: String,
    /// MTU (at least [`MIN_MTU`]).
    pub mtu: u16,
    /// Our overlay address.
    pub address: Ipv6Addr,
    /// Prefix length put on the address; 80 makes the kernel route the overlay /80 to us.
    pub prefix_len: u8,
    /// Ask for TCP/UDP segmentation offload (falls back to none if the kernel refuses).
    pub offload: bool,
    /// More addresses of ours on the device, each as a /128 (the resolver's `<prefix>::53`).
    pub extra_addresses: Vec<Ipv6Addr>,
}

impl TunConfig {
    /// Defaults (`pilot0`, MTU 1420, /80, offload on) for `address`.
    pub fn new(address: Ipv6Addr) -> Self {
        TunConfig {
            name: DEFAULT_NAME.to_string(),
            mtu: DEFAULT_MTU,
            address,
            prefix_len: 80,
            offload: true,
            extra_addresses: Vec::new(),
        }
    }
}

/// Why the TUN device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The MTU is below what IPv6 needs.
    #[error("MTU {0} is too small: IPv6 needs at least {MIN_MTU}; set tun.mtu to 1280 or more (default 1420)")]
    MtuTooSmall(u16),
    /// The kernel refused the device.
    #[error("cannot create TUN device {name}: {source} (needs /dev/net/tun and CAP_NET_ADMIN; or use --mode userspace)")]
    Create {
        /// The interface name asked for.
        name: String,
        /// The system's reason.
        source: io::Error,
    },
}

impl From<TunError> for crate::error::PilotError {
    fn from(e: TunError) -> Self {
        use crate::error::{ErrorCode, PilotError};
        match e {
            TunError::MtuTooSmall(_) => {
                PilotError::invalid(e.to_string(), "set tun.mtu to 1280 or more (default 1420)")
            }
            TunError::Create { .. } => PilotError::new(
                ErrorCode::Unauthorized,
                e.to_string(),
                "run as root or with CAP_NET_ADMIN, pick a free tun.name, or use --mode userspace",
            ),
        }
    }
}

/// An open TUN device.
pub struct TunDevice {
    dev: Arc<SyncDevice>,
    name: String,
    mtu: u16,
    offload: bool,
}

impl TunDevice {
    /// Creates and brings up the device with our address and the overlay route.
    pub fn create(config: &TunConfig) -> Result<TunDevice, TunError> {
        if config.mtu < MIN_MTU {
            return Err(TunError::MtuTooSmall(config.mtu));
        }
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&config.name)
                .mtu(config.mtu)
                .ipv6(config.address, config.prefix_len)
                .offload(offload)
                .enable(true)
                .build_sync()
        };
        let err = |source| TunError::Create {
            name: config.name.clone(),
            source,
        };
        let (dev, offload) = match build(config.offload) {
            Ok(d) => (d, config.offload),
            Err(e) if config.offload => {
                tracing::warn!(error = %e, "TUN offload refused; continuing without it");
                (build(false).map_err(err)?, false)
            }
            Err(e) => return Err(err(e)),
        };
        dev.set_nonblocking(true).map_err(err)?;
        let name = dev.name().unwrap_or_else(|_| config.name.clone());
        for a in &config.extra_addresses {
            add_service_address(&name, *a);
        }
        let _ = dev.set_tx_queue_len(1000);
        tracing::info!(%name, mtu = config.mtu, offload, "TUN device up");
        Ok(TunDevice {
            dev: Arc::new(dev),
            name,
            mtu: config.mtu,
            offload,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether GSO/GRO offload is on.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The data plane's view of the device.
    pub fn into_inner(self) -> Inner {
        Inner {
            reader: Box::new(TunReader {
                dev: Arc::clone(&self.dev),
                raw: vec![0u8; VIRTIO_NET_HDR_LEN + 65535],
                offload: self.offload,
            }),
            writer: Box::new(TunWriter {
                dev: self.dev,
                gro: GROTable::default(),
            }),
            mtu: self.mtu,
        }
    }
}

/// Adds `addr`/128 to the device as a deprecated address (preferred lifetime 0): the kernel
/// delivers packets to it but never picks it as a source (RFC 6724 rule 3), which matters
/// because it shares the overlay /80 with our own address and a peer drops packets whose
/// source is not ours. `ip` sets the lifetime (the ioctl cannot); without it the address is
/// left out and logged.
fn add_service_address(dev: &str, addr: Ipv6Addr) {
    let out = std::process::Command::new("ip")
        .args(["-6", "addr", "add", &format!("{addr}/128"), "dev", dev])
        .args(["preferred_lft", "0", "valid_lft", "forever", "nodad"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            tracing::warn!(address = %addr, error = %String::from_utf8_lossy(&o.stderr).trim(), "cannot add an address to the TUN device")
        }
        Err(e) => {
            tracing::warn!(address = %addr, error = %e, "cannot run `ip` to add an address to the TUN device")
        }
    }
}

struct TunReader {
    dev: Arc<SyncDevice>,
    raw: Vec<u8>,
    offload: bool,
}

impl TunReader {
    fn wait(&self, timeout: Duration) -> bool {
        crate::wg::poll_fd(self.dev.as_raw_fd(), libc::POLLIN, timeout)
    }
}

impl InnerReader for TunReader {
    fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        let mut n = 0;
        let mut waited = false;
        while n < bufs.len() {
            match self.dev.recv_multiple(
                &mut self.raw,
                &mut bufs[n..],
                &mut sizes[n..],
                INNER_OFFSET,
            ) {
                Ok(k) => {
                    n += k;
                    // One GSO read may yield up to 128 segments (UDP_MAX_SEGMENTS), and a
                    // read with too few buffers loses the whole super-packet: read again only
                    // while that many are left.
                    if self.offload && bufs.len() - n < MAX_GSO_SEGMENTS {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if n > 0 || waited || !self.wait(timeout) {
                        break;
                    }
                    waited = true;
                }
                Err(e) if n > 0 => {
                    tracing::debug!(error = %e, "TUN read");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn readable_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.dev.as_raw_fd())
    }
}

struct TunWriter {
    dev: Arc<SyncDevice>,
    gro: GROTable,
}

/// The most capacity a buffer handed to tun-rs's GRO may have. tun-rs coalesces TCP segments
/// in place and bounds the merged packet only by the buffer's capacity (`capacity - 2 ×
/// offset`); above 65,535 bytes the IP length field wraps and the kernel drops the packet. With
/// 1,360-byte segments and a short one behind 48 full ones (smoltcp senders), a train of 64 KiB
/// vanished that way, and the sender waited for its 1 s retransmission timeout (the
/// "TUN → userspace stall" of BENCHMARKS.md).
const GRO_MAX_CAPACITY: usize = 2 * INNER_OFFSET + 65535;

/// Gives every buffer with more capacity than [`GRO_MAX_CAPACITY`] an exact-size one (once:
/// the data plane reuses its buffers).
fn bound_gro_capacity(bufs: &mut [Vec<u8>]) {
    for b in bufs.iter_mut() {
        if b.capacity() > GRO_MAX_CAPACITY {
            let mut v = Vec::with_capacity(GRO_MAX_CAPACITY.max(b.len()));
            v.extend_from_slice(b);
            *b = v;
        }
    }
}

impl InnerWriter for TunWriter {
    fn send_batch(&mut self, bufs: &mut [Vec<u8>]) -> io::Result<()> {
        bound_gro_capacity(bufs);
        self.dev
            .send_multiple(&mut self.gro, bufs, INNER_OFFSET)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_handed_to_gro_cannot_hold_a_packet_above_65535_bytes() {
        // As the data plane allocates them: room for a 64 KiB UDP train and then some.
        let mut bufs: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let mut v = Vec::with_capacity(65535 + 2 * INNER_OFFSET + 64);
                v.extend_from_slice(&[i as u8; 1500]);
                v
            })
            .collect();
        bound_gro_capacity(&mut bufs);
        for (i, b) in bufs.iter().enumerate() {
            assert!(
                b.capacity() - 2 * INNER_OFFSET <= 65535,
                "capacity {}",
                b.capacity()
            );
            assert_eq!(b, &vec![i as u8; 1500]);
        }
        // Buffers already within the bound are left alone (no copy per batch).
        let ptr = bufs[0].as_ptr();
        bound_gro_capacity(&mut bufs);
        assert_eq!(bufs[0].as_ptr(), ptr);
    }
}
