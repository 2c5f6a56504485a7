//! The judge over the fleet: the cohorts of one interval read from Prometheus, which scrapes
//! every proxy's `proxy_rollout_cohort_*` series (`rollout::metrics`). Two instant queries
//! over the window — each cohort's latency buckets and its server errors, by route, summed
//! over every proxy — become the same `IntervalSample` the local collector gives.
//!
//! The judge's tests need latency samples, not two quantiles, so a sample is rebuilt from
//! each histogram (`sample_from_buckets`): in every bucket, its share of the values spread
//! evenly between the bucket's bounds. That is the assumption `histogram_quantile` makes, so
//! the sample's quantiles are the ones PromQL would give; the rank tests then see the
//! histogram's resolution (the bounds grow by √2), not single requests.
//!
//! The queries and the reading of their answers are pure functions; `PrometheusSource` only
//! sends them (bounded by `rollout.analysis.prometheus_timeout`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;

use super::cohorts::{CohortKind, IntervalSample, ROUTE_LATENCY_SAMPLE_CAPACITY};
use super::judge::{Cohort, LATENCY_SAMPLE_CAPACITY};
use super::metrics::{COHORT_LATENCY, COHORT_SERVER_ERRORS};
use super::source::{CohortSource, SourceError, Window};
use crate::config::PrometheusUrl;
use crate::metrics::RouteLabel;

/// `range` as PromQL says it, in milliseconds (at least one).
fn range(window: Duration) -> String {
    format!("{}ms", window.as_millis().max(1))
}

/// Each cohort's latency buckets over the last `window`, by route, summed over the proxies
/// whose series match `selector`.
pub fn latency_buckets_query(selector: &str, window: Duration) -> String {
    format!(
        "sum by (cohort, route, le) (increase({COHORT_LATENCY}_bucket{{{selector}}}[{}]))",
        range(window)
    )
}

/// Each cohort's server errors over the last `window`, by route, summed over the proxies.
pub fn server_errors_query(selector: &str, window: Duration) -> String {
    format!(
        "sum by (cohort, route) (increase({COHORT_SERVER_ERRORS}{{{selector}}}[{}]))",
        range(window)
    )
}

/// The targets the selector matches whose scrapes failed at any time in the last `window`
/// (`up` was 0), or whose last scrape failed (a window shorter than the scrape interval may
/// hold no scrape at all): their series are missing from the sums, so the sample would be
/// partial.
pub fn missed_scrapes_query(selector: &str, window: Duration) -> String {
    format!(
        "min by (instance) (min_over_time(up{{{selector}}}[{}])) == 0 \
         or min by (instance) (up{{{selector}}}) == 0",
        range(window)
    )
}

/// The instances a `missed_scrapes_query` answer names, in order, for the reason given.
pub fn missed_instances(answer: &[Element]) -> Vec<String> {
    let mut instances: Vec<String> = answer
        .iter()
        .map(|element| {
            element
                .labels
                .get("instance")
                .cloned()
                .unwrap_or_else(|| "a target without an instance label".to_owned())
        })
        .collect();
    instances.sort();
    instances
}

/// One element of an instant vector: its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// The HTTP API's envelope (`/api/v1/query`).
#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RawElement>,
}

#[derive(Deserialize)]
struct RawElement {
    metric: HashMap<String, String>,
    /// `[unix time, "value"]`: PromQL sends numbers as strings (`NaN` and `+Inf` included).
    value: (f64, String),
}

/// The instant vector in an answer of the HTTP API, or why there is none.
pub fn parse_vector(
    url: &str,
    status: http::StatusCode,
    body: &[u8],
) -> Result<Vec<Element>, SourceError> {
    let malformed = |message: String| SourceError::Malformed {
        url: url.to_owned(),
        message,
    };
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(error) if status.is_success() => return Err(malformed(error.to_string())),
        Err(_) => {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(SourceError::Refused {
                url: url.to_owned(),
                status,
                message: excerpt,
            });
        }
    };
    if answer.status != "success" || !status.is_success() {
        let message = format!(
            "{}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no reason given")
        );
        return Err(SourceError::Refused {
            url: url.to_owned(),
            status,
            message,
        });
    }
    let data = answer
        .data
        .ok_or_else(|| malformed("a success without data".into()))?;
    if data.result_type != "vector" {
        return Err(malformed(format!(
            "a {} where an instant vector was asked for",
            data.result_type
        )));
    }
    (data.result.into_iter())
        .map(|raw| match raw.value.1.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Element {
                labels: raw.metric,
                value: value.max(0.0),
            }),
            _ => Err(malformed(format!(
                "the value {:?} is not a count",
                raw.value.1
            ))),
        })
        .collect()
}

