//! Reproducible random chunks: every chunk has its own xoshiro256++ stream, seeded from the
//! array's seed and the chunk's linear index, so a chunk is the same wherever and whenever it is
//! computed, and chunks can be generated in any order or in parallel.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

/// SplitMix64's output function: a bijective mix of a 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stream of uniform [0, 1) values of chunk `stream` of an array seeded with `seed`.
pub(crate) struct ChunkRng(Xoshiro256PlusPlus);

impl ChunkRng {
    pub(crate) fn new(seed: u64, stream: u64) -> ChunkRng {
        // Mixing the seed first keeps (seed, stream) and (seed + 1, stream - 1) apart.
        let s = mix(mix(seed).wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        ChunkRng(Xoshiro256PlusPlus::seed_from_u64(s))
    }

    /// Fills `out` with the stream's next values, uniform on [0, 1) with 53 random bits each.
    #[inline]
    pub(crate) fn fill(&mut self, out: &mut [f64]) {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        for x in out {
            *x = (self.0.next_u64() >> 11) as f64 * SCALE;
        }
    }

    /// Skips `n` values (as if they were generated).
    pub(crate) fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.0.next_u64();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_splitmix64() {
        // SplitMix64 seeded with 0 first outputs mix(0x9e3779b97f4a7c15) = 0xe220a8397b1dcdaf.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn streams_are_reproducible_distinct_and_uniform() {
        let mut a = [0.0; 1000];
        let mut b = [0.0; 1000];
        ChunkRng::new(7, 3).fill(&mut a);
        ChunkRng::new(7, 3).fill(&mut b);
        assert_eq!(a, b);
        ChunkRng::new(7, 4).fill(&mut b);
        assert_ne!(a, b);
        ChunkRng::new(8, 3).fill(&mut b);
        assert_ne!(a, b);
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let mut big = vec![0.0; 100_000];
        ChunkRng::new(1, 0).fill(&mut big);
        let mean = big.iter().sum::<f64>() / big.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        // Filling in pieces gives the same stream as filling at once.
        let mut r = ChunkRng::new(7, 3);
        let mut c = [0.0; 1000];
        r.fill(&mut c[..300]);
        r.fill(&mut c[300..]);
        assert_eq!(a, c);
        let mut r = ChunkRng::new(7, 3);
        r.skip(300);
        let mut d = [0.0; 700];
        r.fill(&mut d);
        assert_eq!(&a[300..], &d[..]);
    }
}
