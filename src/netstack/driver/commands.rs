//! The driver's commands from handles: connect, listen, stop listening, describe.

use std::net::SocketAddrV6;

use smoltcp::wire::{IpAddress, IpListenEndpoint};
use tokio::sync::{mpsc, oneshot};

use super::{Connecting, Driver, PortListener};
use crate::netstack::{Command, NetstackError, NetstackStream};

impl Driver {
    pub(super) fn command(&mut self, c: Command) {
        match c {
            Command::Connect { dst, reply } => {
                let r = self.start_connect(dst, reply);
                if let Err((e, reply)) = r {
                    let _ = reply.send(Err(e));
                }
            }
            Command::Listen {
                port,
                id,
                accept,
                reply,
            } => {
                let _ = reply.send(self.start_listen(port, id, accept));
            }
            Command::BindUdp(b) => self.bind_udp(b),
            Command::Splice(r) => self.splice(r),
            Command::Describe { reply } => {
                let _ = reply.send(self.describe());
            }
            Command::Unlisten { port, id } => {
                if self.listeners.get(&port).is_some_and(|l| l.id == id) {
                    self.stop_listen(port);
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn start_connect(
        &mut self,
        dst: SocketAddrV6,
        reply: oneshot::Sender<Result<NetstackStream, NetstackError>>,
    ) -> Result<
        (),
        (
            NetstackError,
            oneshot::Sender<Result<NetstackStream, NetstackError>>,
        ),
    > {
        if dst.port() == 0 {
            return Err((NetstackError::PortZero(*dst.ip()), reply));
        }
        if *dst.ip() == self.cfg.address {
            return Err((NetstackError::OwnAddress(dst), reply));
        }
        if !self.cfg.on_link(*dst.ip()) {
            return Err((
                NetstackError::NotInOverlay(dst, self.cfg.address, self.cfg.prefix_len),
                reply,
            ));
        }
        if self.socket_count() >= self.cfg.max_flows {
            return Err((NetstackError::TooManyFlows(self.cfg.max_flows), reply));
        }
        if !self.admit() {
            return Err((NetstackError::MemoryBound(self.cfg.max_memory), reply));
        }
        let Some(local_port) = self.pick_port() else {
            return Err((NetstackError::TooManyFlows(self.cfg.max_flows), reply));
        };
        let mut s = self.new_socket();
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.cfg.address)),
            port: local_port,
        };
        if s.connect(self.iface.context(), dst, local).is_err() {
            self.used_ports.remove(&local_port);
            return Err((NetstackError::PortZero(*dst.ip()), reply));
        }
        let h = self.sockets.add(s);
        self.connecting.insert(
            h,
            Connecting {
                dst,
                local_port,
                deadline: tokio::time::Instant::now() + self.cfg.connect_timeout,
                reply,
            },
        );
        Ok(())
    }

    pub(super) fn start_listen(
        &mut self,
        port: u16,
        id: u64,
        accept: mpsc::Sender<NetstackStream>,
    ) -> Result<(), NetstackError> {
        if port == 0 {
            return Err(NetstackError::Config("cannot listen on port 0".into()));
        }
        if let Some(l) = self.listeners.get(&port) {
            if !l.accept.is_closed() {
                return Err(NetstackError::PortInUse(port));
            }
            self.stop_listen(port);
        }
        if self.socket_count() + self.cfg.backlog > self.cfg.max_flows {
            return Err(NetstackError::TooManyFlows(self.cfg.max_flows));
        }
        self.listeners.insert(
            port,
            PortListener {
                id,
                pool: Vec::new(),
                accept,
            },
        );
        self.refill_listeners();
        Ok(())
    }

    pub(super) fn stop_listen(&mut self, port: u16) {
        if let Some(l) = self.listeners.remove(&port) {
            for h in l.pool {
                self.sockets.remove(h);
            }
        }
    }
}
