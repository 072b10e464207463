//! `${VAR}` interpolation of one scalar's text.
//!
//! It runs after YAML parsing, on the text of each scalar the loader reads, so an environment
//! value is only ever text: it cannot add keys, lists or nulls, whatever it contains. The
//! loader then converts the text to the type its key expects, which is how
//! `maxProcesses: ${N:-4}` becomes a number.
//!
//! Forms (Docker Compose's, except that an unset `${NAME}` is an error, not ""):
//! - `${NAME}`: the value; unset is an error. Set but empty is "".
//! - `${NAME:-word}` / `${NAME-word}`: `word` if unset or empty / if unset.
//! - `${NAME:?message}` / `${NAME?message}`: an error carrying `message` if unset or empty /
//!   if unset.
//! - `${NAME:+word}` / `${NAME+word}`: `word` if set and non-empty / if set, else "".
//! - `$${` is a literal `${`. Any other `$` is literal, including `$NAME` without braces.
//!
//! `word` may itself hold references (`${A:-${B:-x}}`); it is expanded only when chosen.
//! Values taken from the environment are never expanded again.

use std::collections::HashMap;

/// References nested deeper than this inside defaults are refused (the stack stays bounded).
const MAX_DEPTH: usize = 16;

/// Why a value could not be interpolated. Messages name variables, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum InterpolationError {
    /// `${NAME}` with `NAME` unset.
    #[error(
        "environment variable {name} is not set (set it, or write ${{{name}:-default}} to give a default)"
    )]
    Unset { name: String },
    /// `${NAME?message}` / `${NAME:?message}` with `NAME` unset (or empty for `:?`).
    #[error("environment variable {name} is {}{}", if *.empty { "empty" } else { "not set" }, required_suffix(.message))]
    Required {
        name: String,
        message: String,
        empty: bool,
    },
    /// `${` followed by something that is not a reference.
    #[error(
        "invalid reference {reference}: write ${{NAME}}, ${{NAME:-default}} or ${{NAME:?message}} with NAME made of letters, digits and '_' (not starting with a digit), or $${{ for a literal ${{"
    )]
    Invalid { reference: String },
    /// `${...` without its closing brace.
    #[error("unterminated reference {reference}: missing '}}' (write $${{ for a literal ${{)")]
    Unterminated { reference: String },
    /// Defaults nested more than [`MAX_DEPTH`] deep.
    #[error("references are nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

fn required_suffix(message: &str) -> String {
    if message.is_empty() {
        " but is required".to_owned()
    } else {
        format!(": {message}")
    }
}

/// Interpolates `input`. Returns `None` when the text holds no `${` (nothing to do).
pub(super) fn interpolate(
    input: &str,
    env: &HashMap<String, String>,
) -> Result<Option<String>, InterpolationError> {
    if !input.contains("${") {
        return Ok(None);
    }
    expand(input, env, 0).map(Some)
}

