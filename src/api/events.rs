//! `GET /v1/events`: the node's live events as server-sent events.
//!
//! Each client has its own bounded queue (a broadcast receiver): a client that reads too
//! slowly misses events and is told how many with a `lagged` event; the daemon never buffers
//! without bound for it. The stream opens with a comment line so a client sees it is live.

use std::time::Duration;

use axum::response::sse::Event;
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::api::types::{
    ApiEvent, FileReceived, InboxEntry, MessageReceived, NodeEvent, PubsubReceived, ReceivedFile,
    StreamEvent, TaskChanged,
};

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One client's receivers of the node's events.
pub struct Subscription {
    /// Trust, peers and paths, from the control plane.
    pub node: broadcast::Receiver<NodeEvent>,
    /// Messages stored in the inbox, from the message service (if it runs).
    pub messages: Option<broadcast::Receiver<InboxEntry>>,
    /// Files stored in `received/`, from the file service (if it runs).
    pub files: Option<broadcast::Receiver<ReceivedFile>>,
    /// Pub/sub events our subscriptions receive (if the service runs).
    pub pubsub: Option<broadcast::Receiver<crate::services::pubsub::Received>>,
    /// Task state changes (if the task service runs).
    pub tasks: Option<broadcast::Receiver<crate::services::tasks::TaskView>>,
}

/// The next item of an optional channel (pending forever without one).
async fn next_of<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    rx: &mut Option<broadcast::Receiver<InboxEntry>>,
) -> Result<InboxEntry, RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

impl Subscription {
    /// The next event for this client: `None` when the node's channel closed.
    pub async fn next(&mut self) -> Option<ApiEvent> {
        loop {
            let got = tokio::select! {
                n = self.node.recv() => match n {
                    Ok(e) => Ok(ApiEvent::Node(e)),
                    Err(RecvError::Lagged(missed)) => Err(Some(missed)),
                    Err(RecvError::Closed) => return None,
                },
                m = next_message(&mut self.messages) => match m {
                    Ok(message) => Ok(ApiEvent::Api(StreamEvent::MessageReceived(MessageReceived { message }))),
                    Err(RecvError::Lagged(missed)) => Err(Some(missed)),
                    Err(RecvError::Closed) => Err(None),
                },
                f = next_of(&mut self.files) => match f {
                    Ok(file) => Ok(ApiEvent::Api(StreamEvent::FileReceived(FileReceived { file }))),
                    Err(RecvError::Lagged(missed)) => Err(Some(missed)),
                    Err(RecvError::Closed) => {
                        self.files = None;
                        continue;
                    }
                },
                p = next_of(&mut self.pubsub) => match p {
                    Ok(r) => Ok(ApiEvent::Api(StreamEvent::PubsubEvent(PubsubReceived {
                        broker: r.broker,
                        event: (*r.event).clone(),
                    }))),
                    Err(RecvError::Lagged(missed)) => Err(Some(missed)),
                    Err(RecvError::Closed) => {
                        self.pubsub = None;
                        continue;
                    }
                },
                t = next_of(&mut self.tasks) => match t {
                    Ok(task) => Ok(ApiEvent::Api(StreamEvent::TaskChanged(TaskChanged { task: Box::new(task) }))),
                    Err(RecvError::Lagged(missed)) => Err(Some(missed)),
                    Err(RecvError::Closed) => {
                        self.tasks = None;
                        continue;
                    }
                },
            };
            match got {
                Ok(e) => return Some(e),
                Err(Some(missed)) => return Some(ApiEvent::Api(StreamEvent::Lagged { missed })),
                Err(None) => self.messages = None,
            }
        }
    }

    /// The events as a stream.
    pub fn into_stream(self) -> impl Stream<Item = ApiEvent> + Send {
        stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) })
    }
}

/// One event in SSE form: `event: TYPE` and `data: JSON`.
pub fn sse_event(e: &ApiEvent) -> Event {
    Event::default()
        .event(e.kind())
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unencodable event"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_client_is_told_how_many_events_it_missed() {
        let (tx, rx) = broadcast::channel(2);
        let (mtx, mrx) = broadcast::channel::<InboxEntry>(2);
        let mut sub = Subscription {
            node: rx,
            messages: Some(mrx),
            files: None,
            pubsub: None,
            tasks: None,
        };
        let key: crate::identity::PublicKey = crate::identity::Identity::generate().public_key();
        for _ in 0..5 {
            tx.send(NodeEvent::PeerTrusted { peer: key }).unwrap();
        }
        assert_eq!(
            sub.next().await,
            Some(ApiEvent::Api(StreamEvent::Lagged { missed: 3 }))
        );
        assert_eq!(
            sub.next().await,
            Some(ApiEvent::Node(NodeEvent::PeerTrusted { peer: key }))
        );
        assert_eq!(sub.next().await.map(|e| e.kind()), Some("peer_trusted"));
        // The message service going away does not end the stream; the node's channel does.
        drop(mtx);
        drop(tx);
        assert_eq!(sub.next().await, None);
    }
}
