//! What a run produces: one figure per measurement (the bridge beside its baseline, its goal), rendered as
//! a markdown table and as JSON (`docs/bench/full.json`), both from the same figures.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// A target a figure is judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    pub fn met(self, v: f64) -> bool {
        match self {
            Goal::AtMost(g) => v <= g,
            Goal::AtLeast(g) => v >= g,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Goal::AtMost(g) => format!("<= {}", num(g, unit)),
            Goal::AtLeast(g) => format!(">= {}", num(g, unit)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    /// None when the run could not measure it (no sample).
    pub value: Option<f64>,
    pub unit: &'static str,
    pub baseline: Option<f64>,
    /// What the baseline is, for the table (e.g. "no-hook frame").
    pub baseline_of: String,
    pub goal: Option<Goal>,
    /// False when the goal is set for other conditions than this run's (e.g. full mode's fleet size):
    /// the goal is shown, `met` stays null.
    pub goal_applies: bool,
    /// Whether the machine was saturated while this figure was measured (None: not checked).
    pub saturated: Option<bool>,
}

impl Figure {
    pub fn new(section: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            section,
            name: name.into(),
            value: value.is_finite().then_some(value),
            unit,
            baseline: None,
            baseline_of: String::new(),
            goal: None,
            goal_applies: true,
            saturated: None,
        }
    }

    /// The baseline, in the same unit, and what it is.
    pub fn vs(mut self, baseline: f64, of: impl Into<String>) -> Figure {
        self.baseline = baseline.is_finite().then_some(baseline);
        self.baseline_of = of.into();
        self
    }

    pub fn goal(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self
    }

    /// A goal stated for other conditions than this run's: shown, not judged.
    pub fn goal_elsewhere(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self.goal_applies = false;
        self
    }

    /// A goal of issue 17's footprint targets, stated for full mode (10,000 instances): judged only there.
    pub fn target(self, goal: Goal, full_mode: bool) -> Figure {
        if full_mode {
            self.goal(goal)
        } else {
            self.goal_elsewhere(goal)
        }
    }

    pub fn saturated(mut self, flag: bool) -> Figure {
        self.saturated = Some(flag);
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        }
    }

    /// value - baseline, for figures in milliseconds (an overhead).
    pub fn overhead_ms(&self) -> Option<f64> {
        match (self.value, self.baseline) {
            (Some(v), Some(b)) if self.unit == "ms" => Some(v - b),
            _ => None,
        }
    }

    pub fn met(&self) -> Option<bool> {
        match (self.goal, self.value) {
            (Some(g), Some(v)) if self.goal_applies => Some(g.met(v)),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_of": (!self.baseline_of.is_empty()).then_some(&self.baseline_of),
            "ratio": self.ratio(),
            "overhead_ms": self.overhead_ms(),
            "goal": self.goal.map(|g| g.text(self.unit)),
            "met": self.met(),
            "saturated": self.saturated,
        })
    }
}

/// A number in its unit, with as many decimals as its size needs.
pub fn num(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 || v.fract() == 0.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let n = format!("{v:.digits$}");
    match unit {
        "" | "count" => n,
        "/s" | "/min" | "%" => format!("{n}{unit}"),
        _ => format!("{n} {unit}"),
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, f: Figure) {
        let r = row(&f);
        eprintln!("  {r}");
        self.figures.push(f);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// Markdown table, then the notes.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "| section | figure | cf-bridge | baseline | ratio (overhead) | goal | met |\n|---|---|---|---|---|---|---|\n",
        );
        for f in &self.figures {
            let _ = writeln!(out, "{}", row(f));
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n- {n}");
        }
        out
    }

    /// Every figure and note as one JSON document; `context` (mode, machine, command) goes on top.
    pub fn json(&self, context: Value) -> Value {
        json!({
            "context": context,
            "figures": self.figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

fn row(f: &Figure) -> String {
    let value = f.value.map_or("n/a".into(), |v| num(v, f.unit));
    let baseline = match f.baseline {
        Some(b) if f.baseline_of.is_empty() => num(b, f.unit),
        Some(b) => format!("{} ({})", num(b, f.unit), f.baseline_of),
        None if f.baseline_of.is_empty() => "-".into(),
        None => format!("n/a ({})", f.baseline_of),
    };
    let ratio = match (f.ratio(), f.overhead_ms()) {
        (Some(r), Some(o)) => format!("{r:.2}x ({o:+.1} ms)"),
        (Some(r), None) => format!("{r:.2}x"),
        _ => "-".into(),
    };
    let goal = f.goal.map_or("-".into(), |g| g.text(f.unit));
    let met = match (f.met(), f.goal_applies) {
        (Some(true), _) => "yes",
        (Some(false), _) => "**no**",
        (None, false) => "n/a (full mode)",
        (None, true) => "-",
    };
    let name = match f.saturated {
        Some(true) => format!("{} [machine saturated]", f.name),
        _ => f.name.clone(),
    };
    format!(
        "| {} | {name} | {value} | {baseline} | {ratio} | {goal} | {met} |",
        f.section
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_json_has_every_field_and_judges_its_goal() {
        let f = Figure::new("1 latency", "p99", 12.0, "ms")
            .vs(4.0, "no-hook frame")
            .goal(Goal::AtMost(10.0));
        let v = f.to_json();
        assert_eq!(v["value"], 12.0);
        assert_eq!(v["baseline"], 4.0);
        assert_eq!(v["ratio"], 3.0);
        assert_eq!(v["overhead_ms"], 8.0);
        assert_eq!(v["goal"], "<= 10 ms");
        assert_eq!(v["met"], false);
        let unmeasured = Figure::new("3 budget", "x", f64::NAN, "/min").goal_elsewhere(Goal::AtLeast(57.0));
        let v = unmeasured.to_json();
        assert!(v["value"].is_null() && v["met"].is_null() && v["ratio"].is_null());
        assert!(row(&unmeasured).contains("n/a"));
    }
}
