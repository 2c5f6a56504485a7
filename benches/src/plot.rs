//! An SVG of latency percentiles (closed loop) per configuration, one panel per endpoint.

use std::path::Path;

use plotters::prelude::*;

use crate::plan::{Endpoint, Measurements};
use crate::report::summarise;

const COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

pub fn latency_svg(m: &Measurements, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    let percentiles = ["p50", "p90", "p99", "p99.9"];
    for (panel, endpoint) in panels.iter().zip(Endpoint::ALL) {
        let lines: Vec<(&str, [f64; 4])> = m
            .series
            .iter()
            .filter(|s| {
                s.endpoint == endpoint && matches!(s.mode, crate::load::Mode::Closed { .. })
            })
            .map(|s| {
                let x = summarise(&s.samples);
                (s.configuration, [x.p50, x.p90, x.p99, x.p999])
            })
            .collect();
        let max = lines
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.01f64, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} (closed loop)", endpoint.path()),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            // Linear from zero: every panel gets labelled ticks, and ratios read as distances.
            .build_cartesian_2d(0f64..3f64, 0f64..max * 1.15)?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                percentiles
                    .get(x.round() as usize)
                    .copied()
                    .unwrap_or("")
                    .to_owned()
            })
            .y_desc("latency (ms)")
            .draw()?;
        for (i, (name, values)) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(x, v)| (x as f64, *v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
