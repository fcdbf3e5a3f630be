//! Randomness and hashing helpers that give the same answer on every
//! platform: integer arithmetic only, no `f64::ln` (whose last bit depends on
//! the platform's libm), so a seed replays bit for bit anywhere.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The simulator's generator: ChaCha8, whose output stream is specified.
pub(crate) type SimRng = ChaCha8Rng;

/// A generator seeded from a 64-bit seed.
pub(crate) fn rng_from(seed: u64) -> SimRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Parts per million: probabilities are integers so that they compare exactly.
pub(crate) const PPM: u32 = 1_000_000;

/// True with probability `ppm` / 1 000 000.
pub(crate) fn chance(rng: &mut SimRng, ppm: u32) -> bool {
    ppm > 0 && (ppm >= PPM || rng.random_range(0..PPM) < ppm)
}

/// A draw from (approximately) the exponential distribution with mean
/// `mean_ns`.
///
/// The integer part comes from a geometric variable (trailing zero bits of a
/// random word: `P(k) = 2^-(k+1)`), the fraction from a uniform one, scaled by
/// ln 2: a piecewise-uniform exponential with the right tail and a mean within
/// 4% of `mean_ns`, computed without floating point.
pub(crate) fn exp_ns(rng: &mut SimRng, mean_ns: u64) -> u64 {
    if mean_ns == 0 {
        return 0;
    }
    let k = u64::from(rng.next_u64().trailing_zeros().min(40));
    let frac = rng.random_range(0..1_000_000u64);
    let units = k * 1_000_000 + frac; // (k + U) in millionths
                                      // mean_ns * ln2 * (k + U), with ln 2 ~ 0.693147.
    let scaled = u128::from(units) * u128::from(mean_ns) * 693_147 / 1_000_000 / 1_000_000;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// A uniform draw from `[lo_ns, hi_ns]` (both included; `lo` if `hi < lo`).
pub(crate) fn between(rng: &mut SimRng, lo_ns: u64, hi_ns: u64) -> u64 {
    if hi_ns <= lo_ns {
        lo_ns
    } else {
        rng.random_range(lo_ns..=hi_ns)
    }
}

/// A running 64-bit hash of everything that happens in a run.
///
/// Word-at-a-time multiply-rotate mixing (FxHash-like) with a final
/// avalanche: not cryptographic, but any difference in a datagram or an event
/// changes it with overwhelming probability, and it is cheap enough to feed
/// every byte the network delivers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceHash(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl TraceHash {
    pub(crate) fn new(seed: u64) -> TraceHash {
        TraceHash(seed ^ 0x5157_7a3c_2d5e_11f1)
    }

    pub(crate) fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(MIX);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last));
        }
    }

    /// The hash so far, avalanched (splitmix64 finaliser).
    pub(crate) fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_ns_has_roughly_the_asked_mean() {
        let mut rng = rng_from(1);
        let n = 20_000u64;
        let sum: u64 = (0..n).map(|_| exp_ns(&mut rng, 1_000_000)).sum();
        let mean = sum / n;
        assert!((900_000..1_150_000).contains(&mean), "mean {mean}");
    }

    #[test]
    fn chance_is_exact_at_the_bounds() {
        let mut rng = rng_from(2);
        assert!(!(0..1000).any(|_| chance(&mut rng, 0)));
        assert!((0..1000).all(|_| chance(&mut rng, PPM)));
    }

    #[test]
    fn trace_hash_sees_every_byte() {
        let mut a = TraceHash::new(0);
        let mut b = TraceHash::new(0);
        a.bytes(b"abcdefghij");
        b.bytes(b"abcdefghik");
        assert_ne!(a.finish(), b.finish());
    }
}
