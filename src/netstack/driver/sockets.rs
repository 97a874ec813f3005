//! Servicing sockets: listener pools, connections in progress, handshakes, and the bytes of
//! established flows.

use std::net::SocketAddrV6;
use std::pin::Pin;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{endpoint_v6, Driver, Flow, ORPHAN_TIMEOUT};
use crate::netstack::NetstackError;
use std::sync::atomic::Ordering;

impl Driver {
    pub(super) fn refill_listeners(&mut self) {
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            let mut taken = Vec::new();
            if let Some(l) = self.listeners.get_mut(&port) {
                l.pool.retain(|&h| {
                    let s = self.sockets.get::<tcp::Socket>(h);
                    if s.is_listening() {
                        true
                    } else {
                        taken.push(h);
                        false
                    }
                });
            }
            let deadline = tokio::time::Instant::now() + self.cfg.handshake_timeout;
            for h in taken {
                if self.admit() {
                    self.handshaking.insert(h, (port, deadline));
                } else {
                    // Over the memory bound: refuse the SYN with a reset.
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    self.doomed.push(h);
                }
            }
            let want = self.cfg.backlog;
            while self
                .listeners
                .get(&port)
                .is_some_and(|l| l.pool.len() < want)
                && self.socket_count() < self.cfg.max_flows
            {
                let mut s = self.new_socket();
                let ep = IpListenEndpoint {
                    addr: Some(IpAddress::Ipv6(self.cfg.address)),
                    port,
                };
                if s.listen(ep).is_err() {
                    break;
                }
                let h = self.sockets.add(s);
                if let Some(l) = self.listeners.get_mut(&port) {
                    l.pool.push(h);
                }
            }
        }
    }

    // --- sockets ------------------------------------------------------------------------------

    pub(super) fn service(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        progress |= self.service_connecting(cx);
        progress |= self.service_handshaking();
        progress |= self.service_flows(cx);
        progress |= self.service_udp(cx);
        if self
            .listeners
            .values()
            .any(|l| l.pool.len() < self.cfg.backlog)
        {
            // A pool left short by the flow limit fills up again as flows end.
            self.refill_listeners();
        }
        let closed: Vec<u16> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.accept.is_closed())
            .map(|(p, _)| *p)
            .collect();
        for p in closed {
            self.stop_listen(p);
        }
        progress
    }

    pub(super) fn service_connecting(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let now = tokio::time::Instant::now();
        let handles: Vec<SocketHandle> = self.connecting.keys().copied().collect();
        for h in handles {
            let state = self.sockets.get::<tcp::Socket>(h).state();
            let c = self.connecting.get_mut(&h).expect("handle from the map");
            let caller_gone = c.reply.poll_closed(cx).is_ready();
            let outcome = match state {
                tcp::State::SynSent if caller_gone || now >= c.deadline => Some(Err(())),
                tcp::State::SynSent => None,
                tcp::State::Closed => Some(Err(())),
                _ => Some(Ok(())),
            };
            let Some(outcome) = outcome else { continue };
            progress = true;
            let c = self.connecting.remove(&h).expect("handle from the map");
            let local = SocketAddrV6::new(self.cfg.address, c.local_port, 0, 0);
            match outcome {
                Ok(()) => {
                    let (ours, theirs) = self.stream_pair(local, c.dst);
                    if c.reply.send(Ok(theirs)).is_ok() {
                        self.flows
                            .insert(h, Flow::new(ours, Some(c.local_port), now));
                    } else {
                        self.sockets.get_mut::<tcp::Socket>(h).abort();
                        self.doomed.push(h);
                        self.used_ports.remove(&c.local_port);
                    }
                }
                Err(()) => {
                    let err = if state == tcp::State::Closed && now < c.deadline {
                        NetstackError::Refused(c.dst)
                    } else {
                        NetstackError::TimedOut(c.dst, self.cfg.connect_timeout)
                    };
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    self.doomed.push(h);
                    self.used_ports.remove(&c.local_port);
                    let _ = c.reply.send(Err(err));
                }
            }
        }
        progress
    }

    pub(super) fn service_handshaking(&mut self) -> bool {
        let mut progress = false;
        let now = tokio::time::Instant::now();
        let handles: Vec<(SocketHandle, u16, tokio::time::Instant)> = self
            .handshaking
            .iter()
            .map(|(h, (p, d))| (*h, *p, *d))
            .collect();
        for (h, port, deadline) in handles {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            match s.state() {
                tcp::State::SynReceived if now >= deadline => {
                    // Half-open for too long: reset it and free the socket.
                    s.abort();
                    self.handshaking.remove(&h);
                    self.doomed.push(h);
                    self.counters
                        .flows_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    progress = true;
                    continue;
                }
                tcp::State::SynReceived => continue,
                // Back in LISTEN (a reset during the handshake), CLOSED or TIME-WAIT: the
                // pool has its own listeners, so this socket goes.
                tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait => {
                    self.handshaking.remove(&h);
                    self.doomed.push(h);
                    progress = true;
                    continue;
                }
                _ => {}
            }
            progress = true;
            self.handshaking.remove(&h);
            let local = endpoint_v6(s.local_endpoint());
            let peer = endpoint_v6(s.remote_endpoint());
            let (Some(local), Some(peer)) = (local, peer) else {
                s.abort();
                self.doomed.push(h);
                continue;
            };
            let _ = s;
            let (ours, theirs) = self.stream_pair(local, peer);
            let delivered = self
                .listeners
                .get(&port)
                .is_some_and(|l| l.accept.try_send(theirs).is_ok());
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if delivered {
                self.flows.insert(h, Flow::new(ours, None, now));
            } else {
                // Nobody accepts (listener gone or its queue full): refuse with a reset.
                s.abort();
                self.doomed.push(h);
            }
        }
        progress
    }

    pub(super) fn service_flows(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut finished = Vec::new();
        let now = tokio::time::Instant::now();
        let (idle, half_closed) = (self.cfg.idle_timeout, self.cfg.half_closed_timeout);
        for (&h, f) in self.flows.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            let moved = net_to_app(s, f, cx) | app_to_net(s, f, cx);
            if moved {
                f.last_active = now;
                progress = true;
            }
            let state = s.state();
            f.half_closed = !matches!(state, tcp::State::Established);
            let limit = if f.half_closed { half_closed } else { idle };
            if now >= f.last_active + limit && state != tcp::State::TimeWait {
                // Idle (or half-closed) for too long: reset it; the application reads the end
                // of the stream.
                s.abort();
                self.counters
                    .flows_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                finished.push(h);
                continue;
            }
            let done_rx = f.net_eof || f.app_gone || !s.can_recv();
            match state {
                tcp::State::Closed | tcp::State::TimeWait if done_rx => {
                    if !f.net_eof {
                        let _ = Pin::new(&mut f.app).poll_shutdown(cx);
                    }
                    finished.push(h);
                }
                _ => {}
            }
        }
        for h in finished {
            progress = true;
            if let Some(f) = self.flows.remove(&h) {
                if let Some(p) = f.local_port {
                    self.used_ports.remove(&p);
                }
            }
            self.doomed.push(h);
        }
        progress
    }
}

