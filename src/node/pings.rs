//! `pilotctl ping`: sessions that send a few probes to a trusted peer over its current path,
//! collect the round trips and report when every reply is in or the last one is overdue.

use std::time::{Duration, Instant};

use crate::identity::PublicKey;
use crate::node::traversal::Path;
use crate::node::views::PingReport;

/// Between two probes of a session.
pub const PING_INTERVAL: Duration = Duration::from_millis(250);
/// How long a session waits for the last reply.
pub const PING_WAIT: Duration = Duration::from_secs(1);
/// Most probes one session sends.
pub const PING_MAX_COUNT: u32 = 100;
/// How long a ping to a peer without a path waits for one (punching, then the relay after
/// `Timing::relay_after`) before it answers `connection_failed`.
pub const PATH_WAIT: Duration = Duration::from_secs(6);
/// How often a ping that waits for a path looks again.
const PATH_RECHECK: Duration = Duration::from_millis(20);

/// A ping that waits for its peer's path (the peer had none when the ping came).
#[derive(Debug)]
struct Waiting<R> {
    key: PublicKey,
    count: u32,
    give_up: Instant,
    next_check: Instant,
    reply: R,
}

/// One running session; `R` is whatever carries its answer.
#[derive(Debug)]
struct Session<R> {
    key: PublicKey,
    count: u32,
    sent: Vec<(u64, Instant)>,
    rtts: Vec<Option<Duration>>,
    next_send: Instant,
    path: Path,
    reply: R,
}

impl<R> Session<R> {
    fn deadline(&self) -> Instant {
        if (self.sent.len() as u32) < self.count {
            self.next_send
        } else {
            self.sent
                .last()
                .map_or(self.next_send, |(_, t)| *t + PING_WAIT)
        }
    }

    fn finished(&self, now: Instant) -> bool {
        let all_sent = self.sent.len() as u32 >= self.count;
        let all_back = self.rtts.iter().all(|r| r.is_some());
        all_sent && (all_back || now >= self.deadline())
    }

    fn report(&self) -> PingReport {
        let ms: Vec<f64> = self
            .rtts
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        let n = ms.len();
        let stat = |f: fn(f64, f64) -> f64| ms.iter().copied().reduce(f);
        PingReport {
            peer: self.key,
            address: self.key.addr48(),
            path: self.path.kind().to_string(),
            endpoint: self.path.addr(),
            sent: self.sent.len(),
            received: n,
            rtt_ms: self
                .rtts
                .iter()
                .map(|r| r.map(|d| d.as_secs_f64() * 1e3))
                .collect(),
            min_ms: stat(f64::min),
            max_ms: stat(f64::max),
            avg_ms: (n > 0).then(|| ms.iter().sum::<f64>() / n as f64),
        }
    }
}

/// A probe a session wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingProbe {
    /// To whom.
    pub key: PublicKey,
    /// Along which path.
    pub path: Path,
    /// Its transaction id.
    pub txid: u64,
}

/// The running sessions.
#[derive(Debug)]
pub struct Pings<R> {
    sessions: Vec<Session<R>>,
    waiting: Vec<Waiting<R>>,
}

impl<R> Default for Pings<R> {
    fn default() -> Self {
        Pings {
            sessions: Vec::new(),
            waiting: Vec::new(),
        }
    }
}

impl<R> Pings<R> {
    /// Starts a session of `count` probes (clamped to 1..=[`PING_MAX_COUNT`]) to `key` along
    /// `path`; the first probe is due at once.
    pub fn start(&mut self, now: Instant, key: PublicKey, path: Path, count: u32, reply: R) {
        self.sessions.push(Session {
            key,
            count: count.clamp(1, PING_MAX_COUNT),
            sent: Vec::new(),
            rtts: Vec::new(),
            next_send: now,
            path,
            reply,
        });
    }

    /// Parks a ping to `key`, which has no path yet, for at most [`PATH_WAIT`]: see
    /// [`Pings::start_waiting`].
    pub fn wait_for_path(&mut self, now: Instant, key: PublicKey, count: u32, reply: R) {
        self.waiting.push(Waiting {
            key,
            count,
            give_up: now + PATH_WAIT,
            next_check: now + PATH_RECHECK,
            reply,
        });
    }

    /// Starts the parked pings whose peer now has a path (`path_of`), and returns the replies
    /// of those that waited [`PATH_WAIT`] in vain.
    pub fn start_waiting(&mut self, now: Instant, path_of: impl Fn(&PublicKey) -> Path) -> Vec<R> {
        let mut gave_up = Vec::new();
        for w in std::mem::take(&mut self.waiting) {
            let path = path_of(&w.key);
            if path != Path::None {
                self.start(now, w.key, path, w.count, w.reply);
            } else if now >= w.give_up {
                gave_up.push(w.reply);
            } else {
                self.waiting.push(Waiting {
                    next_check: now + PATH_RECHECK,
                    ..w
                });
            }
        }
        gave_up
    }