/// A latency sample in milliseconds, of at most `capacity` values, laid out as the
/// cumulative buckets `(upper bound in seconds, count)` say; and the number of values the
/// histogram counted (its `+Inf` bucket). In each bucket the values are spread evenly
/// between its bounds, as `histogram_quantile` assumes; those above the last finite bound
/// sit on it (as `histogram_quantile` puts them). Counts from `increase` are not whole
/// numbers and may step down by extrapolation, so they are made cumulative and rounded.
pub fn sample_from_buckets(buckets: &[(f64, f64)], capacity: usize) -> (u64, Vec<f64>) {
    let mut sorted: Vec<(f64, f64)> = buckets.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut running = 0.0_f64;
    for (_, count) in &mut sorted {
        running = running.max(*count);
        *count = running;
    }
    let total = running;
    let requests = total.round() as u64;
    let points = usize::try_from(requests)
        .unwrap_or(usize::MAX)
        .min(capacity);
    if points == 0 || total <= 0.0 {
        return (requests, Vec::new());
    }
    // Largest remainders: each bucket gets its share of `points`, the leftovers going to
    // the buckets that lost most to rounding down.
    let mut below = 0.0;
    let mut shares: Vec<(usize, f64, f64, f64)> = Vec::with_capacity(sorted.len());
    let mut last_finite = 0.0;
    for (upper, cumulative) in &sorted {
        let count = cumulative - below;
        below = *cumulative;
        let lower = last_finite;
        if upper.is_finite() {
            last_finite = *upper;
        }
        let exact = count / total * points as f64;
        shares.push((exact.floor() as usize, exact.fract(), lower, *upper));
    }
    let given: usize = shares.iter().map(|share| share.0).sum();
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by(|&a, &b| shares[b].1.total_cmp(&shares[a].1));
    for &index in by_remainder.iter().take(points.saturating_sub(given)) {
        shares[index].0 += 1;
    }
    let mut sample = Vec::with_capacity(points);
    for (k, _, lower, upper) in shares {
        let upper = if upper.is_finite() { upper } else { lower };
        for j in 0..k {
            let at = lower + (j as f64 + 0.5) / k as f64 * (upper - lower);
            sample.push(at * 1_000.0);
        }
    }
    (requests, sample)
}

/// Where an element belongs: its cohort and route (`None` for a cohort label not ours).
fn place(element: &Element) -> Option<(CohortKind, RouteLabel)> {
    let kind = CohortKind::parse(element.labels.get("cohort")?)?;
    let route = RouteLabel::of(element.labels.get("route").map_or("", String::as_str));
    Some((kind, route))
}

/// The interval's sample from the two queries' answers: per route and overall, each
/// cohort's requests (its histogram's count), server errors and rebuilt latency sample.
pub fn interval_sample(latency_buckets: &[Element], server_errors: &[Element]) -> IntervalSample {
    let slot =
        |kind: CohortKind, route: RouteLabel| kind.index() * RouteLabel::COUNT + route.index();
    let slots = CohortKind::ALL.len() * RouteLabel::COUNT;
    let mut buckets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); slots];
    let mut overall_buckets: [HashMap<u64, (f64, f64)>; 2] = Default::default();
    for element in latency_buckets {
        let Some((kind, route)) = place(element) else {
            continue;
        };
        let Some(upper) = (element.labels.get("le")).and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        buckets[slot(kind, route)].push((upper, element.value));
        let summed = overall_buckets[kind.index()]
            .entry(upper.to_bits())
            .or_insert((upper, 0.0));
        summed.1 += element.value;
    }
    let mut errors = vec![0.0; slots];
    let mut overall_errors = [0.0; 2];
    for element in server_errors {
        if let Some((kind, route)) = place(element) {
            errors[slot(kind, route)] += element.value;
            overall_errors[kind.index()] += element.value;
        }
    }
    let cohort = |buckets: &[(f64, f64)], errors: f64, capacity: usize| {
        let (requests, sample) = sample_from_buckets(buckets, capacity);
        Cohort::counted(requests, errors.round() as u64, sample, capacity)
    };
    let routes = RouteLabel::all()
        .map(|route| {
            CohortKind::ALL.map(|kind| {
                let at = slot(kind, route);
                cohort(&buckets[at], errors[at], ROUTE_LATENCY_SAMPLE_CAPACITY)
            })
        })
        .collect();
    let overall = CohortKind::ALL.map(|kind| {
        let summed: Vec<(f64, f64)> = overall_buckets[kind.index()].values().copied().collect();
        cohort(
            &summed,
            overall_errors[kind.index()],
            LATENCY_SAMPLE_CAPACITY,
        )
    });
    IntervalSample::counted(overall, routes)
}

