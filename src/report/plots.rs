//! The report's plots, drawn with plotters as SVG text: line charts (the percentile spectrum,
//! latency over time, figures against fan-out) and horizontal bar charts (cost per connection
//! and per event). Logarithmic axes are drawn in log10 space with labels at whole decades, so
//! every chart has the same coordinate type and one drawing routine.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Chart size in pixels (the HTML scales it to the page width).
const SIZE: (u32, u32) = (920, 400);

/// The colour of a transport's series, as the transport declares it.
pub fn colour(transport: crate::transport::Transport) -> RGBColor {
    let c = transport.spec().colour;
    RGBColor(c.0, c.1, c.2)
}

/// One axis: what it shows, whether it is logarithmic, and how its values read.
#[derive(Clone, Copy)]
pub struct Axis {
    /// Axis title.
    pub title: &'static str,
    /// Logarithmic (values must be positive).
    pub log: bool,
    /// How a value is labelled.
    pub label: fn(f64) -> String,
}

/// A line on a chart.
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Its colour.
    pub colour: RGBColor,
    /// Points (x, y) in data units.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
pub struct LineChart {
    /// Title drawn on the chart.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The lines.
    pub series: Vec<Series>,
    /// Where the legend goes (where the lines are not).
    pub legend: SeriesLabelPosition,
    /// Spans of the horizontal axis to shade (when a fault was on); a span of no width is
    /// drawn as a thin band.
    pub shaded: Vec<(f64, f64)>,
}

/// Draws a line chart as an SVG document.
pub fn line_chart(chart: &LineChart) -> anyhow::Result<String> {
    let to_axis = |axis: &Axis, v: f64| if axis.log { v.max(1e-9).log10() } else { v };
    let series: Vec<(&Series, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let points = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.y.log || *y > 0.0))
                .map(|&(x, y)| (to_axis(&chart.x, x), to_axis(&chart.y, y)))
                .collect();
            (s, points)
        })
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (x_range, y_range) = bounds(all);
    let x_coord = axis_coord(x_range, chart.x.log);
    let y_coord = axis_coord(y_range, chart.y.log);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(x_coord, y_coord)?;
        let (x_axis, y_axis) = (chart.x, chart.y);
        let x_label = move |v: &f64| (x_axis.label)(if x_axis.log { 10f64.powf(*v) } else { *v });
        let y_label = move |v: &f64| (y_axis.label)(if y_axis.log { 10f64.powf(*v) } else { *v });
        plot.configure_mesh()
            .x_desc(chart.x.title)
            .y_desc(chart.y.title)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style(("sans-serif", 13))
            .draw()?;
        // Shade first, so the lines stay on top.
        let (x_lo, x_hi) = x_range;
        let thinnest = (x_hi - x_lo) / 400.0;
        let (y_lo, y_hi) = y_range;
        let shade = RGBColor(230, 80, 80).mix(0.18).filled();
        plot.draw_series(chart.shaded.iter().map(|&(start, end)| {
            let (start, end) = (to_axis(&chart.x, start), to_axis(&chart.x, end));
            let end = end.max(start + thinnest);
            Rectangle::new([(start, y_lo), (end, y_hi)], shade)
        }))?;
        for (s, points) in &series {
            let style = s.colour.stroke_width(2);
            plot.draw_series(LineSeries::new(points.iter().copied(), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        plot.configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .position(chart.legend.clone())
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// One bar per item, split into stacked segments (e.g. payload and overhead).
pub struct BarChart {
    /// Title drawn on the chart.
    pub title: String,
    /// What the bars measure.
    pub axis: Axis,
    /// Names of the segments, for the legend (one name: no legend).
    pub segments: Vec<&'static str>,
    /// Bars: label, colour, one value per segment.
    pub bars: Vec<(String, RGBColor, Vec<f64>)>,
}

/// Draws a horizontal bar chart as an SVG document.
pub fn bar_chart(chart: &BarChart) -> anyhow::Result<String> {
    let n = chart.bars.len().max(1);
    let longest = chart
        .bars
        .iter()
        .map(|(_, _, v)| v.iter().sum::<f64>())
        .fold(0.0, f64::max);
    // Room at the right for the value labels, and for the legend when there is one.
    let headroom = if chart.segments.len() > 1 { 1.6 } else { 1.18 };
    let x_max = if longest > 0.0 {
        longest * headroom
    } else {
        1.0
    };
    let x_coord = axis_coord((0.0, x_max), false);
    let names: Vec<String> = chart.bars.iter().map(|(name, _, _)| name.clone()).collect();
    // Bar i spans i..i+1 on the vertical axis, drawn top-down; its label sits at the middle.
    let y_coord = KeyedAxis {
        range: (0.0..n as f64).into(),
        keys: (0..n).map(|i| i as f64 + 0.5).collect(),
    };
    let height = (90 + 46 * n as u32).max(220);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(96)
            .build_cartesian_2d(x_coord, y_coord)?;
        let axis = chart.axis;
        let y_name = move |v: &f64| {
            let i = (n as f64 - v).floor() as usize;
            names.get(i).cloned().unwrap_or_default()
        };
        plot.configure_mesh()
            .disable_y_mesh()
            .x_desc(chart.axis.title)
            .x_label_formatter(&move |v: &f64| (axis.label)(*v))
            .y_label_formatter(&y_name)
            .light_line_style(RGBColor(240, 240, 240))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, (_, colour_at, values)) in chart.bars.iter().enumerate() {
            // Top-down: the first bar at the top.
            let (top, bottom) = (n as f64 - i as f64 - 0.2, n as f64 - i as f64 - 0.8);
            let mut start = 0.0;
            for (segment, value) in values.iter().enumerate() {
                let fill = if segment == 0 {
                    colour_at.filled()
                } else {
                    colour_at.mix(0.35).filled()
                };
                plot.draw_series(std::iter::once(Rectangle::new(
                    [(start, bottom), (start + value, top)],
                    fill,
                )))?;
                start += value;
            }
            let total: f64 = values.iter().sum();
            plot.draw_series(std::iter::once(Text::new(
                (axis.label)(total),
                (total + x_max * 0.01, (top + bottom) / 2.0 + 0.12),
                ("sans-serif", 13).into_font(),
            )))?;
        }
        if chart.segments.len() > 1 {
            for (segment, name) in chart.segments.iter().enumerate() {
                let fill = if segment == 0 {
                    RGBColor(90, 90, 90).filled()
                } else {
                    RGBColor(90, 90, 90).mix(0.35).filled()
                };
                plot.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                    .label(*name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], fill));
            }
            plot.configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// The smallest box holding every point, padded, never empty.
fn bounds<'a>(points: impl Iterator<Item = &'a (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x, mut y) = ((f64::MAX, f64::MIN), (f64::MAX, f64::MIN));
    for &(px, py) in points {
        x = (x.0.min(px), x.1.max(px));
        y = (y.0.min(py), y.1.max(py));
    }
    if x.0 > x.1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |(lo, hi): (f64, f64)| {
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        }
    };
    (pad(x), pad(y))
}

