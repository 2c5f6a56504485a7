//! The statistics under the judge: a one-sided two-proportion z-test with a margin, a
//! one-sided Mann–Whitney U test (normal approximation, tie-corrected), quantiles, and a
//! bounded reservoir sample. Pure functions over plain numbers.
//!
//! The normal distribution and the order statistics come from `statrs` rather than being
//! written here: a hand-rolled `erf` or quantile is easy to get subtly wrong, and a
//! well-kept crate is tested against reference values we would otherwise have to find.

use rand::Rng;
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::{Data, OrderStatistics};

/// The result of a one-sided test: the standardised statistic and the probability, under
/// the null hypothesis, of a statistic at least this large.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    pub z: f64,
    pub p_value: f64,
}

impl TestResult {
    /// No evidence at all against the null hypothesis (a test on degenerate data).
    const NO_EVIDENCE: TestResult = TestResult {
        z: 0.0,
        p_value: 1.0,
    };
}

/// The upper tail of the standard normal distribution, `P(Z ≥ z)`.
fn upper_tail(z: f64) -> f64 {
    // `Normal::standard()` cannot fail; `sf` is computed directly (not as `1 - cdf`) so a
    // large z keeps its precision.
    Normal::standard().sf(z)
}

/// Successes out of trials, e.g. 5xx responses out of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proportion {
    pub successes: u64,
    pub trials: u64,
}

impl Proportion {
    /// The share of successes; `None` with no trials.
    pub fn share(self) -> Option<f64> {
        (self.trials > 0).then(|| self.successes as f64 / self.trials as f64)
    }
}

/// One-sided two-proportion z-test of `H0: p_new − p_baseline ≤ margin` against
/// `H1: p_new − p_baseline > margin`.
///
/// With a zero margin the standard error uses the pooled share (the textbook test: under
/// `H0` both shares are equal). With a positive margin `H0` says they differ, so pooling
/// would be wrong and the unpooled (Wald) standard error is used. Returns `None` when
/// either side has no trials. When the standard error is zero (both shares are 0 or 1)
/// the difference is certain: a p-value of 0 if it exceeds the margin, else 1.
pub fn two_proportion_z_test(
    new: Proportion,
    baseline: Proportion,
    margin: f64,
) -> Option<TestResult> {
    let new_share = new.share()?;
    let baseline_share = baseline.share()?;
    let (n_new, n_baseline) = (new.trials as f64, baseline.trials as f64);
    let variance = if margin == 0.0 {
        let pooled = (new.successes + baseline.successes) as f64 / (n_new + n_baseline);
        pooled * (1.0 - pooled) * (1.0 / n_new + 1.0 / n_baseline)
    } else {
        new_share * (1.0 - new_share) / n_new + baseline_share * (1.0 - baseline_share) / n_baseline
    };
    let excess = new_share - baseline_share - margin;
    if variance <= 0.0 {
        let certain = if excess > 0.0 { 0.0 } else { 1.0 };
        return Some(TestResult {
            z: excess.signum() * f64::INFINITY,
            p_value: certain,
        });
    }
    let z = excess / variance.sqrt();
    Some(TestResult {
        z,
        p_value: upper_tail(z),
    })
}

