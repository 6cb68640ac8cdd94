//! Layer selections as users type them: `8..20`, `8..=20`, `8..`, `8..:2`, `8,10,12`, `all`.

use crate::{Error, Result};

/// Parse a layer selection against a model with `num_layers` layers.
///
/// - `all` (or empty): every layer;
/// - `a..b` (b excluded, like Python's `range`), `a..=b` (b included), `a..` (to the end),
///   each optionally followed by `:step`, e.g. `8..:2` is the research note's `range(8, L, 2)`;
/// - `a,b,c` and mixtures such as `0,4..8`;
/// - negative numbers count from the end (`-1` is the last layer).
///
/// The result is sorted and without repeats; any layer outside `0..num_layers` is an error.
pub fn parse_layers(text: &str, num_layers: usize) -> Result<Vec<usize>> {
    let text = text.trim();
    if text.is_empty() || text == "all" {
        return Ok((0..num_layers).collect());
    }
    let bad = |why: String| Error::Invalid(format!("--layers `{text}`: {why}"));
    let index = |s: &str| -> Result<usize> {
        let v: i64 = s.trim().parse().map_err(|_| bad(format!("`{s}` is not a layer number")))?;
        let resolved = if v < 0 { num_layers as i64 + v } else { v };
        if resolved < 0 || resolved >= num_layers as i64 {
            return Err(bad(format!("layer {v} is outside 0..{num_layers}")));
        }
        Ok(resolved as usize)
    };
    let mut layers = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, s)) => {
                (r, s.trim().parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(|| bad(format!("bad step `{s}`")))?)
            }
            None => (part, 1),
        };
        if let Some((start, end)) = range.split_once("..") {
            let start = if start.trim().is_empty() { 0 } else { index(start)? };
            let end = match end.strip_prefix('=') {
                Some(e) => index(e)? + 1,
                None if end.trim().is_empty() => num_layers,
                None => {
                    let e: i64 = end.trim().parse().map_err(|_| bad(format!("`{end}` is not a layer number")))?;
                    let e = if e < 0 { num_layers as i64 + e } else { e };
                    if e < 0 || e > num_layers as i64 {
                        return Err(bad(format!("range end {e} is outside 0..={num_layers}")));
                    }
                    e as usize
                }
            };
            if start >= end {
                return Err(bad(format!("range {start}..{end} is empty")));
            }
            layers.extend((start..end).step_by(step));
        } else {
            layers.push(index(range)?);
        }
    }
    layers.sort_unstable();
    layers.dedup();
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::parse_layers;

    #[test]
    fn parses_ranges_lists_steps_and_negatives() {
        assert_eq!(parse_layers("all", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_layers("1..3", 10).unwrap(), vec![1, 2]);
        assert_eq!(parse_layers("1..=3", 10).unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_layers("8..", 10).unwrap(), vec![8, 9]);
        assert_eq!(parse_layers("4..:2", 10).unwrap(), vec![4, 6, 8]);
        assert_eq!(parse_layers("0, 5,2..4,5", 10).unwrap(), vec![0, 2, 3, 5]);
        assert_eq!(parse_layers("-1", 10).unwrap(), vec![9]);
    }

    #[test]
    fn rejects_out_of_range_and_garbage() {
        for bad in ["10", "3..2", "a", "0..11", "1..:0", "-11"] {
            let err = parse_layers(bad, 10).unwrap_err().to_string();
            assert!(err.contains("--layers"), "{bad}: {err}");
        }
    }
}
