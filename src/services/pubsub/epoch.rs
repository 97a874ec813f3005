//! The broker's epoch: a number persisted in `$PILOT_HOME/pubsub-epoch` and raised by one at
//! every start of the broker. Sequence numbers live in memory and restart at 1 with the
//! broker; every event carries the epoch it was published in, so a subscriber tells a broker
//! restart (a new epoch, `seq` from 1) from a gap (the same epoch, a skipped `seq`).

use std::path::Path;

/// The epoch file's name in the state directory.
pub const EPOCH_FILE: &str = "pubsub-epoch";

/// The epoch after `previous` (the file's text, if there is one): one more than the number it
/// holds; `fallback` (the clock, in seconds: larger than any count of restarts) if it holds
/// no number, so a damaged file never brings an earlier epoch back.
pub fn next_epoch(previous: Option<&str>, fallback: u64) -> u64 {
    match previous.map(|t| t.trim().parse::<u64>()) {
        None => 1,
        Some(Ok(n)) => n.saturating_add(1),
        Some(Err(_)) => fallback,
    }
}

/// Raises the epoch recorded in `state_dir` and returns it, durably written before the
/// broker takes its first event.
pub fn advance(state_dir: &Path, now_secs: u64) -> std::io::Result<u64> {
    let path = state_dir.join(EPOCH_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(String::new()),
    };
    let epoch = next_epoch(previous.as_deref(), now_secs);
    crate::state::paths::write_private_atomic(&path, format!("{epoch}\n").as_bytes())?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_raises_the_epoch_and_a_damaged_file_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(advance(dir.path(), 1_000).unwrap(), 1);
        assert_eq!(advance(dir.path(), 1_000).unwrap(), 2);
        std::fs::write(dir.path().join(EPOCH_FILE), "garbage").unwrap();
        assert_eq!(advance(dir.path(), 1_000).unwrap(), 1_000);
        assert_eq!(advance(dir.path(), 5).unwrap(), 1_001);
        assert_eq!(next_epoch(Some(&u64::MAX.to_string()), 3), u64::MAX);
    }
}
