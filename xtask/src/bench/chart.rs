//! `docs/benchmarks.svg`: CPU per event and memory per stream of every peer in the
//! steady scenarios, as grouped bars, with the bare-write floor as a line.

use super::figures::{med, thousands, Figure, CPU, MEM_KIB};
use super::peers::PEERS;
use super::results::Results;
use super::scenarios::Scenario;
use plotters::prelude::*;
use std::path::Path;

/// One colour per peer, in `PEERS` order.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Draws the chart as SVG: no fonts or system libraries needed to draw it.
pub fn chart(plan: &[Scenario], res: &Results, path: &Path) -> anyhow::Result<()> {
    let steady: Vec<usize> = (0..plan.len()).filter(|&i| plan[i].steady()).collect();
    let floor = res.floor_us();
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let figures: [(&str, Figure); 2] = [
        ("Server CPU per delivered event (µs)", CPU),
        ("Resident memory per open stream (KiB)", MEM_KIB),
    ];
    let width = 0.72 / PEERS.len() as f64;
    for (panel, (title, figure)) in panels.iter().zip(figures) {
        let values: Vec<Vec<Option<f64>>> = steady
            .iter()
            .map(|&si| {
                PEERS
                    .iter()
                    .map(|p| med(res.runs(si, p.id), figure))
                    .collect()
            })
            .collect();
        let mut top = values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(0.0f64, f64::max);
        let is_cpu = figure.label == CPU.label;
        if is_cpu {
            top = top.max(floor.unwrap_or(0.0));
        }
        // Headroom above the tallest bar keeps the legend clear of the bars.
        let top = if top > 0.0 { top * 1.5 } else { 1.0 };
        let names: Vec<String> = steady
            .iter()
            .map(|&si| format!("{} ({})", plan[si].name, thousands(plan[si].streams)))
            .collect();
        let groups = steady.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(-0.5f64..groups - 0.5, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(steady.len() + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        for (pi, (peer, color)) in PEERS.iter().zip(COLORS).enumerate() {
            let bars = values.iter().enumerate().filter_map(move |(g, v)| {
                let y = v[pi]?;
                let x0 = g as f64 - 0.36 + pi as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, y)],
                    color.filled(),
                ))
            });
            chart
                .draw_series(bars)?
                .label(peer.label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        if let (Some(f), true) = (floor, is_cpu) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(-0.5, f), (groups - 0.5, f)],
                    BLACK.stroke_width(2),
                )))?
                .label(format!("bare loopback write ({f:.1} µs)"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 10, y)], BLACK.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_has_a_colour() {
        assert!(COLORS.len() >= PEERS.len());
    }
}
