//! Markdown sections for docs/benchmarks.md, and percentiles.
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank); 0 when empty.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median, min, max of millisecond values.
pub fn min_median_max(v: &[u64]) -> (u64, u64, u64) {
    let mut s = v.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return (0, 0, 0);
    }
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

/// A titled table of figures (what, measured, target) plus free notes.
pub struct Section {
    title: String,
    rows: Vec<(String, String, String)>,
    notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.to_string(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, what: &str, measured: &str, target: &str) {
        self.rows
            .push((what.to_string(), measured.to_string(), target.to_string()));
    }

    pub fn note(&mut self, text: &str) {
        self.notes.push(text.to_string());
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "## {}\n\n| what | measured | target |\n|---|---|---|\n",
            self.title
        );
        for (a, b, c) in &self.rows {
            s.push_str(&format!("| {a} | {b} | {c} |\n"));
        }
        s.push('\n');
        for n in &self.notes {
            s.push_str(n);
            s.push_str("\n\n");
        }
        s
    }

    /// Appends the rendered section to a file (created if missing).
    pub fn append(&self, path: &Path) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(self.render().as_bytes())?;
        Ok(())
    }
}
