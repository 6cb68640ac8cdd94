//! Fluency: does an answer loop? An edit that damages a model shows first as answers that
//! repeat a phrase ("unending, unending, unending, …") instead of saying something.
//!
//! An answer **loops** when, among its words (lower-cased, split on white space and
//! punctuation), the last `n` words repeat the `n` words before them at least
//! [`LOOP_REPEATS`] times in a row, for some phrase length `n` from 1 to [`MAX_PHRASE`] — the
//! answer ends in the same phrase said over and over. A phrase of one word must repeat
//! [`LOOP_REPEATS`] + 1 times (lists like "very, very good" are fine). Repetition that the
//! answer moves on from (a list of similar items, a refrain) does not count: only the end of
//! the answer is read, which is where a greedy decoder that has fallen into a loop stays.

/// Times a phrase must follow itself at the end of an answer to count as a loop.
pub const LOOP_REPEATS: usize = 3;
/// The longest phrase, in words, looked for.
pub const MAX_PHRASE: usize = 8;

/// Whether `answer` ends in a loop (see the module documentation).
pub fn loops(answer: &str) -> bool {
    let words: Vec<String> = answer
        .split(|c: char| c.is_whitespace() || (c.is_ascii_punctuation() && c != '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    (1..=MAX_PHRASE).any(|n| {
        let needed = if n == 1 { LOOP_REPEATS + 1 } else { LOOP_REPEATS };
        if words.len() < n * needed {
            return false;
        }
        let tail = &words[words.len() - n..];
        (1..needed).all(|k| {
            let start = words.len() - n * (k + 1);
            &words[start..start + n] == tail
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_ending_in_a_repeated_phrase_loops() {
        assert!(loops("The sky is unending, unending, unending, unending"));
        assert!(loops("Sure. I can help. I can help. I can help."));
        assert!(loops(
            "Step one: mix the flour and the water, mix the flour and the water, mix the flour and the water"
        ));
    }

    #[test]
    fn ordinary_answers_and_repetition_that_moves_on_do_not_loop() {
        assert!(!loops("Here is a recipe for banana bread: mix flour, sugar and bananas."));
        assert!(!loops("It was very, very good."));
        assert!(!loops("I can help. I can help. Here is how: first open the terminal."));
        assert!(!loops(""));
        assert!(!loops("yes yes yes"), "one word three times is still speech");
        assert!(loops("yes yes yes yes"));
    }
}
