//! The table a run prints: one row per figure, the bridge beside its baseline.

use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub bridge: String,
    pub baseline: String,
    pub ratio: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(
        &mut self,
        section: &'static str,
        figure: impl Into<String>,
        bridge: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
    ) {
        let row = Row {
            section,
            figure: figure.into(),
            bridge: bridge.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
        };
        eprintln!(
            "  {} | {} | {} | {} | {}",
            row.section, row.figure, row.bridge, row.baseline, row.ratio
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    /// Markdown table, then the notes.
    pub fn render(&self) -> String {
        let mut out = String::from("| section | figure | cf-bridge | baseline | ratio |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.section, r.figure, r.bridge, r.baseline, r.ratio
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n- {n}");
        }
        out
    }
}

pub fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1} ms")
    } else {
        "n/a".into()
    }
}
