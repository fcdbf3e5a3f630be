//! The plot of a `--sweep`: deliveries per second per member against the
//! message size, one line per ordering and one for the raw TCP baseline,
//! a panel per sender pattern. SVG, with text left to the viewer's fonts, so
//! that drawing it needs no font library on this machine.

use std::path::Path;

use plotters::prelude::*;

/// Pixels of the whole picture.
const PLOT_SIZE: (u32, u32) = (1200, 520);

/// One colour per line, in the order of [`lines`].
const COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(90, 90, 90),
];

/// The lines of one panel: (name, points as (log2 size, msgs/s)).
fn lines(rows: &[serde_json::Value], senders: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mine: Vec<&serde_json::Value> = rows.iter().filter(|r| r["senders"] == senders).collect();
    let point = |r: &serde_json::Value, field: &str| {
        let size = r["size"].as_f64().unwrap_or(1.0).max(1.0);
        (size.log2(), r[field].as_f64().unwrap_or(0.0).max(1.0))
    };
    let mut out = Vec::new();
    for o in ["fifo", "causal", "total", "safe"] {
        let pts = mine
            .iter()
            .filter(|r| r["ordering"] == o)
            .map(|r| point(r, "msgs_per_sec"))
            .collect();
        out.push((format!("troupe {o}"), pts));
    }
    // One baseline per size: every ordering's row carries the same one.
    let mut base: Vec<(f64, f64)> = Vec::new();
    for r in &mine {
        let p = point(r, "baseline_msgs_per_sec");
        if !base.iter().any(|b| b.0 == p.0) {
            base.push(p);
        }
    }
    base.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.push(("raw TCP mesh".to_string(), base));
    out
}

fn size_label(log2: &f64) -> String {
    let bytes = 2f64.powf(log2.round());
    if (log2 - log2.round()).abs() > 1e-6 {
        String::new()
    } else if bytes >= 1024.0 {
        format!("{} KiB", bytes / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// Draws the sweep's rows into an SVG file at `path`.
pub(super) fn write_svg(path: &Path, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot draw {}: {e}", path.display());
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| {
            [
                r["msgs_per_sec"].as_f64(),
                r["baseline_msgs_per_sec"].as_f64(),
            ]
        })
        .flatten()
        .filter(|x| *x > 0.0)
        .collect();
    let y_min = all.iter().copied().fold(f64::INFINITY, f64::min).min(1e3) / 2.0;
    let y_max = all.iter().copied().fold(1e4, f64::max) * 2.0;
    let (x_min, x_max) = rows
        .iter()
        .filter_map(|r| r["size"].as_f64())
        .map(|s| s.max(1.0).log2())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let (x_min, x_max) = if x_min <= x_max {
        (x_min - 0.5, x_max + 0.5)
    } else {
        (5.0, 15.0)
    };

    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            "troupe bench --sweep: deliveries per second per member",
            ("sans-serif", 22),
        )
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    for (panel, senders) in panels.iter().zip(["all", "one"]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("senders: {senders}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_min..x_max, (y_min..y_max).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("message size")
            .y_desc("deliveries/s per member")
            .x_label_formatter(&size_label)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        for ((name, pts), colour) in lines(rows, senders).into_iter().zip(COLOURS) {
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, colour.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sweep_rows_draw_an_svg_with_every_line() {
        let mut rows = Vec::new();
        for senders in ["all", "one"] {
            for size in [64, 1024, 16384] {
                for o in ["fifo", "causal", "total", "safe"] {
                    rows.push(json!({
                        "ordering": o, "size": size, "senders": senders,
                        "msgs_per_sec": 1e5 / (size as f64).sqrt(),
                        "baseline_msgs_per_sec": 1e6 / (size as f64).sqrt(),
                    }));
                }
            }
        }
        let path = std::env::temp_dir().join(format!("troupe-plot-{}.svg", std::process::id()));
        write_svg(&path, &rows).expect("draws");
        let svg = std::fs::read_to_string(&path).expect("written");
        let _ = std::fs::remove_file(&path);
        assert!(svg.starts_with("<svg"));
        for label in ["troupe total", "raw TCP mesh", "1 KiB", "senders: one"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }
}
