//! The one table the benchmark prints: each figure beside its target.

use std::time::Duration;

#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String, String, String)>,
}

impl Table {
    /// Adds a row: the section, what was measured, the figure, the target.
    pub fn row(&mut self, section: &str, what: &str, figure: String, target: &str) {
        println!("  {section}: {what}: {figure}");
        self.rows
            .push((section.into(), what.into(), figure, target.into()));
    }

    pub fn print(&self) {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| [&r.0, &r.1, &r.2, &r.3][i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (a, b, c) = (width(0).max(7), width(1).max(4), width(2).max(6));
        println!();
        println!("{:a$}  {:b$}  {:c$}  target", "section", "what", "figure");
        for (section, what, figure, target) in &self.rows {
            println!("{section:a$}  {what:b$}  {figure:c$}  {target}");
        }
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// p50, p95 and p99 of `samples`, which it sorts.
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.95), at(0.99))
}