fn expand(
    input: &str,
    env: &HashMap<String, String>,
    depth: usize,
) -> Result<String, InterpolationError> {
    if depth > MAX_DEPTH {
        return Err(InterpolationError::TooDeep);
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if tail.starts_with("${") {
            let (reference, consumed) = parse_reference(tail)?;
            apply(&reference, env, depth, &mut out)?;
            rest = &tail[consumed..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What follows the name inside `${NAME...}`.
#[derive(Clone, Copy)]
enum Operator {
    Plain,
    DefaultIfUnset,
    DefaultIfUnsetOrEmpty,
    ErrorIfUnset,
    ErrorIfUnsetOrEmpty,
    AlternateIfSet,
    AlternateIfSetAndNonEmpty,
}

struct Reference<'a> {
    name: &'a str,
    operator: Operator,
    /// The default, alternate or message text (empty for [`Operator::Plain`]).
    word: &'a str,
}

/// Parses the reference at the start of `tail` (which starts with `${`). Returns it and the
/// number of bytes it spans, closing brace included.
fn parse_reference(tail: &str) -> Result<(Reference<'_>, usize), InterpolationError> {
    let body = &tail[2..];
    let name_len = body
        .bytes()
        .enumerate()
        .take_while(|&(index, byte)| {
            byte == b'_' || byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit())
        })
        .count();
    let name = &body[..name_len];
    let after_name = &body[name_len..];
    if after_name.starts_with('}') && !name.is_empty() {
        let reference = Reference {
            name,
            operator: Operator::Plain,
            word: "",
        };
        return Ok((reference, 2 + name_len + 1));
    }
    let operators = [
        (":-", Operator::DefaultIfUnsetOrEmpty),
        (":?", Operator::ErrorIfUnsetOrEmpty),
        (":+", Operator::AlternateIfSetAndNonEmpty),
        ("-", Operator::DefaultIfUnset),
        ("?", Operator::ErrorIfUnset),
        ("+", Operator::AlternateIfSet),
    ];
    let chosen = operators
        .iter()
        .find(|(spelling, _)| after_name.starts_with(spelling));
    let (Some(&(spelling, operator)), false) = (chosen, name.is_empty()) else {
        return Err(match tail.find('}') {
            Some(close) => InterpolationError::Invalid {
                reference: tail[..=close].to_owned(),
            },
            None => InterpolationError::Unterminated {
                reference: tail.to_owned(),
            },
        });
    };
    let word_start = 2 + name_len + spelling.len();
    let Some(word_len) = find_closing_brace(&tail[word_start..]) else {
        return Err(InterpolationError::Unterminated {
            reference: tail.to_owned(),
        });
    };
    let reference = Reference {
        name,
        operator,
        word: &tail[word_start..word_start + word_len],
    };
    Ok((reference, word_start + word_len + 1))
}

/// Index of the `}` that closes the current reference, skipping nested `${...}` (and `$${...}`,
/// whose `}` belongs to it too).
fn find_closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    while index < bytes.len() {
        let rest = &bytes[index..];
        if rest.starts_with(b"$${") {
            depth += 1;
            index += 3;
        } else if rest.starts_with(b"${") {
            depth += 1;
            index += 2;
        } else if rest[0] == b'}' {
            if depth == 0 {
                return Some(index);
            }
            depth -= 1;
            index += 1;
        } else {
            index += 1;
        }
    }
    None
}

fn apply(
    reference: &Reference<'_>,
    env: &HashMap<String, String>,
    depth: usize,
    out: &mut String,
) -> Result<(), InterpolationError> {
    let value = env.get(reference.name).map(String::as_str);
    let non_empty = value.filter(|value| !value.is_empty());
    let expand_word = |out: &mut String| -> Result<(), InterpolationError> {
        out.push_str(&expand(reference.word, env, depth + 1)?);
        Ok(())
    };
    match reference.operator {
        Operator::Plain => match value {
            Some(value) => out.push_str(value),
            None => {
                return Err(InterpolationError::Unset {
                    name: reference.name.to_owned(),
                });
            }
        },
        Operator::DefaultIfUnset => match value {
            Some(value) => out.push_str(value),
            None => expand_word(out)?,
        },
        Operator::DefaultIfUnsetOrEmpty => match non_empty {
            Some(value) => out.push_str(value),
            None => expand_word(out)?,
        },
        Operator::ErrorIfUnset | Operator::ErrorIfUnsetOrEmpty => {
            let accepted = match reference.operator {
                Operator::ErrorIfUnset => value,
                _ => non_empty,
            };
            match accepted {
                Some(value) => out.push_str(value),
                None => {
                    return Err(InterpolationError::Required {
                        name: reference.name.to_owned(),
                        message: reference.word.trim().to_owned(),
                        empty: value.is_some(),
                    });
                }
            }
        }
        Operator::AlternateIfSet => {
            if value.is_some() {
                expand_word(out)?;
            }
        }
        Operator::AlternateIfSetAndNonEmpty => {
            if non_empty.is_some() {
                expand_word(out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [
            ("A", "alpha"),
            ("EMPTY", ""),
            ("N", "4"),
            ("INJECT", "a\nmaxProcesses: 1"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
    }

    fn check(input: &str, expected: &str) {
        let got = interpolate(input, &env()).expect(input);
        assert_eq!(got.as_deref().unwrap_or(input), expected, "input {input:?}");
    }

    fn check_error(input: &str, expected: &str) {
        let error = interpolate(input, &env()).expect_err(input);
        assert_eq!(error.to_string(), expected, "input {input:?}");
    }

    #[test]
    fn expands_every_form() {
        check("plain text", "plain text");
        check("${A}", "alpha");
        check("x-${A}-y", "x-alpha-y");
        check("${EMPTY}", "");
        check("${MISSING:-dflt}", "dflt");
        check("${EMPTY:-dflt}", "dflt");
        check("${EMPTY-dflt}", "");
        check("${MISSING-dflt}", "dflt");
        check("${A:-dflt}", "alpha");
        check("${MISSING:-}", "");
        check("${A:+alt}", "alt");
        check("${EMPTY:+alt}", "");
        check("${EMPTY+alt}", "alt");
        check("${MISSING+alt}", "");
        check("${A:?needed}", "alpha");
        check("${EMPTY?needed}", "");
        check("a ${MISSING:-x} b ${OTHER:-y}", "a x b y");
        check("${MISSING:-${A}}", "alpha");
        check("${MISSING:-${ALSO_MISSING:-deep}}", "deep");
        check("${MISSING:-{braces}}", "{braces}");
        check("${N}", "4");
        check("${INJECT}", "a\nmaxProcesses: 1");
    }

    #[test]
    fn dollar_escapes_and_literal_dollars() {
        check("$${A}", "${A}");
        check("cost: $5 and $A", "cost: $5 and $A");
        check("$$", "$$");
        check("${MISSING:-$${lit}}", "${lit}");
    }

    #[test]
    fn a_default_is_only_expanded_when_chosen() {
        check("${A:-${MISSING}}", "alpha");
        check_error(
            "${EMPTY:-${MISSING}}",
            "environment variable MISSING is not set (set it, or write ${MISSING:-default} to give a default)",
        );
    }

    #[test]
    fn errors_name_the_variable_not_its_value() {
        check_error(
            "${MISSING}",
            "environment variable MISSING is not set (set it, or write ${MISSING:-default} to give a default)",
        );
        check_error(
            "${MISSING:?set MISSING to your token}",
            "environment variable MISSING is not set: set MISSING to your token",
        );
        check_error(
            "${EMPTY:?must not be empty}",
            "environment variable EMPTY is empty: must not be empty",
        );
        check_error(
            "${MISSING?}",
            "environment variable MISSING is not set but is required",
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        let hint = "write ${NAME}, ${NAME:-default} or ${NAME:?message} with NAME made of letters, digits and '_' (not starting with a digit), or $${ for a literal ${";
        check_error("${}", &format!("invalid reference ${{}}: {hint}"));
        check_error("${1A}", &format!("invalid reference ${{1A}}: {hint}"));
        check_error("${A:x}", &format!("invalid reference ${{A:x}}: {hint}"));
        check_error("${A B}", &format!("invalid reference ${{A B}}: {hint}"));
        check_error(
            "${A:-x",
            "unterminated reference ${A:-x: missing '}' (write $${ for a literal ${)",
        );
        check_error(
            "${A",
            "unterminated reference ${A: missing '}' (write $${ for a literal ${)",
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}x{}", "${M:-".repeat(40), "}".repeat(40));
        check_error(&deep, "references are nested more than 16 deep");
    }
}
