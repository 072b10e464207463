//! Team names: the keys of `teams:` and the `fromTeam`/`toTeam` of every message.
//!
//! A name ends up in file names, log fields, MCP arguments and command lines, so it is checked
//! once, here, and carried as a [`TeamName`] afterwards.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted team name, in characters.
const MAX_LEN: usize = 64;

/// A validated team name.
///
/// Invariant: 1 to 64 characters, only ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or a digit. So it holds no path separator, whitespace or shell metacharacter, is never
/// `.` or `..`, and never looks like a command-line option.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TeamName(String);

impl TeamName {
    /// Checks `name` and wraps it.
    ///
    /// # Errors
    /// A [`NameError`] saying which rule `name` breaks.
    pub fn new(name: &str) -> Result<Self, NameError> {
        // (Errors below show at most `ECHO_CHARS` characters of what was given.)
        let Some(first) = name.chars().next() else {
            return Err(NameError::Empty);
        };
        if let Some(bad) = name.chars().find(|&ch| !is_name_char(ch)) {
            return Err(NameError::InvalidChar {
                name: cut_echo(name),
                ch: bad,
            });
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::InvalidStart {
                name: cut_echo(name),
                ch: first,
            });
        }
        // Every character is ASCII here, so bytes and characters agree.
        if name.len() > MAX_LEN {
            return Err(NameError::TooLong {
                name: cut_echo(name),
                len: name.len(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as written in the config.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')
}

impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TeamName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl TryFrom<String> for TeamName {
    type Error = NameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(&name)
    }
}

impl From<TeamName> for String {
    fn from(name: TeamName) -> Self {
        name.0
    }
}

impl AsRef<str> for TeamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by [`TeamName`] be queried with a plain `&str` (same `Ord` and `Hash`).
impl Borrow<str> for TeamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a valid team name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("team name is empty (use letters, digits, '-', '_' and '.')")]
    Empty,
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "team name {name:?} contains {ch:?}, which is not allowed (use letters, digits, '-', '_' and '.')"
    )]
    InvalidChar {
        /// The rejected name.
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// The name starts with `-`, `_` or `.` (this also rules out `.` and `..`).
    #[error("team name {name:?} starts with {ch:?}; it must start with a letter or a digit")]
    InvalidStart {
        /// The rejected name.
        name: String,
        /// Its first character.
        ch: char,
    },
    /// The name is longer than 64 characters.
    #[error("team name {name:?} is {len} characters long; the limit is 64")]
    TooLong {
        /// The rejected name.
        name: String,
        /// Its length in characters.
        len: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for name in [
            "a",
            "backend",
            "web-app",
            "svc_2",
            "v1.2",
            "0day",
            &"x".repeat(64),
        ] {
            let team = TeamName::new(name).expect(name);
            assert_eq!(team.as_str(), name);
            assert_eq!(team.to_string(), name);
            assert_eq!(name.parse::<TeamName>().expect(name), team);
        }
    }

    #[test]
    fn rejects_bad_names_with_precise_messages() {
        let cases = [
            (
                "",
                "team name is empty (use letters, digits, '-', '_' and '.')",
            ),
            (
                "a/b",
                "team name \"a/b\" contains '/', which is not allowed (use letters, digits, '-', '_' and '.')",
            ),
            (
                "a;b",
                "team name \"a;b\" contains ';', which is not allowed (use letters, digits, '-', '_' and '.')",
            ),
            (
                "a b",
                "team name \"a b\" contains ' ', which is not allowed (use letters, digits, '-', '_' and '.')",
            ),
            (
                "a\\b",
                "team name \"a\\\\b\" contains '\\\\', which is not allowed (use letters, digits, '-', '_' and '.')",
            ),
            (
                "é",
                "team name \"é\" contains 'é', which is not allowed (use letters, digits, '-', '_' and '.')",
            ),
            (
                "..",
                "team name \"..\" starts with '.'; it must start with a letter or a digit",
            ),
            (
                ".",
                "team name \".\" starts with '.'; it must start with a letter or a digit",
            ),
            (
                "-rf",
                "team name \"-rf\" starts with '-'; it must start with a letter or a digit",
            ),
        ];
        for (name, message) in cases {
            let error = TeamName::new(name).expect_err(name);
            assert_eq!(error.to_string(), message, "name {name:?}");
        }
        let long = "x".repeat(65);
        assert_eq!(
            TeamName::new(&long).expect_err("too long").to_string(),
            format!("team name \"{long}\" is 65 characters long; the limit is 64")
        );
    }

    #[test]
    fn serializes_as_a_plain_string_and_validates_on_deserialize() {
        let team = TeamName::new("backend").expect("valid");
        assert_eq!(
            serde_json::to_string(&team).expect("serialize"),
            "\"backend\""
        );
        let back: TeamName = serde_json::from_str("\"backend\"").expect("deserialize");
        assert_eq!(back, team);
        assert!(serde_json::from_str::<TeamName>("\"a/b\"").is_err());
    }

    #[test]
    fn maps_can_be_queried_by_str() {
        let mut teams = std::collections::BTreeMap::new();
        teams.insert(TeamName::new("alpha").expect("valid"), 1);
        assert_eq!(teams.get("alpha"), Some(&1));
    }
}

/// How much of a rejected name an error shows.
const ECHO_CHARS: usize = 80;

/// `text` as an error may show it: at most 80 characters, then how much was left out, so a
/// huge input is never echoed back whole.
pub(crate) fn cut_echo(text: &str) -> String {
    let total = text.chars().count();
    if total <= ECHO_CHARS {
        return text.to_owned();
    }
    let shown: String = text.chars().take(ECHO_CHARS).collect();
    format!("{shown}… ({} more characters)", total - ECHO_CHARS)
}

#[cfg(test)]
mod echo_tests {
    use super::*;

    #[test]
    fn a_huge_name_is_not_echoed_whole() {
        let huge = "a".repeat(1 << 20);
        let error = TeamName::new(&huge).unwrap_err().to_string();
        assert!(error.len() < 300, "{} bytes", error.len());
        assert!(error.contains("1048496 more characters"), "{error}");
        assert!(error.contains("the limit is 64"), "{error}");
        assert_eq!(cut_echo("short"), "short");
    }
}
