use serde::Serialize;

/// A confusion matrix: rows are true classes, columns predicted classes
/// (scikit-learn's convention).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `counts[true][predicted]`.
    counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    /// Of the items predicted as this class, the share that are.
    pub precision: f64,
    /// Of the items of this class, the share predicted as such.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Items of this class.
    pub support: u64,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Count one prediction.
    ///
    /// # Panics
    /// If a class index is not below the number of classes.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Count many predictions.
    pub fn extend(&mut self, truth: &[usize], predicted: &[usize]) {
        assert_eq!(truth.len(), predicted.len(), "one prediction per label");
        for (&t, &p) in truth.iter().zip(predicted) {
            self.add(t, p);
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `counts[true][predicted]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Items counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Items predicted correctly.
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|i| self.counts[i][i]).sum()
    }

    /// Share of items predicted correctly (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Precision, recall and F1 per class. A class never predicted has
    /// precision 0, as scikit-learn reports it (`zero_division=0`).
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.classes)
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: u64 = self.counts.iter().map(|row| row[c]).sum();
                let support: u64 = self.counts[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// Unweighted mean F1 over classes.
    pub fn macro_f1(&self) -> f64 {
        let scores = self.per_class();
        scores.iter().map(|s| s.f1).sum::<f64>() / scores.len().max(1) as f64
    }

    /// The matrix as an aligned text table, rows labelled with the true class.
    pub fn render_text(&self, class_names: &[&str]) -> String {
        let names: Vec<String> = (0..self.classes)
            .map(|i| short_name(class_names.get(i).copied(), i))
            .collect();
        let label_width = names.iter().map(String::len).max().unwrap_or(1).max(4);
        let widest = self.counts.iter().flatten().max().copied().unwrap_or(0);
        let cell = widest
            .to_string()
            .len()
            .max(names.iter().map(String::len).max().unwrap_or(1))
            + 1;
        let mut out = format!("{:>label_width$}  predicted →\n", "true");
        out.push_str(&" ".repeat(label_width + 1));
        for name in &names {
            out.push_str(&format!("{name:>cell$}"));
        }
        out.push('\n');
        for (name, row) in names.iter().zip(&self.counts) {
            out.push_str(&format!("{name:>label_width$} "));
            for count in row {
                out.push_str(&format!("{count:>cell$}"));
            }
            out.push('\n');
        }
        out
    }

    /// Per-class precision, recall, F1 and support as a text table, like
    /// scikit-learn's `classification_report`.
    pub fn render_report(&self, class_names: &[&str]) -> String {
        let names: Vec<String> = (0..self.classes)
            .map(|i| {
                class_names
                    .get(i)
                    .map_or(i.to_string(), |s| (*s).to_string())
            })
            .collect();
        let w = names.iter().map(String::len).max().unwrap_or(1).max(9);
        let mut out = format!(
            "{:>w$} {:>9} {:>9} {:>9} {:>9}\n",
            "", "precision", "recall", "f1-score", "support"
        );
        for (name, s) in names.iter().zip(self.per_class()) {
            out.push_str(&format!(
                "{name:>w$} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
                s.precision, s.recall, s.f1, s.support
            ));
        }
        out.push_str(&format!(
            "{:>w$} {:>9} {:>9} {:>9.4} {:>9}\n",
            "accuracy",
            "",
            "",
            self.accuracy(),
            self.total()
        ));
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Long class names (Fashion-MNIST) are cut to keep the table narrow.
fn short_name(name: Option<&str>, index: usize) -> String {
    match name {
        Some(n) if n.chars().count() <= 6 => n.to_string(),
        Some(n) => n.chars().take(5).collect::<String>() + ".",
        None => index.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// truth    0 0 0 1 1 2
    /// predict  0 0 1 1 2 2
    fn small() -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(3);
        m.extend(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2]);
        m
    }

    #[test]
    fn counts_rows_as_truth() {
        let m = small();
        assert_eq!(m.counts(), &[vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        assert_eq!((m.total(), m.correct()), (6, 4));
        assert!((m.accuracy() - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn per_class_scores_by_hand() {
        let s = small().per_class();
        // class 0: tp 2, predicted 2, support 3
        assert_eq!((s[0].precision, s[0].support), (1.0, 3));
        assert!((s[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[0].f1 - 0.8).abs() < 1e-12);
        // class 1: tp 1, predicted 2, support 2
        assert_eq!((s[1].precision, s[1].recall, s[1].f1), (0.5, 0.5, 0.5));
        // class 2: tp 1, predicted 2, support 1
        assert_eq!((s[2].precision, s[2].recall), (0.5, 1.0));
        assert!((s[2].f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn never_predicted_class_scores_zero() {
        let mut m = ConfusionMatrix::new(2);
        m.extend(&[0, 1], &[0, 0]);
        let s = m.per_class();
        assert_eq!((s[1].precision, s[1].recall, s[1].f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn text_rendering_is_aligned_and_complete() {
        let text = small().render_text(&["a", "b", "c"]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[2].trim_start().starts_with('a') && lines[2].ends_with(" 2 1 0"),
            "{text}"
        );
        assert!(small().render_report(&["a", "b", "c"]).contains("accuracy"));
    }
}