    /// When a session or a parked ping needs attention next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.iter().map(|s| s.deadline());
        let waiting = self.waiting.iter().map(|w| w.next_check.min(w.give_up));
        sessions.chain(waiting).min()
    }

    /// A verified probe reply from `key`: true if it answered one of our pings (then it is
    /// for no one else).
    pub fn on_reply(&mut self, now: Instant, key: PublicKey, txid: u64) -> bool {
        for s in self.sessions.iter_mut().filter(|s| s.key == key) {
            if let Some(i) = s.sent.iter().position(|(t, _)| *t == txid) {
                if s.rtts[i].is_none() {
                    s.rtts[i] = Some(now.saturating_duration_since(s.sent[i].1));
                }
                return true;
            }
        }
        false
    }

    /// Advances the sessions: the probes due now (each with an id from `txid`), and the
    /// answers of the sessions that finished.
    pub fn poll(
        &mut self,
        now: Instant,
        mut txid: impl FnMut() -> u64,
    ) -> (Vec<PingProbe>, Vec<(R, PingReport)>) {
        let mut probes = Vec::new();
        for s in &mut self.sessions {
            if (s.sent.len() as u32) < s.count && now >= s.next_send {
                let id = txid();
                s.sent.push((id, now));
                s.rtts.push(None);
                s.next_send = now + PING_INTERVAL;
                probes.push(PingProbe {
                    key: s.key,
                    path: s.path,
                    txid: id,
                });
            }
        }
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.sessions.len() {
            if self.sessions[i].finished(now) {
                let s = self.sessions.remove(i);
                let report = s.report();
                done.push((s.reply, report));
            } else {
                i += 1;
            }
        }
        (probes, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn key() -> PublicKey {
        Identity::from_seed([3; 32]).public_key()
    }

    #[test]
    fn a_session_sends_on_schedule_and_reports_rtts_when_all_replies_are_in() {
        let t0 = Instant::now();
        let path = Path::Direct("198.51.100.2:1".parse().unwrap());
        let mut pings = Pings::default();
        pings.start(t0, key(), path, 2, "answer");
        let mut n = 0;
        let (p, done) = pings.poll(t0, || {
            n += 1;
            n
        });
        assert_eq!(
            p,
            vec![PingProbe {
                key: key(),
                path,
                txid: 1
            }]
        );
        assert!(done.is_empty());
        assert_eq!(pings.poll_timeout(), Some(t0 + PING_INTERVAL));
        assert!(pings.on_reply(t0 + Duration::from_millis(10), key(), 1));
        assert!(
            !pings.on_reply(t0, key(), 99),
            "an unknown txid is not ours"
        );
        let t1 = t0 + PING_INTERVAL;
        let (p, done) = pings.poll(t1, || 2);
        assert_eq!(p.len(), 1);
        assert!(done.is_empty());
        assert!(pings.on_reply(t1 + Duration::from_millis(30), key(), 2));
        let (_, done) = pings.poll(t1 + Duration::from_millis(30), || 3);
        let (r, report) = &done[0];
        assert_eq!(*r, "answer");
        assert_eq!((report.sent, report.received), (2, 2));
        assert_eq!(report.rtt_ms, vec![Some(10.0), Some(30.0)]);
        assert_eq!((report.min_ms, report.max_ms), (Some(10.0), Some(30.0)));
        assert_eq!(report.avg_ms, Some(20.0));
        assert_eq!(pings.poll_timeout(), None);
    }

    #[test]
    fn a_ping_without_a_path_starts_when_the_path_comes_and_gives_up_after_path_wait() {
        let t0 = Instant::now();
        let mut pings: Pings<u8> = Pings::default();
        pings.wait_for_path(t0, key(), 2, 1);
        pings.wait_for_path(t0, key(), 2, 2);
        // No path yet: both keep waiting, and the core is woken soon to look again.
        assert!(pings.start_waiting(t0, |_| Path::None).is_empty());
        assert!(pings.poll_timeout().unwrap() <= t0 + Duration::from_millis(50));
        let (probes, _) = pings.poll(t0, || 7);
        assert!(probes.is_empty(), "nothing is sent without a path");
        // The path comes: both sessions start and send their first probe at once.
        let path = Path::Direct("198.51.100.2:51820".parse().unwrap());
        let t1 = t0 + Duration::from_secs(2);
        assert!(pings.start_waiting(t1, |_| path).is_empty());
        let (probes, _) = pings.poll(t1, || 9);
        assert_eq!(probes.len(), 2);
        assert!(probes.iter().all(|p| p.path == path));
        // Another ping that never gets a path gives up after PATH_WAIT, not before.
        let mut lonely: Pings<u8> = Pings::default();
        lonely.wait_for_path(t0, key(), 1, 3);
        let almost = t0 + PATH_WAIT - Duration::from_millis(1);
        assert!(lonely.start_waiting(almost, |_| Path::None).is_empty());
        assert_eq!(
            lonely.start_waiting(t0 + PATH_WAIT, |_| Path::None),
            vec![3]
        );
        assert_eq!(lonely.poll_timeout(), None);
    }
}
