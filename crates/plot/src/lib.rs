//! Small dependency-free SVG line charts: the book's figures (Zipf's law, perplexity
//! per epoch) without pulling a plotting stack and its fonts into the build.

use std::fmt::Write as _;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with linear or logarithmic axes.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
}

struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
            let v = if log { v.log10() } else { v };
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if log {
            (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
        } else if hi - lo < 1e-12 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        Self { log, lo, hi }
    }

    /// Position in 0..=1, or None for values a log axis cannot show.
    fn frac(&self, v: f64) -> Option<f64> {
        let v = if self.log {
            (v > 0.0).then(|| v.log10())?
        } else {
            v
        };
        v.is_finite().then(|| (v - self.lo) / (self.hi - self.lo))
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            return (self.lo as i32..=self.hi as i32)
                .map(|k| (10f64.powi(k), format!("1e{k}")))
                .collect();
        }
        let raw = (self.hi - self.lo) / 6.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag);
        let mut ticks = Vec::new();
        let mut t = (self.lo / step).ceil() * step;
        while t <= self.hi + step * 1e-9 {
            ticks.push((t, format!("{}", (t / step).round() * step)));
            t += step;
        }
        ticks
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    pub fn to_svg(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::new(all().map(|p| p.0), self.log_x);
        let y = Axis::new(all().map(|p| p.1), self.log_y);
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |v: f64| x.frac(v).map(|f| LEFT + f * pw);
        let py = |v: f64| y.frac(v).map(|f| TOP + (1.0 - f) * ph);

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        for (v, label) in x.ticks() {
            if let Some(p) = px(v) {
                let _ = writeln!(
                    s,
                    r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#ddd"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                    TOP + ph,
                    TOP + ph + 16.0
                );
            }
        }
        for (v, label) in y.ticks() {
            if let Some(p) = py(v) {
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                    LEFT + pw,
                    LEFT - 6.0,
                    p + 4.0
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        // Legend in the top right, wide enough for the longest label (~7 px a character).
        let longest = self
            .series
            .iter()
            .map(|s| s.label.chars().count())
            .max()
            .unwrap_or(0);
        let lx = LEFT + pw - 40.0 - 7.0 * longest as f64;
        if !self.series.is_empty() {
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="white" fill-opacity="0.85"/>"#,
                lx - 6.0,
                TOP + 4.0,
                LEFT + pw - lx,
                16.0 * self.series.len() as f64 + 6.0
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .filter_map(|&(a, b)| Some(format!("{:.1},{:.1}", px(a)?, py(b)?)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
            let ly = TOP + 16.0 + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 20.0,
                lx + 26.0,
                ly + 4.0,
                escape(&series.label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axes_place_decades_and_skip_nonpositive_points() {
        let chart = Chart {
            title: "a<b".into(),
            log_x: true,
            log_y: true,
            series: vec![Series {
                label: "unigram".into(),
                points: vec![(1.0, 1000.0), (10.0, 10.0), (0.0, 5.0), (100.0, 1.0)],
            }],
            ..Default::default()
        };
        let svg = chart.to_svg();
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains(">1e0<") && svg.contains(">1e3<"), "{svg}");
        // x = 1 is the left edge, x = 100 the right edge; the 0.0 point is dropped.
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(line.matches(',').count(), 3, "{line}");
        assert!(line.contains(&format!("{LEFT:.1},{TOP:.1}")), "{line}");
    }

    #[test]
    fn linear_ticks_are_round_numbers() {
        let axis = Axis::new([1.0, 9.3].into_iter(), false);
        let labels: Vec<String> = axis.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["2", "4", "6", "8"]);
    }
}
