//! The frozen prefix's outputs, kept per example (both tasks with `trainable = { top-layers = k }`).
//!
//! The frozen lower layers are the pre-trained ones in every run, so their output for an example, computed once in
//! eval mode without gradient, serves every method and seed; a step then costs the trained layers only. Rows that
//! are missing are computed together, when first asked for, and kept if the memory budget has room for all of
//! them: rows computed together are kept together, so a batch asked for again is found whole or computed whole.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use tch::Tensor;

/// Rows of the frozen prefix's output by key (an example's index, or a set and an index), with an optional
/// budget in bytes and the seconds spent computing them.
#[derive(Debug)]
pub struct PrefixCache<K> {
    rows: HashMap<K, Tensor>,
    /// The most bytes the rows may hold; `None`: no limit.
    budget_bytes: Option<usize>,
    bytes: usize,
    seconds: f64,
}

impl<K: Copy + Eq + Hash> PrefixCache<K> {
    pub fn new(budget_bytes: Option<usize>) -> Self {
        Self { rows: HashMap::new(), budget_bytes, bytes: 0, seconds: 0.0 }
    }

    /// The rows of `keys`, in order: those kept as they are, the others from one call of `compute(missing)`,
    /// which returns one row per missing key, in order (timed, and kept as copies if the budget allows).
    pub fn get_or_compute(&mut self, keys: &[K], compute: impl FnOnce(&[K]) -> Vec<Tensor>) -> Vec<Tensor> {
        let missing: Vec<K> = keys.iter().copied().filter(|k| !self.rows.contains_key(k)).collect();
        let mut fresh = HashMap::new();
        if !missing.is_empty() {
            let start = Instant::now();
            let rows = compute(&missing);
            self.seconds += start.elapsed().as_secs_f64();
            assert_eq!(rows.len(), missing.len(), "one computed row per missing key");
            let bytes: usize = rows.iter().map(|r| r.numel() * r.kind().elt_size_in_bytes()).sum();
            let keep = self.budget_bytes.is_none_or(|budget| self.bytes + bytes <= budget);
            for (k, row) in missing.into_iter().zip(rows) {
                if keep {
                    self.rows.insert(k, row.copy());
                } else {
                    fresh.insert(k, row);
                }
            }
            if keep {
                self.bytes += bytes;
            }
        }
        keys.iter().map(|k| self.rows.get(k).unwrap_or_else(|| &fresh[k]).shallow_clone()).collect()
    }

    /// Seconds spent computing rows so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(keys: &[usize]) -> Vec<Tensor> {
        keys.iter().map(|&k| Tensor::from_slice(&[k as f32; 4])).collect()
    }

    #[test]
    fn rows_are_computed_once_and_only_what_the_budget_holds_is_kept() {
        let mut cache = PrefixCache::new(None);
        let mut asked = vec![];
        let got = cache.get_or_compute(&[3, 1], |m| {
            asked.push(m.to_vec());
            rows(m)
        });
        assert_eq!(got, rows(&[3, 1]));
        let got = cache.get_or_compute(&[1, 2, 3], |m| {
            asked.push(m.to_vec());
            rows(m)
        });
        assert_eq!(got, rows(&[1, 2, 3]));
        assert_eq!(asked, [vec![3, 1], vec![2]], "only the missing rows are computed, together");

        // Room for two rows of 16 bytes: a batch of two is kept, the next batch (all or nothing) is not.
        let mut cache = PrefixCache::new(Some(32));
        let mut computed = 0;
        for _ in 0..2 {
            cache.get_or_compute(&[0, 1], |m| {
                computed += m.len();
                rows(m)
            });
            let got = cache.get_or_compute(&[2, 3], |m| {
                computed += m.len();
                rows(m)
            });
            assert_eq!(got, rows(&[2, 3]));
        }
        assert_eq!(computed, 6);
        let mut none = PrefixCache::new(Some(0));
        none.get_or_compute(&[0], rows);
        none.get_or_compute(&[0], |m| {
            assert_eq!(m, [0], "a budget of 0 keeps nothing");
            rows(m)
        });
    }
}