/// A linear axis whose labels and grid lines sit at chosen values.
struct KeyedAxis {
    range: RangedCoordf64,
    keys: Vec<f64>,
}

impl Ranged for KeyedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn range(&self) -> Range<f64> {
        self.range.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.range.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.max_num_points() == 0 {
            Vec::new()
        } else {
            self.keys.clone()
        }
    }
}

/// A range with labels at whole decades (log axes, in log10 space) or at round steps.
fn axis_coord((lo, hi): (f64, f64), log: bool) -> KeyedAxis {
    let (lo, hi) = if log {
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    } else {
        (lo.min(0.0), hi)
    };
    let step = if log {
        1.0
    } else {
        let raw = (hi - lo) / 6.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(raw)
    };
    let mut points = Vec::new();
    let mut v = (lo / step).ceil() * step;
    while v <= hi + step * 1e-9 && points.len() < 40 {
        points.push(v);
        v += step;
    }
    KeyedAxis {
        range: (lo..hi).into(),
        keys: points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chart is a well-formed SVG that carries its title and every series name.
    #[test]
    fn line_chart_is_svg_with_legend() {
        let svg = line_chart(&LineChart {
            title: "spectrum".into(),
            x: Axis {
                title: "x",
                log: false,
                label: |v| format!("{v}"),
            },
            y: Axis {
                title: "y",
                log: true,
                label: |v| format!("{v:.0}"),
            },
            series: vec![
                Series {
                    name: "alpha".into(),
                    colour: colour(crate::transport::Transport::ALL[0]),
                    points: vec![(0.0, 10.0), (1.0, 1000.0)],
                },
                Series {
                    name: "beta".into(),
                    colour: RGBColor(150, 150, 150),
                    points: vec![(0.0, 20.0), (1.0, 30.0)],
                },
            ],
            legend: SeriesLabelPosition::UpperLeft,
            shaded: vec![(0.25, 0.5)],
        })
        .unwrap();
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
        // The shaded span: a translucent band the height of the plot.
        assert!(svg.contains(r##"opacity="0.18" fill="#E65050""##));
        for text in ["spectrum", "alpha", "beta", "1000"] {
            // plotters writes each text element's content on a line of its own.
            assert!(svg.contains(&format!(">\n{text}\n<")), "{text} missing");
        }
    }

    /// Bars carry their labels and totals; an empty chart still draws.
    #[test]
    fn bar_chart_labels() {
        let svg = bar_chart(&BarChart {
            title: "bytes".into(),
            axis: Axis {
                title: "B",
                log: false,
                label: |v| format!("{v:.0}"),
            },
            segments: vec!["payload", "overhead"],
            bars: vec![
                (
                    "one".into(),
                    colour(crate::transport::Transport::ALL[0]),
                    vec![64.0, 80.0],
                ),
                ("two".into(), RGBColor(150, 150, 150), vec![64.0, 10.0]),
            ],
        })
        .unwrap();
        for text in ["one", "two", "144", "74", "payload", "overhead"] {
            assert!(svg.contains(&format!(">\n{text}\n<")), "{text} missing");
        }
        assert!(bar_chart(&BarChart {
            title: "t".into(),
            axis: Axis {
                title: "",
                log: false,
                label: |v| v.to_string()
            },
            segments: vec![],
            bars: vec![]
        })
        .is_ok());
    }
}
