//! Which differences are real, after Twitter's Diffy: some fields differ on every call
//! whatever the version (ids, timestamps, the rate-limit budget the shadow call itself
//! spends), so a difference between legacy and new proves nothing until it is weighed
//! against how often the same field differs between two calls to the same version. A field
//! is a real mismatch only when its cross-version difference rate exceeds its noise rate
//! clearly, by a relative and an absolute margin both.

use serde::Serialize;

/// The rule's margins, and how much noise must be measured before anything is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The cross rate must exceed the noise rate by this share of it: `0.2` is 20 %.
    pub relative: f64,
    /// And by this much in absolute terms: `0.0003` is 0.03 percentage points.
    pub absolute: f64,
    /// Same-version comparisons a route needs before any of its fields is judged: with no
    /// noise measured, every field that ever differs would look like a real mismatch. `0`
    /// judges at once (a noise rate of 0 until measured).
    pub min_noise_comparisons: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            relative: 0.2,
            absolute: 0.0003,
            min_noise_comparisons: 20,
        }
    }
}

/// What a field's counts say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Never differed.
    Match,
    /// Differed, but not clearly more across versions than within one.
    Noise,
    /// Differs across versions clearly more than within one: a real difference.
    Mismatch,
    /// Differed across versions, and too little noise is measured yet to say how much that
    /// means.
    Pending,
}

/// One field's counts on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldCounts {
    /// Cross-version comparisons in which the field was compared, and in how many it differed.
    pub cross_compared: u64,
    pub cross_differed: u64,
    /// Same-version comparisons, likewise.
    pub noise_compared: u64,
    pub noise_differed: u64,
}

impl FieldCounts {
    pub fn cross_rate(&self) -> Option<f64> {
        rate(self.cross_differed, self.cross_compared)
    }

    pub fn noise_rate(&self) -> Option<f64> {
        rate(self.noise_differed, self.noise_compared)
    }
}

fn rate(differed: u64, compared: u64) -> Option<f64> {
    (compared > 0).then(|| differed as f64 / compared as f64)
}

/// Diffy's rule: a mismatch when `cross_rate > noise_rate × (1 + relative)` and
/// `cross_rate − noise_rate > absolute`; otherwise noise if the field ever differed, match
/// if never; pending while the noise measured is under `min_noise_comparisons`.
pub fn classify(counts: FieldCounts, thresholds: &Thresholds) -> Verdict {
    if counts.cross_differed == 0 {
        return if counts.noise_differed == 0 {
            Verdict::Match
        } else {
            Verdict::Noise
        };
    }
    if counts.noise_compared < thresholds.min_noise_comparisons {
        return Verdict::Pending;
    }
    let cross = counts.cross_rate().unwrap_or(0.0);
    let noise = counts.noise_rate().unwrap_or(0.0);
    if cross > noise * (1.0 + thresholds.relative) && cross - noise > thresholds.absolute {
        Verdict::Mismatch
    } else {
        Verdict::Noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cross: (u64, u64), noise: (u64, u64)) -> FieldCounts {
        FieldCounts {
            cross_differed: cross.0,
            cross_compared: cross.1,
            noise_differed: noise.0,
            noise_compared: noise.1,
        }
    }

    #[test]
    fn diffys_rule() {
        let cases = [
            // Never differed.
            ((0, 1_000), (0, 100), Verdict::Match),
            ((0, 0), (0, 0), Verdict::Match),
            // Only within one version.
            ((0, 1_000), (5, 100), Verdict::Noise),
            // Always, both ways: a random id.
            ((1_000, 1_000), (100, 100), Verdict::Noise),
            // Always across, never within.
            ((1_000, 1_000), (0, 100), Verdict::Mismatch),
            // 50 % against 40 %: 25 % more, 10 points.
            ((500, 1_000), (40, 100), Verdict::Mismatch),
            // 45 % against 40 %: only 12.5 % more.
            ((450, 1_000), (40, 100), Verdict::Noise),
            // 0.05 % against none: over both margins.
            ((5, 10_000), (0, 1_000), Verdict::Mismatch),
            // 0.02 % against none: under the absolute margin.
            ((2, 10_000), (0, 1_000), Verdict::Noise),
            // Less across than within.
            ((10, 1_000), (20, 100), Verdict::Noise),
            // Not enough noise measured yet.
            ((1_000, 1_000), (0, 19), Verdict::Pending),
            ((1_000, 1_000), (0, 20), Verdict::Mismatch),
        ];
        for (cross, noise, expected) in cases {
            assert_eq!(
                classify(counts(cross, noise), &Thresholds::default()),
                expected,
                "cross {cross:?} noise {noise:?}"
            );
        }
    }

    #[test]
    fn without_a_warm_up_unmeasured_noise_counts_as_none() {
        let thresholds = Thresholds {
            min_noise_comparisons: 0,
            ..Thresholds::default()
        };
        assert_eq!(
            classify(counts((1, 1), (0, 0)), &thresholds),
            Verdict::Mismatch
        );
    }

    #[test]
    fn rates() {
        let c = counts((1, 4), (0, 0));
        assert_eq!(c.cross_rate(), Some(0.25));
        assert_eq!(c.noise_rate(), None);
    }
}
