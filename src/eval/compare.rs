//! Side-by-side answers of two models (or a model with and without an intervention).

use super::run::greedy_answers;
use super::staged::SubjectSource;
use crate::progress::Progress;
use crate::Result;
use serde::Serialize;

/// One prompt's two answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SideBySide {
    /// The instruction.
    pub prompt: String,
    /// Left answer.
    pub left: String,
    /// Right answer.
    pub right: String,
}

/// Greedy answers of `left` and `right` to every prompt, one model after the other (a source
/// that loads its model holds it only for its own answers).
pub fn side_by_side(
    left: &mut dyn SubjectSource,
    right: &mut dyn SubjectSource,
    prompts: &[String],
    max_tokens: usize,
    batch: usize,
    progress: &dyn Progress,
) -> Result<Vec<SideBySide>> {
    let answers = |source: &mut dyn SubjectSource| -> Result<Vec<String>> {
        let mut out = Vec::new();
        source.with_subject(&mut |s| {
            out = greedy_answers(s, prompts, max_tokens, batch, progress)?;
            Ok(())
        })?;
        Ok(out)
    };
    let l = answers(left)?;
    let r = answers(right)?;
    Ok(pair(prompts, l, r))
}

/// Rows of `prompts` with their `left` and `right` answers (in the prompts' order).
pub fn pair(prompts: &[String], left: Vec<String>, right: Vec<String>) -> Vec<SideBySide> {
    prompts
        .iter()
        .zip(left)
        .zip(right)
        .map(|((p, left), right)| SideBySide { prompt: p.clone(), left, right })
        .collect()
}

/// The comparison as markdown: one section per prompt, both answers quoted.
pub fn markdown(rows: &[SideBySide], left: &str, right: &str) -> String {
    let quote = |s: &str| {
        if s.is_empty() {
            "> *(empty)*".to_string()
        } else {
            s.lines().map(|l| format!("> {l}")).collect::<Vec<_>>().join("\n")
        }
    };
    let mut out = String::new();
    for row in rows {
        out += &format!(
            "### {}\n\n**{left}**\n\n{}\n\n**{right}**\n\n{}\n\n",
            row.prompt,
            quote(&row.left),
            quote(&row.right)
        );
    }
    out
}

/// The comparison for a terminal: two wrapped columns of `width` characters each.
pub fn columns(rows: &[SideBySide], left: &str, right: &str, width: usize) -> String {
    let wrap = |s: &str| -> Vec<String> {
        let mut lines = Vec::new();
        for para in s.lines() {
            let mut line = String::new();
            for word in para.split_whitespace() {
                if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                    lines.push(std::mem::take(&mut line));
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
            }
            lines.push(line);
        }
        lines
    };
    let pad = |s: &str| format!("{s}{}", " ".repeat(width.saturating_sub(s.chars().count())));
    let mut out = String::new();
    for row in rows {
        out += &format!("━━ {}\n{} │ {}\n", row.prompt, pad(left), right);
        let (l, r) = (wrap(&row.left), wrap(&row.right));
        for i in 0..l.len().max(r.len()) {
            out += &format!("{} │ {}\n", pad(l.get(i).map_or("", String::as_str)), r.get(i).map_or("", String::as_str));
        }
        out.push('\n');
    }
    out
}
