//! The text tables both binaries print (`ferry snapshots`, `ferry-relay
//! clients list`, …): columns as wide as their widest cell, numbers right
//! aligned, the last column unpadded. One printer, so the two commands'
//! tables look alike and neither copies the other's format strings.

use std::fmt::Write;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table being filled, row by row.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers and alignments.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, headers first.
    pub fn render(&self) -> String {
        let cell = |row: &Vec<String>, i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| cell(r, i).chars().count())
                    .chain([self.columns[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let headers: Vec<String> = self.columns.iter().map(|c| c.0.to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (_, align)) in self.columns.iter().enumerate() {
                let text = cell(row, i);
                let last = i + 1 == self.columns.len();
                let width = widths[i];
                // Writing to a String cannot fail.
                let _ = match (align, last) {
                    (Align::Left, true) => write!(line, "{text}"),
                    (Align::Left, false) => write!(line, "{text:<width$}  "),
                    (Align::Right, true) => write!(line, "{text:>width$}"),
                    (Align::Right, false) => write!(line, "{text:>width$}  "),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_numbers_align_right() {
        let mut table = Table::new(&[("ID", Align::Right), ("NAME", Align::Left)]);
        assert!(table.is_empty());
        table.row(vec!["7".into(), "laptop".into()]);
        table.row(vec!["1234".into(), "é".into()]);
        assert_eq!(table.render(), "  ID  NAME\n   7  laptop\n1234  é\n");
    }
}