/// The cohorts of every proxy that `prometheus_url` scrapes, through its HTTP API.
pub struct PrometheusSource<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a PrometheusUrl,
    /// `rollout.analysis.prometheus_selector`.
    pub selector: &'a str,
    pub timeout: Duration,
}

impl PrometheusSource<'_> {
    /// One instant query, evaluated at `at`.
    async fn query(&self, promql: &str, at: SystemTime) -> Result<Vec<Element>, SourceError> {
        let endpoint = self.url.query_endpoint();
        let unreachable = |error: reqwest::Error| SourceError::Unreachable {
            url: endpoint.clone(),
            message: error.to_string(),
        };
        let time = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let response = (self.client.get(&endpoint))
            .query(&[("query", promql), ("time", &format!("{time:.3}"))])
            .timeout(self.timeout)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        parse_vector(&endpoint, status, &body)
    }
}

#[async_trait]
impl CohortSource for PrometheusSource<'_> {
    async fn sample(&self, window: Window) -> Result<IntervalSample, SourceError> {
        let length = window.length();
        // A proxy Prometheus could not scrape in the window is missing from the sums: its
        // users' errors would go unseen, so the evaluation is inconclusive rather than judged.
        let missed = (self.query(&missed_scrapes_query(self.selector, length), window.end)).await?;
        if !missed.is_empty() {
            return Err(SourceError::Incomplete {
                instances: missed_instances(&missed).join(", "),
            });
        }
        let buckets =
            (self.query(&latency_buckets_query(self.selector, length), window.end)).await?;
        let errors = (self.query(&server_errors_query(self.selector, length), window.end)).await?;
        Ok(interval_sample(&buckets, &errors))
    }
}

