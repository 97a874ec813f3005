//! The rules of the `.pilot` zone, pure: a query's bytes and a snapshot of what the node knows
//! go in, the answer's bytes (or nothing) come out. No socket, no clock.
//!
//! Names served (case-insensitive, one label under `pilot.`):
//! - `HOSTNAME.pilot`: our own hostname and the hostnames of trusted peers → AAAA.
//! - `xxxx-xxxx-xxxx.pilot`: the address form (the canonical `xxxx.xxxx.xxxx` with hyphens,
//!   since a dot would split the label) of our own address or of a trusted peer's → AAAA.
//!   A label of that shape is always read as an address, never as a hostname, so no peer can
//!   take another's address name by choosing a hostname.
//! - Anything else under `pilot.` (untrusted peers included: no enumeration) → NXDOMAIN.
//! - Names outside `pilot.` → REFUSED (we are not an open resolver).
//!
//! A found name with another type than AAAA (A included: there is no IPv4 on the overlay) is
//! answered NOERROR with no record. Negative answers carry the zone's SOA, whose minimum is the
//! TTL, so resolvers cache them no longer than positive ones.

use std::net::Ipv6Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{AAAA, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::mapping::{Addr48, Hostname, NetworkPrefix};

/// The zone we answer for.
pub const ZONE: &str = "pilot";
/// The UDP payload size we announce to EDNS clients (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What the node knows, as the resolver sees it: its own name and address, and its trusted
/// peers. The daemon implements it over the live peer table, so an untrusted peer is gone at
/// the next query.
pub trait Names {
    /// Our own hostname (if we claim one) and our address.
    fn own(&self) -> (Option<Hostname>, Addr48);
    /// The address of the trusted peer known by `hostname` (already lowercase).
    fn trusted_hostname(&self, hostname: &str) -> Option<Addr48>;
    /// Whether a trusted peer holds `addr`.
    fn trusted_addr(&self, addr: Addr48) -> bool;
}

/// What a name under `pilot.` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The name belongs to this address.
    Found(Addr48),
    /// `pilot.` itself: it exists, with no address.
    Apex,
    /// A name under `pilot.` that we do not serve.
    NoSuchName,
    /// A name outside `pilot.`.
    NotOurs,
}

/// How a query was answered (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with an AAAA record.
    Answered,
    /// NOERROR with no record (A and other types, the apex).
    NoData,
    /// NXDOMAIN.
    NxDomain,
    /// REFUSED: outside `pilot.` or not class IN.
    Refused,
    /// FORMERR (not exactly one question) or NOTIMP (an opcode other than QUERY).
    Error,
}

/// Why a datagram got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a DNS message.
    Malformed,
    /// A response, not a query (answering could start a loop).
    NotAQuery,
}

/// The answer to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response's bytes.
    pub bytes: Vec<u8>,
    /// How it answered.
    pub outcome: Outcome,
}

/// How the zone answers: the network (to turn addresses into IPv6) and the TTL of every
/// record.
#[derive(Debug, Clone, Copy)]
pub struct Zone {
    /// The overlay network.
    pub network: NetworkPrefix,
    /// TTL of answers and of negative answers (seconds).
    pub ttl: u32,
}

/// Reads the address form `xxxx-xxxx-xxxx` (either case).
pub fn parse_address_label(label: &str) -> Option<Addr48> {
    if label.len() != 14 || label.as_bytes()[4] != b'-' || label.as_bytes()[9] != b'-' {
        return None;
    }
    label.replace('-', ".").parse().ok()
}

/// The address form of `addr`: `xxxx-xxxx-xxxx`.
pub fn address_label(addr: Addr48) -> String {
    addr.to_string().replace('.', "-")
}

/// What `name` means, given what the node knows.
pub fn lookup(name: &Name, names: &dyn Names) -> Lookup {
    let labels: Vec<&[u8]> = name.iter().collect();
    match labels.as_slice() {
        [zone] if zone.eq_ignore_ascii_case(ZONE.as_bytes()) => Lookup::Apex,
        [label, zone] if zone.eq_ignore_ascii_case(ZONE.as_bytes()) => {
            let Ok(label) = std::str::from_utf8(label) else {
                return Lookup::NoSuchName;
            };
            let label = label.to_ascii_lowercase();
            lookup_label(&label, names).map_or(Lookup::NoSuchName, Lookup::Found)
        }
        [.., zone] if zone.eq_ignore_ascii_case(ZONE.as_bytes()) => Lookup::NoSuchName,
        _ => Lookup::NotOurs,
    }
}

fn lookup_label(label: &str, names: &dyn Names) -> Option<Addr48> {
    let (own_name, own_addr) = names.own();
    if let Some(addr) = parse_address_label(label) {
        return (addr == own_addr || names.trusted_addr(addr)).then_some(addr);
    }
    if own_name.as_ref().is_some_and(|h| h.as_str() == label) {
        return Some(own_addr);
    }
    names.trusted_hostname(label)
}

/// Answers one datagram, or says why it gets no answer.
pub fn answer(query: &[u8], names: &dyn Names, zone: Zone) -> Result<Reply, Dropped> {
    let req = Message::from_vec(query).map_err(|_| Dropped::Malformed)?;
    if req.message_type() != MessageType::Query {
        return Err(Dropped::NotAQuery);
    }
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired());
    if req.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    let outcome = fill(&req, &mut resp, names, zone);
    let bytes = resp.to_vec().map_err(|_| Dropped::Malformed)?;
    Ok(Reply { bytes, outcome })
}

/// Fills the question, answer and authority sections of `resp` for `req`.
fn fill(req: &Message, resp: &mut Message, names: &dyn Names, zone: Zone) -> Outcome {
    if req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return Outcome::Error;
    }
    let [q] = req.queries() else {
        resp.set_response_code(ResponseCode::FormErr);
        return Outcome::Error;
    };
    resp.add_query(q.clone());
    let found = match lookup(q.name(), names) {
        Lookup::NotOurs => None,
        _ if q.query_class() != DNSClass::IN => None,
        l => Some(l),
    };
    let Some(found) = found else {
        resp.set_response_code(ResponseCode::Refused);
        return Outcome::Refused;
    };
    resp.set_authoritative(true);
    match found {
        Lookup::Found(addr) if matches!(q.query_type(), RecordType::AAAA | RecordType::ANY) => {
            let ip: Ipv6Addr = zone.network.ipv6(addr);
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                zone.ttl,
                RData::AAAA(AAAA(ip)),
            ));
            Outcome::Answered
        }
        Lookup::NoSuchName => {
            resp.set_response_code(ResponseCode::NXDomain);
            resp.add_name_server(soa(zone.ttl));
            Outcome::NxDomain
        }
        _ => {
            resp.add_name_server(soa(zone.ttl));
            Outcome::NoData
        }
    }
}

/// The zone's SOA, for negative answers: its minimum (and TTL) bounds negative caching.
fn soa(ttl: u32) -> Record {
    let zone = Name::from_labels([ZONE.as_bytes()]).expect("`pilot` is a valid label");
    let admin = Name::from_labels([b"hostmaster".as_slice(), ZONE.as_bytes()])
        .expect("`hostmaster.pilot` is a valid name");
    let data = SOA::new(zone.clone(), admin, 1, 3600, 600, 86400, ttl);
    Record::from_rdata(zone, ttl, RData::SOA(data))
}

#[cfg(test)]
mod tests;
