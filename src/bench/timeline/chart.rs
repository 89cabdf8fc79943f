//! A timeline drawn as an SVG chart: rows per second (left axis) and the p99 and longest ack
//! latency of each second (right axis), over bands that mark the migration's phases. Plain
//! SVG 1.1 text, no scripts or fonts to fetch, so it renders in a browser and on GitHub.

use super::SecondRow;
use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 50.0;
const TICKS: u32 = 5;

const ROWS_COLOUR: &str = "#1d4ed8";
const P99_COLOUR: &str = "#dc2626";
const MAX_COLOUR: &str = "#f59e0b";

/// The fill of a phase's band.
fn band_colour(phase: &str) -> &'static str {
    match phase {
        "copying" => "#dbeafe",
        "cleaning" => "#dcfce7",
        _ => "#fee2e2",
    }
}

/// The chart of `rows` under `title`.
pub fn svg(rows: &[SecondRow], title: &str) -> String {
    let seconds = rows.len().max(1) as f64;
    let rows_top = nice_ceiling(rows.iter().map(|r| r.rows as f64).fold(0.0, f64::max));
    let latency_top = nice_ceiling(rows.iter().map(|r| r.max_ms).fold(0.0, f64::max));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |second: f64| LEFT + second / seconds * plot_width;
    let y = |value: f64, top: f64| TOP + plot_height - value / top * plot_height;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (phase, first, last) in phase_runs(rows) {
        let (from, to) = (x(first as f64), x(last as f64 + 1.0));
        let _ = writeln!(
            out,
            r#"<rect x="{from:.1}" y="{TOP}" width="{:.1}" height="{plot_height}" fill="{}"/>"#,
            to - from,
            band_colour(phase)
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" fill="#374151">{phase}</text>"##,
            from + 4.0,
            TOP + 14.0
        );
    }
    axes(&mut out, rows.len(), (rows_top, latency_top));
    let rows_line: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (x(r.second as f64 + 0.5), y(r.rows as f64, rows_top)))
        .collect();
    polyline(&mut out, &rows_line, ROWS_COLOUR, 2.0);
    let p99_line: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (x(r.second as f64 + 0.5), y(r.p99_ms, latency_top)))
        .collect();
    polyline(&mut out, &p99_line, P99_COLOUR, 1.5);
    let max_line: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (x(r.second as f64 + 0.5), y(r.max_ms, latency_top)))
        .collect();
    polyline(&mut out, &max_line, MAX_COLOUR, 1.0);
    legend(&mut out);
    out.push_str("</svg>\n");
    out
}

/// The axes, grid lines and tick labels: seconds below, rows/s left, latency right.
fn axes(out: &mut String, seconds: usize, (rows_top, latency_top): (f64, f64)) {
    let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let plot_height = HEIGHT - TOP - BOTTOM;
    for tick in 0..=TICKS {
        let fraction = f64::from(tick) / f64::from(TICKS);
        let at = bottom - fraction * plot_height;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{right}" y2="{at:.1}" stroke="#e5e7eb"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end" fill="{ROWS_COLOUR}">{}</text>"#,
            LEFT - 6.0,
            at + 4.0,
            format_count(rows_top * fraction)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" fill="{P99_COLOUR}">{}</text>"#,
            right + 6.0,
            at + 4.0,
            format_count(latency_top * fraction)
        );
    }
    let step = nice_ceiling(seconds as f64 / 10.0).max(1.0) as usize;
    for second in (0..=seconds).step_by(step) {
        let at = LEFT + second as f64 / seconds.max(1) as f64 * (WIDTH - LEFT - RIGHT);
        let _ = writeln!(
            out,
            r#"<text x="{at:.1}" y="{}" text-anchor="middle">{second}</text>"#,
            bottom + 16.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{plot_height}" fill="none" stroke="#6b7280"/>"##,
        WIDTH - LEFT - RIGHT
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" fill="{ROWS_COLOUR}">rows/s</text>"#,
        TOP + plot_height / 2.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle" fill="{P99_COLOUR}">ack latency (ms)</text>"#,
        WIDTH - 14.0,
        TOP + plot_height / 2.0
    );
}

fn legend(out: &mut String) {
    let entries = [
        (ROWS_COLOUR, "rows/s"),
        (P99_COLOUR, "p99 latency"),
        (MAX_COLOUR, "max latency"),
    ];
    let mut at = WIDTH - RIGHT - 330.0;
    for (colour, label) in entries {
        let _ = writeln!(
            out,
            r#"<line x1="{at:.1}" y1="36" x2="{:.1}" y2="36" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="40">{label}</text>"#,
            at + 18.0,
            at + 22.0
        );
        at += 110.0;
    }
}

fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str, width: f64) {
    let points: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}"/>"#,
        points.join(" ")
    );
}

/// Runs of consecutive seconds with the same phase: the phase, its first and last second.
fn phase_runs(rows: &[SecondRow]) -> Vec<(&str, u64, u64)> {
    let mut runs: Vec<(&str, u64, u64)> = Vec::new();
    for row in rows {
        let Some(phase) = row.phase.as_deref() else {
            continue;
        };
        match runs.last_mut() {
            Some((last, _, end)) if *last == phase && *end + 1 == row.second => *end = row.second,
            _ => runs.push((phase, row.second, row.second)),
        }
    }
    runs
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for 0).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * power)
}

/// `12500` as `12.5k`, `3000000` as `3M`.
fn format_count(value: f64) -> String {
    let (scaled, suffix) = match value {
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    let text = format!("{scaled:.1}");
    format!("{}{suffix}", text.trim_end_matches(".0"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(second: u64, rows: u64, phase: Option<&str>) -> SecondRow {
        SecondRow {
            second,
            rows,
            errors: 0,
            p50_ms: 5.0,
            p99_ms: 20.0,
            max_ms: 30.0,
            phase: phase.map(String::from),
        }
    }

    #[test]
    fn phases_become_bands_and_every_second_a_point() {
        let rows = vec![
            row(0, 100, None),
            row(1, 100, Some("copying")),
            row(2, 80, Some("copying")),
            row(3, 90, Some("cleaning")),
        ];
        assert_eq!(phase_runs(&rows), [("copying", 1, 2), ("cleaning", 3, 3)]);
        let chart = svg(&rows, "adding s2 <live>");
        assert!(chart.starts_with("<svg "), "{chart}");
        assert!(chart.contains("adding s2 &lt;live&gt;"));
        assert_eq!(chart.matches("<polyline").count(), 3);
        assert_eq!(
            chart.matches(r##"fill="#dbeafe""##).count(),
            1,
            "one copying band"
        );
        let rows_line = chart
            .lines()
            .find(|l| l.contains(ROWS_COLOUR) && l.contains("<polyline"))
            .unwrap();
        assert_eq!(
            rows_line.matches(',').count(),
            4,
            "a point per second: {rows_line}"
        );
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(74_555.0), 100_000.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(format_count(50_000.0), "50k");
        assert_eq!(format_count(12_500.0), "12.5k");
        assert_eq!(format_count(40.0), "40");
    }
}
