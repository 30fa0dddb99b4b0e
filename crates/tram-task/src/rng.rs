//! Deterministic splits and shuffles: a seeded FNV-1a hash of a stable key (a file name, a paragraph position)
//! decides which split an example falls in, whatever the order it is read in; SplitMix64 shuffles and augments.

/// FNV-1a over `bytes`, seeded, then a SplitMix64 finaliser so that nearby seeds give unrelated values.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    SplitMix64(h).next_u64()
}

/// A uniform number in [0, 1) from `key` and `seed`: `hash_unit(seed, key) < fraction` puts an example in the
/// held-out part, stably across runs and machines.
pub fn hash_unit(seed: u64, key: &[u8]) -> f64 {
    to_unit(fnv1a(seed, key))
}

fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A small, fast, reproducible generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_stable_and_roughly_uniform() {
        assert_eq!(hash_unit(3, b"ch01.html#4"), hash_unit(3, b"ch01.html#4"));
        assert_ne!(hash_unit(3, b"ch01.html#4"), hash_unit(4, b"ch01.html#4"));
        let held = (0..10_000).filter(|i| hash_unit(0, format!("doc{i}").as_bytes()) < 0.3).count();
        assert!((2800..3200).contains(&held), "{held}");
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64(1).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
