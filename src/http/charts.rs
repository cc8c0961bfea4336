//! The operator page's small pictures, drawn as inline SVG from the glance samples (no script, nothing
//! fetched). Pure functions: samples in, markup out; every text in them is a number or a fixed label.

use std::fmt::Write as _;

use super::glance::{MINUTES, Sample};
use crate::journal::JobState;

const W: usize = 360;
const H: usize = 80;
const BAR: usize = W / MINUTES;

const HEALTH_COLOURS: [(&str, &str); 4] = [
    ("healthy", "#2e7d32"),
    ("suspect", "#f9a825"),
    ("unhealthy", "#c62828"),
    ("missing", "#757575"),
];

fn svg(id: &str, label: &str, inner: &str) -> String {
    format!(
        "<svg id=\"{id}\" class=\"chart\" role=\"img\" aria-label=\"{label}\" width=\"{W}\" height=\"{}\" \
         viewBox=\"0 0 {W} {}\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"{W}\" height=\"{H}\" \
         fill=\"#fafafa\" stroke=\"#ddd\"/>{inner}</svg>",
        H + 14,
        H + 14
    )
}

/// The x of minute slot `i` when the last `n` samples are drawn right-aligned.
fn x_of(i: usize, n: usize) -> usize {
    (MINUTES - n.min(MINUTES) + i) * BAR
}

fn last(samples: &[Sample]) -> &[Sample] {
    &samples[samples.len().saturating_sub(MINUTES)..]
}

/// Coolify requests per minute against the budget (the dashed line).
pub fn budget(samples: &[Sample], budget: u32) -> String {
    let shown = last(samples);
    let top = u64::from(budget.max(1));
    let mut inner = String::new();
    for (i, s) in shown.iter().enumerate() {
        let h = (s.coolify_requests.min(top) as usize * H) / top as usize;
        let colour = if s.coolify_requests * 10 >= top * 9 {
            "#c62828"
        } else {
            "#1565c0"
        };
        let _ = write!(
            inner,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"{colour}\"><title>{} requests</title></rect>",
            x_of(i, shown.len()),
            H - h,
            BAR.saturating_sub(1).max(1),
            s.coolify_requests
        );
    }
    let now = shown.last().map(|s| s.coolify_requests).unwrap_or(0);
    let _ = write!(
        inner,
        "<line x1=\"0\" y1=\"1\" x2=\"{W}\" y2=\"1\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/>\
         <text x=\"2\" y=\"{}\" font-size=\"11\" fill=\"#333\">Coolify: {now} requests this minute of {budget}/min</text>",
        H + 12
    );
    svg("chart-budget", "Coolify requests per minute", &inner)
}

/// Jobs by state, now.
pub fn jobs(samples: &[Sample]) -> String {
    let counts = samples.last().map(|s| s.jobs.clone()).unwrap_or_default();
    let max = counts.values().copied().max().unwrap_or(0).max(1);
    let row = H / JobState::ALL.len();
    let mut inner = String::new();
    for (i, state) in JobState::ALL.iter().enumerate() {
        let n = counts.get(state).copied().unwrap_or(0);
        let w = usize::try_from(n).unwrap_or(0) * (W - 130) / usize::try_from(max).unwrap_or(1);
        let y = i * row;
        let colour = match state {
            JobState::Failed | JobState::Dead => "#c62828",
            JobState::Waiting | JobState::Queued => "#f9a825",
            JobState::Running => "#1565c0",
            JobState::Succeeded => "#2e7d32",
        };
        let _ = write!(
            inner,
            "<text x=\"4\" y=\"{}\" font-size=\"11\" fill=\"#333\">{} {n}</text>\
             <rect x=\"120\" y=\"{}\" width=\"{w}\" height=\"{}\" fill=\"{colour}\"/>",
            y + row - 3,
            state.as_str(),
            y + 2,
            row.saturating_sub(4).max(1)
        );
    }
    let _ = write!(
        inner,
        "<text x=\"2\" y=\"{}\" font-size=\"11\" fill=\"#333\">jobs by state</text>",
        H + 12
    );
    svg("chart-jobs", "Jobs by state", &inner)
}

/// Instances by health verdict, per minute, stacked.
pub fn health(samples: &[Sample]) -> String {
    let shown = last(samples);
    let max = shown
        .iter()
        .map(|s| s.health.values().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut inner = String::new();
    for (i, s) in shown.iter().enumerate() {
        let mut y = H;
        for (verdict, colour) in HEALTH_COLOURS {
            let n = s.health.get(verdict).copied().unwrap_or(0);
            let h = n * H / max;
            if h == 0 {
                continue;
            }
            y -= h;
            let _ = write!(
                inner,
                "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{colour}\"><title>{n} {verdict}</title></rect>",
                x_of(i, shown.len()),
                BAR.saturating_sub(1).max(1)
            );
        }
    }
    let now = shown.last().map(|s| s.health.clone()).unwrap_or_default();
    let summary: Vec<String> = HEALTH_COLOURS
        .iter()
        .map(|(v, _)| format!("{} {v}", now.get(v).copied().unwrap_or(0)))
        .collect();
    let _ = write!(
        inner,
        "<text x=\"2\" y=\"{}\" font-size=\"11\" fill=\"#333\">fleet health, last hour: {}</text>",
        H + 12,
        summary.join(", ")
    );
    svg("chart-health", "Fleet health over the last hour", &inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, healthy: usize, unhealthy: usize) -> Sample {
        Sample {
            minute: 0,
            coolify_requests: requests,
            jobs: [(JobState::Dead, 2), (JobState::Succeeded, 5)].into(),
            health: [("healthy", healthy), ("unhealthy", unhealthy)].into(),
        }
    }

    #[test]
    fn bars_scale_to_the_budget_and_the_fleet() {
        let samples = vec![sample(90, 3, 1), sample(180, 4, 0)];
        let b = budget(&samples, 180);
        assert!(b.contains("height=\"40\" fill=\"#1565c0\""), "{b}");
        assert!(b.contains("height=\"80\" fill=\"#c62828\""), "{b}");
        assert!(b.contains("180 requests this minute of 180/min"), "{b}");
        let h = health(&samples);
        assert!(h.contains("4 healthy, 0 suspect, 0 unhealthy, 0 missing"), "{h}");
        assert!(h.contains("<title>1 unhealthy</title>"), "{h}");
        let j = jobs(&samples);
        assert!(j.contains(">dead 2<") && j.contains(">succeeded 5<"), "{j}");
    }

    #[test]
    fn an_hour_at_most_and_nothing_outside_the_frame() {
        let samples: Vec<Sample> = (0..200).map(|i| sample(i, 1, 0)).collect();
        let b = budget(&samples, 50);
        assert_eq!(b.matches("<rect x=").count(), MINUTES);
        assert!(!b.contains(&format!("x=\"{W}\"")), "a bar beyond the frame: {b}");
    }
}