/// Moves received bytes from the socket to the application; passes the peer's FIN on.
fn net_to_app(s: &mut tcp::Socket<'static>, f: &mut Flow, cx: &mut Context<'_>) -> bool {
    let mut progress = false;
    if f.app_gone {
        while let Ok(n) = s.recv(|b| (b.len(), b.len())) {
            if n == 0 {
                break;
            }
        }
        return false;
    }
    if f.net_eof {
        return false;
    }
    // A spliced socket first gets what the pipe held when it took over.
    match f.app.poll_flush_held(cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Pending => return false,
        Poll::Ready(Err(_)) => {
            app_dropped(s, f);
            return true;
        }
    }
    // Two rounds: the ring buffer may hand out its data in two pieces.
    for _ in 0..2 {
        if !s.can_recv() {
            break;
        }
        let r = s.recv(|b| match Pin::new(&mut f.app).poll_write(cx, b) {
            Poll::Ready(Ok(n)) => (n, Poll::Ready(Ok(n))),
            Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
            Poll::Pending => (0, Poll::Pending),
        });
        match r {
            Ok(Poll::Ready(Ok(n))) if n > 0 => progress = true,
            Ok(Poll::Ready(Err(_))) => {
                app_dropped(s, f);
                return true;
            }
            _ => break,
        }
    }
    if !s.may_recv() && !s.can_recv() {
        // The peer sent FIN (or the connection is gone): end of stream for the application.
        let _ = Pin::new(&mut f.app).poll_shutdown(cx);
        f.net_eof = true;
        progress = true;
    }
    progress
}

/// The application dropped its stream (or its spliced socket failed): discard what arrives,
/// send our FIN, and give the peer [`ORPHAN_TIMEOUT`] to finish.
fn app_dropped(s: &mut tcp::Socket<'static>, f: &mut Flow) {
    f.app_gone = true;
    f.app_eof = true;
    s.close();
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(
        ORPHAN_TIMEOUT.as_secs(),
    )));
}

/// Moves the application's bytes into the socket; turns its shutdown into our FIN.
fn app_to_net(s: &mut tcp::Socket<'static>, f: &mut Flow, cx: &mut Context<'_>) -> bool {
    let mut progress = false;
    if f.app_eof {
        return false;
    }
    for _ in 0..2 {
        if !s.may_send() || s.send_queue() >= s.send_capacity() {
            break;
        }
        let r = s.send(|b| {
            let mut rb = ReadBuf::new(b);
            match Pin::new(&mut f.app).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    (n, Poll::Ready(Ok(n)))
                }
                Poll::Ready(Err(e)) => (0, Poll::Ready(Err(e))),
                Poll::Pending => (0, Poll::Pending),
            }
        });
        match r {
            Ok(Poll::Ready(Ok(0))) | Ok(Poll::Ready(Err(_))) => {
                // End of the application's stream: send FIN after the queued data.
                s.close();
                f.app_eof = true;
                return true;
            }
            Ok(Poll::Ready(Ok(_))) => progress = true,
            _ => break,
        }
    }
    progress
}
