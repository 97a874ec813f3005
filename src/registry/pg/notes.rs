//! The payload of the cluster's `NOTIFY pilot_registry`: the changes one instance committed,
//! so the others update their caches and deliver what is for nodes attached to them.
//!
//! A payload is `INSTANCE \t SENT_MS \t OP,OP,...`, each OP the base64 of its binary form
//! below; payloads stay under [`MAX_PAYLOAD`] characters (PostgreSQL refuses 8000 and more).
//! Only instances with write access to the database can notify; a payload that does not parse
//! is dropped and logged, never a panic.
//!
//! Binary form of an op (keys 32 bytes, times u64 big-endian):
//! `1 len name key` SetName · `2 len name` RemoveName · `3 target from kind received original`
//! PutHeld · `4 key ms` Seen · `5 key` Forget · `6 target from kind` RemoveHeld ·
//! `7 key ms len addr` Presence · `8 target 0|1 [nonce asker] datagram` Forward.

use base64::Engine;

use crate::identity::PublicKey;
use crate::mapping::Hostname;
use crate::registry::store::{ForwardedEndpoint, HeldKind, HeldMessage, StoreOp};

/// Longest payload sent (characters).
pub const MAX_PAYLOAD: usize = 7000;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One notification, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The instance that committed the changes.
    pub instance: String,
    /// When it sent them (its unix ms).
    pub sent_ms: u64,
    /// The changes, in commit order.
    pub ops: Vec<StoreOp>,
}

/// The payloads that carry `ops` from `instance`, each under [`MAX_PAYLOAD`].
pub fn payloads(instance: &str, sent_ms: u64, ops: &[StoreOp]) -> Vec<String> {
    let head = format!("{instance}\t{sent_ms}\t");
    let mut out = Vec::new();
    let mut cur = head.clone();
    for op in ops {
        let enc = B64.encode(encode(op));
        if cur.len() > head.len() && cur.len() + 1 + enc.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        if cur.len() > head.len() {
            cur.push(',');
        }
        cur.push_str(&enc);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

/// Parses a payload.
pub fn parse(payload: &str) -> Result<Note, String> {
    let mut parts = payload.splitn(3, '\t');
    let instance = parts.next().ok_or("no instance")?.to_string();
    let sent_ms = parts.next().and_then(|t| t.parse().ok()).ok_or("no time")?;
    let ops = parts
        .next()
        .ok_or("no changes")?
        .split(',')
        .map(|b| {
            let bytes = B64.decode(b).map_err(|e| format!("base64: {e}"))?;
            decode(&bytes)
        })
        .collect::<Result<_, _>>()?;
    Ok(Note {
        instance,
        sent_ms,
        ops,
    })
}

fn encode(op: &StoreOp) -> Vec<u8> {
    let mut b = Vec::with_capacity(80);
    match op {
        StoreOp::SetName { name, key } => {
            b.push(1);
            push_str(&mut b, name.as_str());
            b.extend_from_slice(key.as_bytes());
        }
        StoreOp::RemoveName { name } => {
            b.push(2);
            push_str(&mut b, name.as_str());
        }
        StoreOp::PutHeld(m) => {
            b.push(3);
            b.extend_from_slice(m.target.as_bytes());
            b.extend_from_slice(m.from.as_bytes());
            b.push(m.kind.to_byte());
            b.extend_from_slice(&m.received_ms.to_be_bytes());
            b.extend_from_slice(&m.original);
        }
        StoreOp::Seen { key, unix_ms } => {
            b.push(4);
            b.extend_from_slice(key.as_bytes());
            b.extend_from_slice(&unix_ms.to_be_bytes());
        }
        StoreOp::Forget { key } => {
            b.push(5);
            b.extend_from_slice(key.as_bytes());
        }
        StoreOp::RemoveHeld { target, from, kind } => {
            b.push(6);
            b.extend_from_slice(target.as_bytes());
            b.extend_from_slice(from.as_bytes());
            b.push(kind.to_byte());
        }
        StoreOp::Presence { key, addr, unix_ms } => {
            b.push(7);
            b.extend_from_slice(key.as_bytes());
            b.extend_from_slice(&unix_ms.to_be_bytes());
            push_str(&mut b, &addr.to_string());
        }
        StoreOp::Forward {
            target,
            datagram,
            endpoint,
        } => {
            b.push(8);
            b.extend_from_slice(target.as_bytes());
            match endpoint {
                None => b.push(0),
                Some(ep) => {
                    b.push(1);
                    b.extend_from_slice(&ep.nonce);
                    b.extend_from_slice(ep.asker.as_bytes());
                }
            }
            b.extend_from_slice(datagram);
        }
    }
    b
}

fn push_str(b: &mut Vec<u8>, s: &str) {
    b.push(s.len().min(255) as u8);
    b.extend_from_slice(&s.as_bytes()[..s.len().min(255)]);
}

/// A cursor over an op's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated change".into());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn key(&mut self) -> Result<PublicKey, String> {
        let b: [u8; 32] = self.take(32)?.try_into().expect("32");
        PublicKey::from_bytes(b).map_err(|e| e.to_string())
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.byte()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| e.to_string())
    }
    fn name(&mut self) -> Result<Hostname, String> {
        Hostname::new(self.str()?).map_err(|e| e.to_string())
    }
    fn kind(&mut self) -> Result<HeldKind, String> {
        HeldKind::from_byte(self.byte()?).ok_or_else(|| "bad held kind".to_string())
    }
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0).to_vec()
    }
}

