//! A latency-by-percentile plot as a self-contained SVG, in the manner of
//! HdrHistogram's plotter: the x axis is log-scaled in "nines" (0%, 90%, 99%,
//! 99.9%, …) so the tail gets as much room as the median.

use std::fmt::Write;

use hdrhistogram::Histogram;

const W: f64 = 860.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Nines shown on the x axis: up to 99.999%.
const NINES: f64 = 5.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Renders one line per non-empty histogram (values in µs) against percentile.
pub fn latency_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let max_ms = series
        .iter()
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.0, f64::max)
        .max(0.001);
    let (y_max, y_step) = nice_axis(max_ms);
    let px = |nines: f64| LEFT + nines / NINES * (W - LEFT - RIGHT);
    let py = |ms: f64| H - BOTTOM - ms / y_max * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for i in 0..=NINES as usize {
        let x = px(i as f64);
        let label = match i {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim_float(v)
        );
        v += y_step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        for step in 0..=250 {
            let nines = step as f64 / 250.0 * NINES;
            let q = 1.0 - 10f64.powf(-nines);
            let ms = h.value_at_quantile(q) as f64 / 1000.0;
            let _ = write!(points, "{:.1},{:.1} ", px(nines), py(ms));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.trim_end()
        );
        let ly = TOP + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{lx2}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{tx}" y="{ty}">{}</text>"#,
            escape(name),
            lx = LEFT + 12.0,
            lx2 = LEFT + 36.0,
            tx = LEFT + 42.0,
            ty = ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round axis maximum and step (1, 2 or 5 × 10^k) with 4–10 steps.
fn nice_axis(max: f64) -> (f64, f64) {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn svg_has_a_line_per_series() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..1000 {
            a.record(v * 10).unwrap();
            b.record(v * 20).unwrap();
        }
        let svg = latency_svg(
            "t <1>",
            &[
                ("publish", &a),
                ("end-to-end", &b),
                ("empty", &new_histogram()),
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("99.9%"));
    }

    #[test]
    fn axis_is_round() {
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        assert_eq!(nice_axis(0.42), (0.5, 0.1));
    }
}
