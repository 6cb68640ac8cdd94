//! Names of enum values as the command line and recipes spell them, in one table per enum, so
//! that the CLI (which builds its parsers from the table) and recipes accept the same names and
//! files record them in that spelling.

use crate::{Error, Result};

/// An enum whose values have names on the command line and in recipes.
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// Every value with its names: the first entry of a value is its name, later entries for the
    /// same value are aliases, accepted but not listed.
    const NAMES: &'static [(&'static str, Self)];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, v)| *v == self).map_or("?", |(n, _)| n)
    }

    /// The value named `text` (a name or an alias, exactly).
    fn from_name(text: &str) -> Result<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == text).map(|(_, v)| *v).ok_or_else(|| {
            Error::Invalid(format!("unknown value `{text}` (choose from {})", Self::listed().join(", ")))
        })
    }

    /// The names, without aliases.
    fn listed() -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, (_, v))| Self::NAMES[..*i].iter().all(|(_, w)| w != v))
            .map(|(_, (n, _))| *n)
            .collect()
    }

    /// Whether `NAMES[index]` is an alias (a later name of a value listed before it).
    fn is_alias(index: usize) -> bool {
        let value = Self::NAMES[index].1;
        Self::NAMES[..index].iter().any(|(_, w)| *w == value)
    }
}

#[cfg(test)]
mod tests {
    use super::Named;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Colour {
        Red,
        Blue,
    }

    impl Named for Colour {
        const NAMES: &'static [(&'static str, Self)] =
            &[("red", Colour::Red), ("blue", Colour::Blue), ("crimson", Colour::Red)];
    }

    #[test]
    fn names_parse_with_aliases_and_print_canonically() {
        assert_eq!(Colour::from_name("crimson").unwrap(), Colour::Red);
        assert_eq!(Colour::Red.name(), "red");
        assert_eq!(Colour::listed(), ["red", "blue"]);
        assert!(Colour::is_alias(2) && !Colour::is_alias(1));
        let err = Colour::from_name("green").unwrap_err().to_string();
        assert!(err.contains("green") && err.contains("red, blue") && !err.contains("crimson"), "{err}");
    }
}