/// One-sided Mann–Whitney U test of whether `new` is stochastically greater than
/// `baseline` (`H1: P(new > baseline) > ½`), by the normal approximation with the tie
/// correction and a continuity correction of ½ (as `scipy.stats.mannwhitneyu` with
/// `method="asymptotic"`). `z` is for the U of `new`.
///
/// Returns `None` when either sample is empty. NaNs sort above every number
/// (`f64::total_cmp`); the caller records durations, which are never NaN.
pub fn mann_whitney_u_greater(new: &[f64], baseline: &[f64]) -> Option<TestResult> {
    if new.is_empty() || baseline.is_empty() {
        return None;
    }
    let (n_new, n_baseline) = (new.len() as f64, baseline.len() as f64);
    let n = n_new + n_baseline;

    // Tag each value with its sample, sort, and give tied runs their average rank.
    let mut pooled: Vec<(f64, bool)> = new
        .iter()
        .map(|&x| (x, true))
        .chain(baseline.iter().map(|&y| (y, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_new = 0.0;
    let mut tie_term = 0.0; // Σ (t³ − t) over tied runs of length t
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0.total_cmp(&pooled[start].0).is_eq() {
            end += 1;
        }
        let run = (end - start) as f64;
        // Ranks are 1-based: the run covers ranks start+1 ..= end.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let from_new = pooled[start..end]
            .iter()
            .filter(|(_, is_new)| *is_new)
            .count();
        rank_sum_new += average_rank * from_new as f64;
        tie_term += run * run * run - run;
        start = end;
    }

    let u_new = rank_sum_new - n_new * (n_new + 1.0) / 2.0;
    let mean = n_new * n_baseline / 2.0;
    let variance = n_new * n_baseline / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        // Every value is tied: nothing tells the samples apart.
        return Some(TestResult::NO_EVIDENCE);
    }
    let z = (u_new - mean - 0.5) / variance.sqrt();
    Some(TestResult {
        z,
        p_value: upper_tail(z),
    })
}

/// The `tau` quantile (0 ≤ tau ≤ 1) of a sample, by `statrs`' order statistics (the
/// R-8 estimator, median-unbiased); `None` for an empty sample.
pub fn quantile(sample: &[f64], tau: f64) -> Option<f64> {
    if sample.is_empty() {
        return None;
    }
    Some(Data::new(sample.to_vec()).quantile(tau))
}

/// A uniform sample of at most `capacity` items out of a stream of any length (Vitter's
/// Algorithm R), so that a cohort's latencies stay bounded in memory however busy the
/// interval. The RNG is passed in, so tests can seed it.
#[derive(Debug, Clone)]
pub struct Reservoir<T> {
    capacity: usize,
    seen: u64,
    items: Vec<T>,
}

impl<T> Reservoir<T> {
    pub fn new(capacity: usize) -> Self {
        Reservoir {
            capacity,
            seen: 0,
            items: Vec::with_capacity(capacity),
        }
    }

    /// Offer one item: kept with probability `capacity / seen`, replacing a uniformly
    /// chosen kept item once the reservoir is full.
    pub fn offer<R: Rng + ?Sized>(&mut self, item: T, rng: &mut R) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
            return;
        }
        let slot = rng.random_range(0..self.seen);
        if let Ok(slot) = usize::try_from(slot)
            && let Some(kept) = self.items.get_mut(slot)
        {
            *kept = item;
        }
    }

    /// A reservoir that already holds `items` (at most `capacity` of them are kept), standing
    /// for `seen` offers: a sample rebuilt from elsewhere, such as a histogram's buckets.
    pub fn holding(capacity: usize, seen: u64, mut items: Vec<T>) -> Self {
        items.truncate(capacity);
        Reservoir {
            capacity,
            seen: seen.max(items.len() as u64),
            items,
        }
    }

    /// The items kept, in no particular order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// How many items were offered in all.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn assert_close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} is not within {tolerance} of {expected}"
        );
    }

    #[test]
    fn mann_whitney_matches_the_scipy_documentation_example() {
        // scipy.stats.mannwhitneyu docs: males vs females, U1 = 17, asymptotic two-sided
        // p = 0.11134688653314041, so one-sided "greater" is half of it.
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        let result = mann_whitney_u_greater(&males, &females).unwrap();
        assert_close(result.p_value, 0.11134688653314041 / 2.0, 1e-9);
        // U1 = 17, mean 10, variance 5·4·10/12: z = (17 − 10 − ½) / √(50/3).
        assert_close(result.z, 6.5 / (50.0f64 / 3.0).sqrt(), 1e-12);
    }

    #[test]
    fn mann_whitney_applies_the_tie_correction() {
        // x = [1,2,2,3], y = [2,3,3,4]. Pooled ranks: 1→1, 2→3 (×3), 3→6 (×3), 4→8.
        // R_x = 1 + 3 + 3 + 6 = 13, U_x = 13 − 10 = 3, mean 8.
        // Ties: runs of 3 and 3 → Σ(t³ − t) = 48; variance = 16/12 · (9 − 48/56).
        let result = mann_whitney_u_greater(&[1.0, 2.0, 2.0, 3.0], &[2.0, 3.0, 3.0, 4.0]).unwrap();
        let variance = 16.0 / 12.0 * (9.0 - 48.0 / 56.0);
        let z = (3.0 - 8.0 - 0.5) / f64::sqrt(variance);
        assert_close(result.z, z, 1e-12);
        // P(Z ≥ −1.66919) by Python's math.erfc: 0.5·erfc(z/√2).
        assert_close(result.p_value, 0.9524598065992065, 1e-9);
    }

    #[test]
    fn mann_whitney_sees_no_evidence_in_all_ties_or_empty_samples() {
        let result = mann_whitney_u_greater(&[5.0; 10], &[5.0; 7]).unwrap();
        assert_eq!(result.p_value, 1.0);
        assert!(mann_whitney_u_greater(&[], &[1.0]).is_none());
        assert!(mann_whitney_u_greater(&[1.0], &[]).is_none());
    }

    #[test]
    fn z_test_without_a_margin_is_the_pooled_textbook_test() {
        // 60/500 against 40/500: pooled 0.1, SE = √(0.1·0.9·(2/500)) = 0.018974…,
        // z = 0.04 / SE = 2.10819, one-sided p = 0.017507 (normal tables).
        let new = Proportion {
            successes: 60,
            trials: 500,
        };
        let baseline = Proportion {
            successes: 40,
            trials: 500,
        };
        let result = two_proportion_z_test(new, baseline, 0.0).unwrap();
        assert_close(result.z, 0.04 / (0.1f64 * 0.9 * 2.0 / 500.0).sqrt(), 1e-12);
        assert_close(result.z, 2.10819, 1e-5);
        assert_close(result.p_value, 0.017507, 1e-5);
    }

    #[test]
    fn z_test_with_a_margin_uses_the_unpooled_standard_error() {
        // 0.12 − 0.08 − 0.01 = 0.03 over √(0.12·0.88/500 + 0.08·0.92/500) = 0.018919…
        let new = Proportion {
            successes: 60,
            trials: 500,
        };
        let baseline = Proportion {
            successes: 40,
            trials: 500,
        };
        let result = two_proportion_z_test(new, baseline, 0.01).unwrap();
        let se = (0.12f64 * 0.88 / 500.0 + 0.08 * 0.92 / 500.0).sqrt();
        assert_close(result.z, 0.03 / se, 1e-12);
        assert!(result.p_value > 0.05 && result.p_value < 0.06, "{result:?}");
    }

    #[test]
    fn z_test_on_certain_shares_and_empty_sides() {
        let none = |trials| Proportion {
            successes: 0,
            trials,
        };
        let all = |trials| Proportion {
            successes: trials,
            trials,
        };
        assert_eq!(
            two_proportion_z_test(none(100), none(100), 0.01)
                .unwrap()
                .p_value,
            1.0
        );
        assert_eq!(
            two_proportion_z_test(all(100), none(100), 0.01)
                .unwrap()
                .p_value,
            0.0
        );
        assert!(two_proportion_z_test(none(0), none(100), 0.0).is_none());
    }

    #[test]
    fn quantiles_of_a_known_sample() {
        let sample: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(quantile(&sample, 0.5), Some(51.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_reservoir_never_exceeds_its_bound() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut reservoir = Reservoir::new(64);
        for i in 0..10_000u32 {
            reservoir.offer(i, &mut rng);
            assert!(reservoir.items().len() <= 64);
        }
        assert_eq!(reservoir.items().len(), 64);
        assert_eq!(reservoir.seen(), 10_000);
        let mut empty = Reservoir::new(0);
        empty.offer(1, &mut rng);
        assert!(empty.items().is_empty());
    }

    #[test]
    fn the_reservoir_keeps_a_uniform_sample() {
        // Stream 0..1000 through a reservoir of 100, 2,000 times; each item should be
        // kept 2000·100/1000 = 200 times. Over 10 deciles of the stream (expected 20,000
        // each), a chi-square with 9 degrees of freedom stays below 27.88 (p = 0.001).
        let mut rng = StdRng::seed_from_u64(42);
        let mut per_decile = [0u64; 10];
        for _ in 0..2_000 {
            let mut reservoir = Reservoir::new(100);
            for item in 0..1_000usize {
                reservoir.offer(item, &mut rng);
            }
            for item in reservoir.items() {
                per_decile[item / 100] += 1;
            }
        }
        let expected = 20_000.0;
        let chi_square: f64 = per_decile
            .iter()
            .map(|&observed| (observed as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi_square < 27.88, "{per_decile:?}: χ² = {chi_square}");
    }
}