fn decode(bytes: &[u8]) -> Result<StoreOp, String> {
    let mut r = Reader(bytes);
    let op = match r.byte()? {
        1 => StoreOp::SetName {
            name: r.name()?,
            key: r.key()?,
        },
        2 => StoreOp::RemoveName { name: r.name()? },
        3 => StoreOp::PutHeld(HeldMessage {
            target: r.key()?,
            from: r.key()?,
            kind: r.kind()?,
            received_ms: r.u64()?,
            original: r.rest(),
        }),
        4 => StoreOp::Seen {
            key: r.key()?,
            unix_ms: r.u64()?,
        },
        5 => StoreOp::Forget { key: r.key()? },
        6 => StoreOp::RemoveHeld {
            target: r.key()?,
            from: r.key()?,
            kind: r.kind()?,
        },
        7 => StoreOp::Presence {
            key: r.key()?,
            unix_ms: r.u64()?,
            addr: r.str()?.parse().map_err(|_| "bad address".to_string())?,
        },
        8 => decode_forward(&mut r)?,
        t => return Err(format!("unknown change type {t}")),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(op)
}

fn decode_forward(r: &mut Reader<'_>) -> Result<StoreOp, String> {
    let target = r.key()?;
    let endpoint = match r.byte()? {
        0 => None,
        1 => Some(ForwardedEndpoint {
            nonce: r.take(16)?.try_into().expect("16"),
            asker: r.key()?,
        }),
        _ => return Err("bad endpoint flag".into()),
    };
    Ok(StoreOp::Forward {
        target,
        datagram: r.rest(),
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn key(n: u8) -> PublicKey {
        Identity::from_seed([n; 32]).public_key()
    }

    fn every_op() -> Vec<StoreOp> {
        vec![
            StoreOp::SetName {
                name: Hostname::new("worker-node").unwrap(),
                key: key(1),
            },
            StoreOp::RemoveName {
                name: Hostname::new("old").unwrap(),
            },
            StoreOp::PutHeld(HeldMessage {
                target: key(1),
                from: key(2),
                kind: HeldKind::TrustResponse,
                received_ms: 42,
                original: vec![0x50; 900],
            }),
            StoreOp::Seen {
                key: key(3),
                unix_ms: 7,
            },
            StoreOp::Forget { key: key(4) },
            StoreOp::RemoveHeld {
                target: key(1),
                from: key(2),
                kind: HeldKind::TrustRequest,
            },
            StoreOp::Presence {
                key: key(5),
                addr: "[2001:db8::1]:51820".parse().unwrap(),
                unix_ms: 9,
            },
            StoreOp::Forward {
                target: key(6),
                datagram: vec![1, 2, 3],
                endpoint: Some(ForwardedEndpoint {
                    nonce: [7; 16],
                    asker: key(7),
                }),
            },
            StoreOp::Forward {
                target: key(6),
                datagram: vec![],
                endpoint: None,
            },
        ]
    }

    #[test]
    fn every_change_survives_a_payload_and_payloads_stay_under_the_limit() {
        let mut ops = every_op();
        for _ in 0..20 {
            ops.extend(every_op());
        }
        let ps = payloads("reg-1", 123, &ops);
        assert!(ps.len() > 1, "{} payloads", ps.len());
        let mut back = Vec::new();
        for p in &ps {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let n = parse(p).unwrap();
            assert_eq!((n.instance.as_str(), n.sent_ms), ("reg-1", 123));
            back.extend(n.ops);
        }
        assert_eq!(back, ops);
    }

    #[test]
    fn a_damaged_payload_is_an_error_not_a_panic() {
        let p = payloads("reg-1", 1, &every_op()).remove(0);
        for cut in 0..p.len() {
            let _ = parse(&p[..cut]);
        }
        assert!(parse("x\t1\t!!!").is_err());
        assert!(parse("x\t1\tCQ==").is_err());
        assert!(parse("x").is_err());
    }
}