/// The client the controller asks Prometheus with: no proxy from the environment (the
/// queries go to `prometheus_url` and nowhere else) and no redirects.
pub fn client() -> Result<reqwest::Client, SourceError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| SourceError::Client(error.to_string()))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::rollout::judge::{self, AnalysisSettings, Metric};
    use crate::rollout::metrics::cohort_latency_buckets;
    use crate::rollout::synthetic::LEGACY;
    use crate::rollout::{Outcome, stats};

    /// `n` latencies in milliseconds of the tests' legacy backend, `slower` times as long.
    fn latencies(n: usize, slower: f64, rng: &mut StdRng) -> Vec<f64> {
        let traffic = LEGACY.slower(slower);
        (0..n)
            .map(|_| traffic.response(rng).1.as_secs_f64() * 1_000.0)
            .collect()
    }

    const URL: &str = "http://127.0.0.1:9090/api/v1/query";

    #[test]
    fn the_queries_sum_every_proxys_series_over_the_window_within_the_selector() {
        assert_eq!(
            latency_buckets_query("", Duration::from_millis(2_500)),
            "sum by (cohort, route, le) \
             (increase(proxy_rollout_cohort_latency_seconds_bucket{}[2500ms]))"
        );
        assert_eq!(
            server_errors_query(r#"job="canary-proxy""#, Duration::from_secs(10)),
            "sum by (cohort, route) \
             (increase(proxy_rollout_cohort_server_errors_total{job=\"canary-proxy\"}[10000ms]))"
        );
        assert!(latency_buckets_query("", Duration::ZERO).ends_with("[1ms]))"));
    }

    #[test]
    fn a_target_scraped_unsuccessfully_in_the_window_is_named() {
        assert_eq!(
            missed_scrapes_query("job=\"canary-proxy\"", Duration::from_secs(10)),
            "min by (instance) (min_over_time(up{job=\"canary-proxy\"}[10000ms])) == 0 \
             or min by (instance) (up{job=\"canary-proxy\"}) == 0"
        );
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"10.0.0.2:9901"},"value":[1,"0"]},
            {"metric":{"instance":"10.0.0.1:9901"},"value":[1,"0"]}]}}"#;
        let answer = parse_vector("u", http::StatusCode::OK, body).expect("a vector");
        assert_eq!(
            missed_instances(&answer),
            vec!["10.0.0.1:9901".to_owned(), "10.0.0.2:9901".to_owned()]
        );
        assert!(missed_instances(&[]).is_empty(), "every scrape succeeded");
    }

    #[test]
    fn a_vector_answer_reads_as_labelled_counts() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"cohort":"canary","route":"/health","le":"0.001"},"value":[1700000000.5,"12.5"]},
            {"metric":{"cohort":"baseline","route":"/health","le":"+Inf"},"value":[1700000000.5,"3"]}
        ]}}"#;
        let elements = parse_vector(URL, StatusCode::OK, body).unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].labels["le"], "0.001");
        assert_eq!(elements[0].value, 12.5);
        assert_eq!(elements[1].labels["cohort"], "baseline");
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_vector(URL, StatusCode::OK, empty).unwrap(), []);
    }

    #[test]
    fn every_answer_that_is_not_a_vector_of_counts_is_an_error_of_its_kind() {
        use crate::rollout::source::SourceErrorKind::{Malformed, Refused};
        let cases: [(StatusCode, &[u8], _, &str); 7] = [
            (
                StatusCode::BAD_REQUEST,
                br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
                Refused,
                "bad_data: parse error at char 5",
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                b"<html>overloaded</html>",
                Refused,
                "overloaded",
            ),
            (StatusCode::OK, b"not json", Malformed, "expected"),
            (
                StatusCode::OK,
                br#"{"status":"success"}"#,
                Malformed,
                "without data",
            ),
            (
                StatusCode::OK,
                br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                Malformed,
                "matrix",
            ),
            (
                StatusCode::OK,
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
                Malformed,
                "NaN",
            ),
            (
                StatusCode::OK,
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#,
                Malformed,
                "+Inf",
            ),
        ];
        for (status, body, kind, says) in cases {
            let error = parse_vector(URL, status, body).unwrap_err();
            assert_eq!(error.kind(), kind, "{error}");
            let message = error.to_string();
            assert!(message.contains(says) && message.contains(URL), "{message}");
        }
    }

    #[test]
    fn a_sample_rebuilt_from_buckets_keeps_the_counts_and_spreads_each_bucket_evenly() {
        // 4 in (0, 1 ms], 2 in (1, 3 ms], 2 above the last bound; counts out of order.
        let buckets = [(0.003, 6.0), (f64::INFINITY, 8.0), (0.001, 4.0)];
        let (requests, sample) = sample_from_buckets(&buckets, 100);
        assert_eq!(requests, 8);
        let expected = [0.125, 0.375, 0.625, 0.875, 1.5, 2.5, 3.0, 3.0];
        assert_eq!(sample.len(), expected.len());
        for (got, want) in sample.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{sample:?}");
        }
        // Over capacity: the shares are kept, the total is the histogram's.
        let (requests, sample) = sample_from_buckets(&[(0.001, 3_000.0), (0.002, 4_000.0)], 400);
        assert_eq!((requests, sample.len()), (4_000, 400));
        assert_eq!(sample.iter().filter(|ms| **ms <= 1.0).count(), 300);
        // Extrapolated counts that step down are made cumulative; nothing counted, no sample.
        let (requests, sample) = sample_from_buckets(&[(0.001, 2.4), (0.002, 2.2)], 100);
        assert_eq!((requests, sample.len()), (2, 2));
        assert_eq!(sample_from_buckets(&[], 10), (0, Vec::new()));
        assert_eq!(sample_from_buckets(&[(0.001, 0.3)], 10), (0, Vec::new()));
    }

    /// The cumulative buckets of `latencies_ms` over the exported bounds.
    fn histogram(latencies_ms: &[f64]) -> Vec<(f64, f64)> {
        let bounds = cohort_latency_buckets();
        (bounds.iter().copied().chain([f64::INFINITY]))
            .map(|upper| {
                let below = latencies_ms.iter().filter(|ms| **ms / 1_000.0 <= upper);
                (upper, below.count() as f64)
            })
            .collect()
    }

    #[test]
    fn the_rebuilt_samples_quantiles_are_within_a_bucket_of_the_real_ones() {
        let real = latencies(5_000, 1.0, &mut StdRng::seed_from_u64(13));
        let (requests, rebuilt) = sample_from_buckets(&histogram(&real), LATENCY_SAMPLE_CAPACITY);
        assert_eq!(requests, 5_000);
        for tau in [0.5, 0.99] {
            let (want, got) = (
                stats::quantile(&real, tau).unwrap(),
                stats::quantile(&rebuilt, tau).unwrap(),
            );
            // One bucket is a factor of √2.
            assert!(
                got / want < 1.2 && want / got < 1.2,
                "q{tau}: {got} against {want}"
            );
        }
    }

    /// The judge on cohorts rebuilt from histograms of `n` requests each, new's latencies
    /// `slower` times legacy's.
    fn judged(n: usize, slower: f64, seed: u64) -> judge::Judgement {
        let mut rng = StdRng::seed_from_u64(seed);
        let baseline = latencies(n, 1.0, &mut rng);
        let canary = latencies(n, slower, &mut rng);
        let rebuilt = |latencies: &[f64]| {
            let (requests, sample) =
                sample_from_buckets(&histogram(latencies), LATENCY_SAMPLE_CAPACITY);
            Cohort::counted(requests, 0, sample, LATENCY_SAMPLE_CAPACITY)
        };
        let settings = AnalysisSettings {
            min_requests: 100,
            ..AnalysisSettings::default()
        };
        judge::judge(&rebuilt(&canary), &rebuilt(&baseline), &settings)
    }

    #[test]
    fn the_judge_on_rebuilt_samples_passes_alike_cohorts_and_fails_a_much_slower_one() {
        let median = |judgement: &judge::Judgement| {
            (judgement.verdicts.iter())
                .find(|v| v.metric == Metric::LatencyMedian)
                .map(|v| v.outcome)
        };
        let alike_failed = (0..20)
            .filter(|seed| median(&judged(2_000, 1.0, *seed)) == Some(Outcome::Fail))
            .count();
        assert_eq!(alike_failed, 0, "alike cohorts failed the median");
        let slow_failed = (0..20)
            .filter(|seed| median(&judged(2_000, 1.5, *seed)) == Some(Outcome::Fail))
            .count();
        assert_eq!(slow_failed, 20, "a 50 % slower canary passed the median");
    }

    fn element(labels: &[(&str, &str)], value: f64) -> Element {
        Element {
            labels: (labels.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }

    #[test]
    fn an_interval_sample_counts_each_cohort_per_route_and_overall() {
        let verify = common::routes::VERIFY;
        let health = common::routes::HEALTH;
        let buckets = [
            element(
                &[("cohort", "canary"), ("route", verify), ("le", "0.001")],
                30.0,
            ),
            element(
                &[("cohort", "canary"), ("route", verify), ("le", "+Inf")],
                40.0,
            ),
            element(
                &[("cohort", "canary"), ("route", health), ("le", "0.001")],
                9.6,
            ),
            element(
                &[("cohort", "canary"), ("route", health), ("le", "+Inf")],
                10.4,
            ),
            element(
                &[("cohort", "baseline"), ("route", verify), ("le", "+Inf")],
                50.0,
            ),
            // Not a cohort of ours, and an unreadable bound: both left out.
            element(
                &[("cohort", "shadow"), ("route", verify), ("le", "+Inf")],
                99.0,
            ),
            element(
                &[("cohort", "canary"), ("route", verify), ("le", "x")],
                99.0,
            ),
        ];
        let errors = [
            element(&[("cohort", "canary"), ("route", verify)], 10.2),
            element(&[("cohort", "baseline"), ("route", verify)], 0.0),
        ];
        let sample = interval_sample(&buckets, &errors);
        assert_eq!(sample.canary().requests(), 50);
        assert_eq!(sample.canary().server_errors(), 10);
        assert_eq!(sample.canary().latency_sample_ms().len(), 50);
        assert_eq!(sample.baseline().requests(), 50);
        let routes: Vec<_> = (sample.routes())
            .map(|(route, canary, baseline)| {
                let counts = |c: &Cohort| (c.requests(), c.server_errors());
                (route.label(), counts(canary), counts(baseline))
            })
            .collect();
        assert_eq!(
            routes,
            [(verify, (40, 10), (50, 0)), (health, (10, 0), (0, 0))]
        );
        let empty = interval_sample(&[], &[]);
        assert_eq!((empty.canary().requests(), empty.routes().count()), (0, 0));
    }
}
