//! A registry instance over PostgreSQL stays responsive while the database decides: a hostname
//! claim held up by a lock is parked and answered on commit while other nodes' heartbeats are
//! answered at once; and the cluster listener survives the loss of its connection
//! (`pg_terminate_backend`), reconnects, resynchronises and delivers again. Unprivileged, on
//! loopback; each test creates and drops its own database (tests/support/pg.rs).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pilot::clock::unix_ms_now;
use pilot::identity::{Identity, PublicKey};
use pilot::mapping::Hostname;
use pilot::registry::pg::{ClusterEvent, PgStore, LISTENER_APPLICATION};
use pilot::registry::runner::{RegistryConfig, RegistryServer};
use pilot::registry::store::{Store, StoreOp};
use pilot::wire::registry::{Header, HostnameStatus, Request, RequestBody, Response, ResponseBody};
use support::pg::TestDb;
use tokio::net::UdpSocket;

/// A node speaking the registry protocol by hand, one request at a time.
struct RawNode {
    id: Identity,
    socket: UdpSocket,
    registry: SocketAddr,
    next: u64,
}

impl RawNode {
    async fn new(seed: u8, registry: SocketAddr) -> RawNode {
        RawNode {
            id: Identity::from_seed([seed; 32]),
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            registry,
            next: 0,
        }
    }

    async fn send(&mut self, body: RequestBody) {
        self.next += 1;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.next.to_be_bytes());
        nonce[8..].copy_from_slice(&self.id.public_key().as_bytes()[..8]);
        let req = Request {
            header: Header {
                sender: self.id.public_key(),
                nonce,
                timestamp_ms: unix_ms_now(),
            },
            body,
        };
        let bytes = req.encode_signed(&self.id).unwrap();
        self.socket.send_to(&bytes, self.registry).await.unwrap();
    }

    /// The next answer within `within`, or `None`.
    async fn answer(&self, within: Duration) -> Option<ResponseBody> {
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(within, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Response::decode(&buf[..n]).unwrap().body)
    }

    /// Sends a `Register` (answering the address challenge); returns the first answer that is
    /// not a challenge, if one comes within `within`.
    async fn register(&mut self, hostname: Option<&str>, within: Duration) -> Option<ResponseBody> {
        let body = |cookie| RequestBody::Register {
            hostname: hostname.map(|h| Hostname::new(h).unwrap()),
            candidates: vec![],
            cookie,
        };
        self.send(body(None)).await;
        match self.answer(Duration::from_secs(5)).await {
            Some(ResponseBody::Challenge { cookie }) => {
                self.send(body(Some(cookie))).await;
                self.answer(within).await
            }
            other => other,
        }
    }
}

async fn instance(db: &TestDb, name: &str, dir: &std::path::Path) -> SocketAddr {
    let mut cfg = RegistryConfig::new("127.0.0.1:0".parse().unwrap(), dir.join(name));
    cfg.store = Some(db.url());
    cfg.instance = Some(name.into());
    cfg.key_file = Some(dir.join("registry.key"));
    let server = RegistryServer::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// A connection of the test's own to the test database.
async fn sql(db: &TestDb) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_is_answered_while_a_hostname_claim_waits_for_its_commit() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let addr = instance(&db, "one", dir.path()).await;
    let mut b = RawNode::new(2, addr).await;
    let reg = b.register(None, Duration::from_secs(5)).await;
    assert!(
        matches!(reg, Some(ResponseBody::Registered { .. })),
        "{reg:?}"
    );

    // Another session holds the names table: a claim cannot commit until it lets go.
    let locker = sql(&db).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE pilot_names IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut a = RawNode::new(1, addr).await;
    let claim = a.register(Some("alpha"), Duration::from_millis(500)).await;
    assert!(claim.is_none(), "answered before its commit: {claim:?}");

    // The instance still serves: b's heartbeats are answered while the claim is in flight.
    for _ in 0..3 {
        let t = Instant::now();
        b.send(RequestBody::Heartbeat).await;
        let ack = b.answer(Duration::from_secs(2)).await;
        assert!(matches!(ack, Some(ResponseBody::Ack { .. })), "{ack:?}");
        eprintln!("heartbeat answered in {:?} during the claim", t.elapsed());
    }

    // The lock goes; the claim commits and its answer follows.
    locker.batch_execute("COMMIT").await.unwrap();
    let granted = a.answer(Duration::from_secs(5)).await;
    assert!(
        matches!(
            granted,
            Some(ResponseBody::Registered {
                hostname: HostnameStatus::Granted,
                ..
            })
        ),
        "{granted:?}"
    );
    let row = locker
        .query_one("SELECT key FROM pilot_names WHERE name = 'alpha'", &[])
        .await
        .unwrap();
    let key: Vec<u8> = row.get(0);
    assert_eq!(key, a.id.public_key().as_bytes().to_vec());
}

fn key(n: u8) -> PublicKey {
    Identity::from_seed([n; 32]).public_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_reconnects_resynchronises_and_delivers_again() {
    let Some(db) = TestDb::create() else { return };
    let url = db.url();
    let (mut a, mut b, mut rb) = tokio::task::spawn_blocking(move || {
        let (a, _ra) = PgStore::connect(&url, "one").unwrap();
        let (b, rb) = PgStore::connect(&url, "two").unwrap();
        (a, b, rb)
    })
    .await
    .unwrap();
    let admin = sql(&db).await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("{LISTENER_APPLICATION} two")],
        )
        .await
        .unwrap();
    assert_eq!(
        killed.len(),
        1,
        "instance two's listener was found and terminated"
    );

    // A name claimed through one while two's listener is (probably) still down: two learns it
    // either by the resynchronisation or, if it was back already, by notification.
    let set = StoreOp::SetName {
        name: Hostname::new("during-outage").unwrap(),
        key: key(1),
    };
    let s = set.clone();
    a = tokio::task::spawn_blocking(move || {
        a.apply(&[s]).unwrap();
        a
    })
    .await
    .unwrap();
    let mut resynced = false;
    let mut learnt = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(resynced && learnt) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rb.next_event())
            .await
            .expect("a resync and the name within 10 s")
            .expect("the listener keeps running");
        match ev {
            ClusterEvent::Resync { snapshot, .. } => {
                resynced = true;
                learnt |= snapshot
                    .names
                    .iter()
                    .any(|(n, _)| n.as_str() == "during-outage");
            }
            ClusterEvent::Change(c) => learnt |= c.op == set,
        }
    }

    // Delivery across instances works again afterwards.
    let fwd = StoreOp::Forward {
        target: key(2),
        datagram: vec![7; 80],
        endpoint: None,
    };
    let f = fwd.clone();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || a.apply(&[f]).unwrap())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rb.recv())
        .await
        .expect("delivered within 5 s after the reconnection")
        .unwrap();
    assert_eq!(got.op, fwd);
    eprintln!(
        "delivered {:?} after the commit, post-reconnection",
        t.elapsed()
    );
    // Two's store still writes (its pool was never the listener's connection).
    tokio::task::spawn_blocking(move || {
        b.apply(&[StoreOp::RemoveName {
            name: Hostname::new("during-outage").unwrap(),
        }])
    })
    .await
    .unwrap()
    .unwrap();
}
