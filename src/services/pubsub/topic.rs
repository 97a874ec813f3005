//! Topic names and patterns of the pub/sub service: validation and matching, pure.
//!
//! A topic is a dotted name of 1-16 segments, each 1-64 characters of `A-Z a-z 0-9 - _`,
//! 255 bytes at most (`sensors.kitchen.temp`). A pattern is a topic in which a segment may be
//! `*` (exactly one segment) and the last segment may be `>` or `**` (one or more segments:
//! the rest of the topic).

/// The longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// The most segments of a topic or pattern.
pub const MAX_SEGMENTS: usize = 16;
/// The longest segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;

/// Why a topic or pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty, or longer than [`MAX_TOPIC_LEN`].
    #[error("a topic must be 1-{MAX_TOPIC_LEN} bytes, `{0}` is {1}")]
    Length(String, usize),
    /// More than [`MAX_SEGMENTS`] segments.
    #[error("a topic has at most {MAX_SEGMENTS} dot-separated segments, `{0}` has {1}")]
    Segments(String, usize),
    /// An empty segment (`a..b`, `.a`, `a.`), or one longer than [`MAX_SEGMENT_LEN`].
    #[error("segment {1} of `{0}` is empty or longer than {MAX_SEGMENT_LEN} bytes")]
    Segment(String, usize),
    /// A character outside `A-Z a-z 0-9 - _` (and, in a pattern, the wildcards).
    #[error("`{0}` has a character that is not a letter, digit, `-` or `_` in segment {1}")]
    Charset(String, usize),
    /// A wildcard in a topic that is published to.
    #[error("`{0}` has a wildcard: publish to an exact topic (wildcards are for subscribe)")]
    Wildcard(String),
    /// `>` or `**` anywhere but the last segment.
    #[error("in `{0}`, `>` (or `**`) may only be the last segment")]
    TailNotLast(String),
}

impl From<TopicError> for crate::error::PilotError {
    fn from(e: TopicError) -> Self {
        crate::error::PilotError::invalid(
            e.to_string(),
            "topics are dotted names of letters, digits, `-` and `_` (sensors.kitchen.temp); \
             subscribe patterns may use `*` for one segment and a final `>` for the rest",
        )
    }
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn split_checked(text: &str) -> Result<Vec<&str>, TopicError> {
    if text.is_empty() || text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Length(text.into(), text.len()));
    }
    let segs: Vec<&str> = text.split('.').collect();
    if segs.len() > MAX_SEGMENTS {
        return Err(TopicError::Segments(text.into(), segs.len()));
    }
    for (i, s) in segs.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_SEGMENT_LEN {
            return Err(TopicError::Segment(text.into(), i + 1));
        }
    }
    Ok(segs)
}

/// Checks a topic to publish to: no wildcard.
pub fn validate_topic(text: &str) -> Result<(), TopicError> {
    for (i, s) in split_checked(text)?.iter().enumerate() {
        if matches!(*s, "*" | ">" | "**") {
            return Err(TopicError::Wildcard(text.into()));
        }
        if !segment_ok(s) {
            return Err(TopicError::Charset(text.into(), i + 1));
        }
    }
    Ok(())
}

/// Checks a subscription pattern: `*` anywhere, `>` or `**` only last.
pub fn validate_pattern(text: &str) -> Result<(), TopicError> {
    let segs = split_checked(text)?;
    for (i, s) in segs.iter().enumerate() {
        match *s {
            "*" => {}
            ">" | "**" if i + 1 == segs.len() => {}
            ">" | "**" => return Err(TopicError::TailNotLast(text.into())),
            s if segment_ok(s) => {}
            _ => return Err(TopicError::Charset(text.into(), i + 1)),
        }
    }
    Ok(())
}

/// Whether `topic` (valid, no wildcard) matches `pattern` (valid).
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut t = topic.split('.');
    for p in pattern.split('.') {
        match p {
            ">" | "**" => return t.next().is_some(),
            "*" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_exact_pattern_matches_only_its_topic() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.b.c", "a.b.d"));
    }

    #[test]
    fn a_star_matches_exactly_one_segment() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(matches("*", "x"));
        assert!(!matches("a.*", "a"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(matches("*.*", "a.b"));
    }

    #[test]
    fn a_tail_wildcard_matches_one_or_more_remaining_segments() {
        for tail in [">", "**"] {
            let p = format!("a.{tail}");
            assert!(matches(&p, "a.b"));
            assert!(matches(&p, "a.b.c.d"));
            assert!(!matches(&p, "a"), "the tail needs at least one segment");
            assert!(!matches(&p, "b.c"));
        }
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.x.>", "q.x.y"));
    }

    #[test]
    fn topics_with_wildcards_or_bad_characters_are_refused() {
        assert!(validate_topic("sensors.kitchen.temp").is_ok());
        assert!(validate_topic("Ab-_9").is_ok());
        assert_eq!(
            validate_topic("a.*"),
            Err(TopicError::Wildcard("a.*".into()))
        );
        assert!(matches!(validate_topic(""), Err(TopicError::Length(..))));
        assert!(matches!(
            validate_topic("a..b"),
            Err(TopicError::Segment(_, 2))
        ));
        assert!(matches!(
            validate_topic("a.b c"),
            Err(TopicError::Charset(_, 2))
        ));
        assert!(matches!(
            validate_topic("a.é"),
            Err(TopicError::Charset(_, 2))
        ));
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(
            validate_topic(&long),
            Err(TopicError::Segment(_, 1))
        ));
        let many = vec!["a"; MAX_SEGMENTS + 1].join(".");
        assert!(matches!(
            validate_topic(&many),
            Err(TopicError::Segments(..))
        ));
        let huge = vec!["x".repeat(64); 4].join(".");
        assert!(huge.len() > MAX_TOPIC_LEN);
        assert!(matches!(validate_topic(&huge), Err(TopicError::Length(..))));
    }

    #[test]
    fn patterns_allow_a_tail_wildcard_only_last() {
        assert!(validate_pattern("a.*.c").is_ok());
        assert!(validate_pattern("a.>").is_ok());
        assert!(validate_pattern("a.**").is_ok());
        assert_eq!(
            validate_pattern("a.>.c"),
            Err(TopicError::TailNotLast("a.>.c".into()))
        );
        assert!(matches!(
            validate_pattern("a.b*"),
            Err(TopicError::Charset(_, 2))
        ));
    }

    proptest! {
        #[test]
        fn every_valid_topic_matches_itself_and_the_catch_all(
            segs in proptest::collection::vec("[a-z0-9_-]{1,8}", 1..6)
        ) {
            let topic = segs.join(".");
            prop_assert!(validate_topic(&topic).is_ok());
            prop_assert!(matches(&topic, &topic));
            prop_assert!(matches(">", &topic));
            let stars = vec!["*"; segs.len()].join(".");
            prop_assert!(matches(&stars, &topic));
        }
    }
}
