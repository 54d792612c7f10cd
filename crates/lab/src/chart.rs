//! A two-panel SVG chart of a benchmark run: throughput per second against the limits
//! it is measured by, and debit-to-credit latency per second.

use std::fmt::Write;

/// What the chart draws; every series has one value per entry of `seconds`.
pub(crate) struct Chart {
    pub title: String,
    pub seconds: Vec<f64>,
    pub throughput: Vec<f64>,
    /// Horizontal lines across the throughput panel: label and value.
    pub limits: Vec<(&'static str, f64)>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
}

const WIDTH: f64 = 900.0;
const PANEL: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const COLOURS: [&str; 4] = ["#2563eb", "#6b7280", "#16a34a", "#dc2626"];
/// The dashed lines of the limits, in the order given.
const LIMIT_COLOURS: [&str; 3] = ["#16a34a", "#6b7280", "#d97706"];

/// The chart as an SVG document.
pub(crate) fn svg(chart: &Chart) -> String {
    let height = 2.0 * PANEL + 150.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{}</text>\n",
        escape(&chart.title)
    );
    let max_second = chart.seconds.iter().copied().fold(1.0, f64::max);
    let top = 40.0;
    let throughput_max = chart
        .throughput
        .iter()
        .copied()
        .chain(chart.limits.iter().map(|(_, v)| *v))
        .fold(1.0, f64::max)
        * 1.1;
    panel(&mut out, top, "transfers credited / s", throughput_max, max_second);
    line(
        &mut out,
        &chart.seconds,
        &chart.throughput,
        (top, throughput_max, max_second),
        COLOURS[0],
    );
    let mut legend = vec![("credited / s", COLOURS[0])];
    for (i, (label, value)) in chart.limits.iter().enumerate() {
        let colour = LIMIT_COLOURS[i % LIMIT_COLOURS.len()];
        let y = top + PANEL - value / throughput_max * PANEL;
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-dasharray=\"6 4\"/>",
            WIDTH - RIGHT
        );
        legend.push((label, colour));
    }
    let top2 = top + PANEL + 50.0;
    let latency_max = chart.p99_ms.iter().copied().fold(1.0, f64::max) * 1.1;
    panel(&mut out, top2, "debit → credit latency, ms", latency_max, max_second);
    line(
        &mut out,
        &chart.seconds,
        &chart.p50_ms,
        (top2, latency_max, max_second),
        COLOURS[0],
    );
    line(
        &mut out,
        &chart.seconds,
        &chart.p99_ms,
        (top2, latency_max, max_second),
        COLOURS[3],
    );
    legend.push(("p50 latency", COLOURS[0]));
    legend.push(("p99 latency", COLOURS[3]));
    let legend_y = top2 + PANEL + 44.0;
    let mut x = LEFT;
    for (label, colour) in legend {
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"{legend_y}\">{}</text>",
            legend_y - 10.0,
            x + 16.0,
            escape(label)
        );
        x += 30.0 + 7.0 * label.len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

/// A panel's frame, its label, and its scale: zero and `max` on the left, seconds below.
fn panel(out: &mut String, top: f64, label: &str, max: f64, max_second: f64) {
    let (bottom, right) = (top + PANEL, WIDTH - RIGHT);
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#d1d5db\"/>\n\
         <text x=\"{LEFT}\" y=\"{}\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text>\n\
         <text x=\"{}\" y=\"{bottom}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{right}\" y=\"{}\" text-anchor=\"end\">{max_second:.0} s</text>",
        right - LEFT,
        top - 6.0,
        escape(label),
        LEFT - 6.0,
        top + 10.0,
        LEFT - 6.0,
        bottom + 16.0
    );
}

/// A polyline of `values` over `seconds` in the panel at `top` scaled to `max`.
fn line(out: &mut String, seconds: &[f64], values: &[f64], (top, max, max_second): (f64, f64, f64), colour: &str) {
    let points: Vec<String> = seconds
        .iter()
        .zip(values)
        .map(|(second, value)| {
            let x = LEFT + second / max_second * (WIDTH - RIGHT - LEFT);
            let y = top + PANEL - value / max * PANEL;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
        points.join(" ")
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_series_and_limit_as_well_formed_svg() {
        let chart = Chart {
            title: "a < b".into(),
            seconds: vec![0.0, 1.0, 2.0],
            throughput: vec![10.0, 20.0, 15.0],
            limits: vec![("db", 40.0), ("broker", 30.0)],
            p50_ms: vec![1.0, 2.0, 3.0],
            p99_ms: vec![5.0, 6.0, 7.0],
        };
        let svg = svg(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(svg.contains("a &lt; b"));
    }
}
