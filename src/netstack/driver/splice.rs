//! Handing a flow from its pipe to a local socket ([`NetstackStream::splice`]).
//!
//! [`NetstackStream::splice`]: crate::netstack::NetstackStream::splice

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::sync::oneshot;

use super::{endpoint_v6, Driver};
use crate::netstack::app::{AppEnd, Spliced};
use crate::netstack::stream::{SpliceOutcome, SpliceRequest};

impl Driver {
    /// Replaces the pipe of the request's flow with its socket, keeping the bytes in the pipe.
    pub(super) fn splice(&mut self, r: SpliceRequest) {
        let SpliceRequest {
            stream,
            tcp,
            initial,
            reply,
        } = r;
        let key = (Some(stream.local), Some(stream.peer));
        let handle = self.flows.iter().find_map(|(&h, f)| {
            let s = self.sockets.get::<tcp::Socket>(h);
            let open = matches!(f.app, AppEnd::Pipe(_)) && !f.app_eof && !f.net_eof && !f.app_gone;
            let ends = (
                endpoint_v6(s.local_endpoint()),
                endpoint_v6(s.remote_endpoint()),
            );
            (open && ends == key).then_some(h)
        });
        let Some(flow) = handle.and_then(|h| self.flows.get_mut(&h)) else {
            let _ = reply.send(SpliceOutcome::Refused(stream, tcp, initial));
            return;
        };
        let (done, finished) = oneshot::channel();
        let AppEnd::Pipe(ours) = &mut flow.app else {
            return;
        };
        // What the application wrote and we have not taken yet goes first, then `initial`.
        let mut to_net = drain(ours);
        to_net.extend_from_slice(&initial);
        let mut theirs = stream.io;
        // What we wrote and the application has not read: the socket gets it first.
        let to_app = drain(&mut theirs);
        flow.app = AppEnd::Spliced(Box::new(Spliced {
            tcp,
            to_net,
            to_net_at: 0,
            to_app,
            to_app_at: 0,
            _done: done,
        }));
        let _ = reply.send(SpliceOutcome::Spliced(finished));
    }
}

/// Everything readable from `pipe` now, without waiting.
fn drain(pipe: &mut DuplexStream) -> Vec<u8> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut rb = ReadBuf::new(&mut chunk);
        match Pin::new(&mut *pipe).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if !rb.filled().is_empty() => out.extend_from_slice(rb.filled()),
            _ => return out,
        }
    }
}
