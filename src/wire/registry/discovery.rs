//! Discovery fields (v1.3): node tags and the reference a `LookupNode` names a node by.
//!
//! ```text
//! tags:     count (u8, ≤ MAX_TAGS) | per tag: length (u8, 1..=MAX_TAG_LEN) | bytes
//! peer ref: kind (u8: 0 key, 1 addr48, 2 hostname) | key (32) | addr48 (6) | hostname (len u8 + bytes)
//! ```

use super::codec::{put_hostname, Reader};
use super::WireError;
use crate::mapping::{Addr48, PeerRef};

/// Most tags a node may carry.
pub const MAX_TAGS: usize = 8;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 24;

/// Whether `t` is a tag: 1 to [`MAX_TAG_LEN`] lowercase ASCII letters, digits and hyphens,
/// starting with a letter or digit.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    (1..=MAX_TAG_LEN).contains(&b.len())
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Checks a whole tag list: at most [`MAX_TAGS`], each valid, no duplicate.
pub fn check_tags(tags: &[String]) -> Result<(), WireError> {
    if tags.len() > MAX_TAGS {
        return Err(WireError::Invalid("too many tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        if !valid_tag(t) {
            return Err(WireError::Invalid("tag"));
        }
        if tags[..i].contains(t) {
            return Err(WireError::Invalid("duplicate tag"));
        }
    }
    Ok(())
}

pub(super) fn put_tags(w: &mut Vec<u8>, tags: &[String]) -> Result<(), WireError> {
    check_tags(tags)?;
    w.push(tags.len() as u8);
    for t in tags {
        w.push(t.len() as u8);
        w.extend_from_slice(t.as_bytes());
    }
    Ok(())
}

pub(super) fn read_tags(r: &mut Reader<'_>) -> Result<Vec<String>, WireError> {
    let n = r.u8()? as usize;
    if n > MAX_TAGS {
        return Err(WireError::Invalid("too many tags"));
    }
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u8()? as usize;
        let s = std::str::from_utf8(r.take(len)?).map_err(|_| WireError::Invalid("tag"))?;
        tags.push(s.to_string());
    }
    check_tags(&tags)?;
    Ok(tags)
}

pub(super) fn put_peer_ref(w: &mut Vec<u8>, p: &PeerRef) {
    match p {
        PeerRef::PublicKey(k) => {
            w.push(0);
            w.extend_from_slice(k.as_bytes());
        }
        PeerRef::Addr48(a) => {
            w.push(1);
            w.extend_from_slice(&a.to_bytes());
        }
        PeerRef::Hostname(h) => {
            w.push(2);
            put_hostname(w, Some(h));
        }
    }
}

pub(super) fn read_peer_ref(r: &mut Reader<'_>) -> Result<PeerRef, WireError> {
    Ok(match r.u8()? {
        0 => PeerRef::PublicKey(r.key()?),
        1 => PeerRef::Addr48(Addr48::from_bytes(r.array()?)),
        2 => PeerRef::Hostname(r.hostname()?.ok_or(WireError::Invalid("empty hostname"))?),
        _ => return Err(WireError::Invalid("peer reference kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_lowercase_and_unique() {
        for ok in ["gpu", "vector-search", "a", "x1", &"a".repeat(MAX_TAG_LEN)] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "GPU",
            "a b",
            "é",
            &"a".repeat(MAX_TAG_LEN + 1),
            "a_b",
        ] {
            assert!(!valid_tag(bad), "{bad}");
        }
        assert!(check_tags(&["a".into(), "a".into()]).is_err());
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(check_tags(&many).is_err());
        assert!(check_tags(&many[..MAX_TAGS]).is_ok());
    }
}
