//! The worst error per output over a test's cases: the table the CUDA subjects print.
use std::collections::BTreeMap;
use std::io::Write;

/// The largest error ([`crate::case::scaled_error`]) seen per output, keyed by the name the op
/// tests give the buffer (`conv dw`, `avgpool 3 y`, `sgd param`, ...), with the number of
/// cases it was measured on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Worst {
    rows: BTreeMap<String, (f32, usize)>,
}

impl Worst {
    /// Note every `(name, error)` of one case.
    pub fn note(&mut self, errors: &[(String, f32)]) {
        for (name, err) in errors {
            let row = self.rows.entry(name.clone()).or_insert((0.0, 0));
            row.0 = row.0.max(*err);
            row.1 += 1;
        }
    }
    /// The worst error of output `name` and its number of cases, if it was measured.
    pub fn get(&self, name: &str) -> Option<(f32, usize)> {
        self.rows.get(name).copied()
    }
    /// The largest error over every output (0 when none was measured).
    pub fn max(&self) -> f32 {
        self.rows.values().fold(0.0, |a, r| a.max(r.0))
    }
    /// The table: a title line, then one line per output (name, cases, worst error).
    pub fn table(&self, title: &str) -> String {
        let mut t = format!("{title}: worst error per output (max |got - want| / max |want|)\n");
        for (name, (err, n)) in &self.rows {
            t.push_str(&format!("  {name:<24} {n:>4} cases   {err:.2e}\n"));
        }
        t
    }
    /// Print [`Worst::table`] to stderr in one write (the test harness does not capture it,
    /// and tables of tests running side by side do not interleave).
    pub fn print(&self, title: &str) {
        let _ = std::io::stderr().write_all(self.table(title).as_bytes());
    }
}
