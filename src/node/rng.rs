//! The node core's source of randomness: seeded once at construction (the driver seeds it from
//! the OS, tests from a constant), so every run of a test is the same run.

use sha2::{Digest, Sha256};

/// A deterministic generator: SHA-256 of a 32-byte seed and a counter. Unpredictable without
/// the seed, which is all transaction ids need.
#[derive(Debug, Clone)]
pub struct NodeRng {
    seed: [u8; 32],
    counter: u64,
}

impl NodeRng {
    /// A generator from `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NodeRng { seed, counter: 0 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let d = Sha256::new()
            .chain_update(self.seed)
            .chain_update(self.counter.to_be_bytes())
            .finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_other_seed_other_numbers() {
        let mut a = NodeRng::from_seed([7; 32]);
        let mut b = NodeRng::from_seed([7; 32]);
        let mut c = NodeRng::from_seed([8; 32]);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs[0], xs[1]);
    }
}
