//! The transfer tables' plot: each method's metric in-domain and averaged over the zero-shot sets, each with its
//! 95% confidence interval over seeds, as PNG and SVG; the axis says the metric and its direction. Text uses DejaVu Sans from the system (Debian's fonts-dejavu-core); without it the
//! plot is skipped with a warning, the table is unaffected.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use tram_task::Metric;

use crate::summary::Summary;
use crate::trust_region::Curve;

const FONT_PATHS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

fn register() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok()).is_some_and(|bytes| {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// (label, in-domain values, zero-shot-mean values) per method, as the metric is shown (accuracy in %).
pub type Series = Vec<(String, Vec<f64>, Vec<f64>)>;

/// The series of each (label, method id) from the runs.
pub fn series(entries: &[(String, String)], metric: Metric, summaries: &[Summary]) -> Series {
    entries
        .iter()
        .map(|(label, id)| {
            let runs: Vec<&Summary> = summaries.iter().filter(|s| &s.method_id == id).collect();
            let in_domain = runs.iter().filter_map(|s| s.in_domain()).map(|e| metric.shown(e.value)).collect();
            let zs = runs.iter().map(|s| metric.shown(s.zero_shot_mean())).filter(|v| v.is_finite()).collect();
            (label.clone(), in_domain, zs)
        })
        .collect()
}

fn mean_ci(v: &[f64]) -> (f64, f64) {
    let ci = tram_stats::ci95_half_width(v);
    (tram_stats::mean(v), if ci.is_nan() { 0.0 } else { ci })
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    metric: Metric,
    data: &Series,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let all: Vec<f64> =
        data.iter().flat_map(|(_, a, b)| a.iter().chain(b)).copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let pad = ((hi - lo) * 0.25).max(1.0);
    let n = data.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (lo - pad)..(hi + pad))
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                data[i as usize].0.clone()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 13))
        .y_desc(format!("{} {}", metric.label(), metric.arrow()))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (k, (name, color, shift)) in [("in-domain", BLUE, -0.12), ("zero-shot mean", RED, 0.12)].into_iter().enumerate()
    {
        let pts: Vec<(f64, f64, f64)> = data
            .iter()
            .enumerate()
            .filter(|(_, (_, a, b))| !(if k == 0 { a } else { b }).is_empty())
            .map(|(i, (_, a, b))| {
                let (m, ci) = mean_ci(if k == 0 { a } else { b });
                (i as f64 + shift, m, ci)
            })
            .collect();
        for &(x, y, ci) in &pts {
            chart
                .draw_series(LineSeries::new([(x, y - ci), (x, y + ci)], color.stroke_width(2)))
                .map_err(|e| anyhow!("{e:?}"))?;
        }
        chart
            .draw_series(pts.iter().map(|&(x, y, _)| Circle::new((x, y), 4, color.filled())))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// A figure that can be drawn on any plotters backend (the PNG and the SVG of one plot).
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Writes `<stem>.png` and `<stem>.svg` of `figure` at `size` (each atomically); returns false (after a warning)
/// when no font is available.
fn write_figure(stem: &Path, size: (u32, u32), figure: &impl Figure) -> Result<bool> {
    if !register() {
        tracing::warn!("no DejaVu Sans font found ({}); skipping the plot", FONT_PATHS.join(", "));
        return Ok(false);
    }
    crate::atomic::write_with(&stem.with_extension("png"), |tmp| {
        // The bitmap backend picks the encoder from the extension; the name stays this process's own, since
        // sweeps sharing a results folder may draw the same plot at once.
        let png = PathBuf::from(format!("{}.png", tmp.display()));
        let drawn = figure.draw(BitMapBackend::new(&png, size).into_drawing_area()).and_then(|()| {
            std::fs::rename(&png, tmp).with_context(|| format!("renaming {} to {}", png.display(), tmp.display()))
        });
        if drawn.is_err() {
            std::fs::remove_file(&png).ok();
        }
        drawn
    })?;
    crate::atomic::write_with(&stem.with_extension("svg"), |tmp| {
        figure.draw(SVGBackend::new(tmp, size).into_drawing_area())
    })?;
    Ok(true)
}

struct Transfer<'a> {
    title: &'a str,
    metric: Metric,
    data: &'a Series,
}

impl Figure for Transfer<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw(root, self.title, self.metric, self.data)
    }
}

/// Writes `<stem>.png` and `<stem>.svg` (each atomically); returns false (after a warning) when no font is
/// available or there is no finite value to plot.
pub fn transfer_plot(stem: &Path, title: &str, metric: Metric, data: &Series) -> Result<bool> {
    // No value to place (every run diverged, or none evaluated): there is no axis to draw.
    if !data.iter().flat_map(|(_, a, b)| a.iter().chain(b)).any(|v| v.is_finite()) {
        tracing::warn!("no finite value to plot; skipping {}", stem.with_extension("png").display());
        return Ok(false);
    }
    let width = (140 * data.len() as u32).clamp(900, 1800);
    write_figure(stem, (width, 560), &Transfer { title, metric, data })
}

/// One method's line in a panel: its colour index (the same in both panels), label and `(step, value)` points.
type Line = (usize, String, Vec<(f64, f64)>);

/// One panel of the trust-region plot: a line per method, log-scaled (a value ≤ 0 cannot be placed and
/// is left out: TRAM-θ_{t−1}'s d at step 0 is 0).
fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let all: Vec<&(f64, f64)> = lines.iter().flat_map(|(_, _, p)| p).collect();
    if all.is_empty() {
        area.titled(&format!("{title}: no method measures it"), ("sans-serif", 16)).map_err(|e| anyhow!("{e:?}"))?;
        return Ok(());
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, ((lo / 2.0)..(hi * 2.0)).log_scale())
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, label, points) in lines {
        let color = Palette99::pick(*i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

fn draw_trust_region<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[Curve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| anyhow!("{e:?}"))?;
    // A method keeps its colour in both panels.
    let lines = |f: &dyn Fn(&Curve) -> &Vec<(u64, f64)>| -> Vec<Line> {
        curves
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (i, c.label.clone(), f(c).iter().filter(|p| p.1 > 0.0).map(|&(s, v)| (s as f64, v)).collect())
            })
            .filter(|(_, _, p): &Line| !p.is_empty())
            .collect()
    };
    let panels = root.split_evenly((1, 2));
    draw_curves(&panels[0], "trust-region distance d", "d (median over seeds)", &lines(&|c| &c.divergence))?;
    draw_curves(&panels[1], "perturbation norm ‖ε‖", "‖ε‖ (median over seeds)", &lines(&|c| &c.eps_norm))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

struct TrustRegion<'a> {
    title: &'a str,
    curves: &'a [Curve],
}

impl Figure for TrustRegion<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, plotters::coord::Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        draw_trust_region(root, self.title, self.curves)
    }
}

/// Writes `<stem>.png` and `<stem>.svg` of each method's d and ‖ε‖ over training (medians over seeds, log scale);
/// returns false (after a warning) when no font is available, and false when no method has a positive value to draw.
pub fn trust_region_plot(stem: &Path, title: &str, curves: &[Curve]) -> Result<bool> {
    let positive = |p: &[(u64, f64)]| p.iter().any(|q| q.1 > 0.0);
    if !curves.iter().any(|c| positive(&c.divergence) || positive(&c.eps_norm)) {
        return Ok(false);
    }
    write_figure(stem, (1400, 560), &TrustRegion { title, curves })
}
