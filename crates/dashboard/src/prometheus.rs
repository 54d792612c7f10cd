//! Just enough of Prometheus' text format to read a bank's `GET /metrics`: samples by
//! name and label, and quantiles of a histogram's buckets.

use std::collections::BTreeMap;

/// One sample: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with any `_bucket`/`_sum`/`_count` suffix.
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of `text`; comment lines and lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let end = after.find('"')?;
        labels.insert(key.trim_start_matches(',').to_string(), after[..end].to_string());
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// The sum of every sample named `name` (over all label values).
pub fn total(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// The cumulative bucket counts of histogram `name`, by upper bound (`+Inf` last),
/// summed over every series.
pub fn buckets(samples: &[Sample], name: &str) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.name == bucket_name) {
        let Some(bound) = sample.labels.get("le").and_then(|le| match le.as_str() {
            "+Inf" => Some(f64::INFINITY),
            other => other.parse().ok(),
        }) else {
            continue;
        };
        by_bound.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += sample.value;
    }
    let mut buckets: Vec<(f64, f64)> = by_bound.into_values().collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile (0..1) of the observations between two readings of the same
/// histogram's cumulative buckets, as the upper bound of the bucket it falls in; `None`
/// when nothing was observed in between. Above the last finite bound it answers that bound.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let count_before = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, count)| *count)
    };
    let deltas: Vec<(f64, f64)> = after.iter().map(|(b, c)| (*b, c - count_before(*b))).collect();
    let observed = deltas.last()?.1;
    if observed <= 0.0 {
        return None;
    }
    let rank = q * observed;
    let mut last_finite = 0.0;
    for (bound, cumulative) in &deltas {
        if bound.is_finite() {
            last_finite = *bound;
        }
        if *cumulative >= rank {
            return Some(if bound.is_finite() { *bound } else { last_finite });
        }
    }
    Some(last_finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n# TYPE h histogram\n\
        h_bucket{bank=\"b1\",le=\"0.01\"} 1\nh_bucket{bank=\"b1\",le=\"0.1\"} 3\nh_bucket{bank=\"b1\",le=\"+Inf\"} 4\n\
        h_bucket{bank=\"b2\",le=\"0.01\"} 0\nh_bucket{bank=\"b2\",le=\"0.1\"} 0\nh_bucket{bank=\"b2\",le=\"+Inf\"} 0\n\
        c{bank=\"b1\",reason=\"a\"} 2\nc{bank=\"b1\",reason=\"b\"} 5\nplain 7\n";

    #[test]
    fn reads_samples_with_and_without_labels() {
        let samples = parse(TEXT);
        assert_eq!(total(&samples, "c"), 7.0);
        assert_eq!(total(&samples, "plain"), 7.0);
        let c = samples.iter().find(|s| s.name == "c").unwrap();
        assert_eq!(c.labels.get("reason").map(String::as_str), Some("a"));
    }

    #[test]
    fn sums_histogram_buckets_over_series_in_bound_order() {
        let buckets = buckets(&parse(TEXT), "h");
        assert_eq!(buckets, [(0.01, 1.0), (0.1, 3.0), (f64::INFINITY, 4.0)]);
    }

    #[test]
    fn quantiles_come_from_the_observations_between_two_readings() {
        let before = [(0.01, 1.0), (0.1, 1.0), (f64::INFINITY, 1.0)];
        let after = [(0.01, 1.0), (0.1, 9.0), (f64::INFINITY, 11.0)];
        // 10 new observations: 8 in (0.01, 0.1], 2 above 0.1.
        assert_eq!(quantile_between(&before, &after, 0.5), Some(0.1));
        assert_eq!(quantile_between(&before, &after, 0.99), Some(0.1));
        assert_eq!(quantile_between(&after, &after, 0.5), None);
    }
}
