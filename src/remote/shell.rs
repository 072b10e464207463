//! POSIX shell quoting for what Iris sends to a remote host: every value that reaches the
//! host's shell goes through [`quote`] (or [`path_word`], which leaves a leading `~` to the
//! host's shell), and environment values travel on the agent's stdin as `printf` formats
//! ([`printf_format`]), never on a command line.

/// Quotes `text` as one word for a POSIX shell: left bare when it holds only characters no
/// shell treats specially, else in single quotes, a quote inside becoming `'\''`. Newlines,
/// `$`, backquotes and backslashes are literal inside single quotes.
#[must_use]
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_./=:@%+,".contains(character))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Quotes a path for the host's shell, leaving a leading `~` or `~user` (followed by `/` or
/// nothing) unquoted so that the host expands it to a home directory there.
#[must_use]
pub fn path_word(path: &str) -> String {
    if path.starts_with('-') {
        // Not an option of `cd` or `command`: the same relative path.
        return quote(&format!("./{path}"));
    }
    let Some(rest) = path.strip_prefix('~') else {
        return quote(path);
    };
    let (user, tail) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    let plain_user = user
        .chars()
        .all(|character| character.is_ascii_alphanumeric() || "._-".contains(character));
    if !plain_user {
        return quote(path);
    }
    if tail.is_empty() {
        return format!("~{user}");
    }
    // `~/` then the rest quoted: the tilde prefix ends at the first unquoted slash.
    format!("~{user}/{}", quote_or_empty(&tail[1..]))
}

fn quote_or_empty(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        quote(text)
    }
}

/// `text` as a `printf` format that prints exactly `text`: every byte outside a small safe
/// set (letters, digits, ` _./:,@+=`) becomes a three-digit octal escape (`%` is `\045`,
/// `\` is `\134`, a newline `\012`, `-` is `\055` so that a format is never read as an
/// option of `printf`), so the format holds no directive, no quote and no newline and can
/// be sent as one line.
#[must_use]
pub fn printf_format(text: &str) -> String {
    use std::fmt::Write as _;
    let mut format = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b" _./:,@+=".contains(&byte) {
            format.push(char::from(byte));
        } else {
            let _ = write!(format, "\\{byte:03o}");
        }
    }
    format
}

/// Whether `name` can be exported by a POSIX shell: `[A-Za-z_][A-Za-z0-9_]*`.
#[must_use]
pub fn is_variable_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What `sh` makes of `word`: runs `printf %s <word>` in a real shell.
    fn through_sh(word: &str) -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {word}"))
            .env("HOME", "/home/tester")
            .output()
            .expect("sh runs");
        assert!(output.status.success(), "{word}: {output:?}");
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let table = [
            "plain",
            "/srv/app",
            "",
            "with space",
            "it's",
            "''",
            "$HOME",
            "${HOME}",
            "`id`",
            "$(id)",
            "a\nb",
            "back\\slash",
            "semi;colon && rm -rf /",
            "glob*?[a]",
            "tab\there",
            "dash-leading -n",
            "-n",
            "ünïcödé ✓",
            "~",
            "~/x",
            "\"double\"",
            "a'b'c'",
            "trailing newline\n",
            "!bang",
            "#hash",
        ];
        for text in table {
            assert_eq!(
                through_sh(&quote(text)),
                text,
                "{text:?} quoted as {}",
                quote(text)
            );
        }
    }

    #[test]
    fn plain_words_stay_bare() {
        assert_eq!(quote("/srv/app"), "/srv/app");
        assert_eq!(quote("--resume=0a1b"), "--resume=0a1b");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn a_leading_tilde_is_left_to_the_host() {
        let table = [
            ("~", "/home/tester"),
            ("~/", "/home/tester/"),
            ("~/proj", "/home/tester/proj"),
            ("~/my proj/it's", "/home/tester/my proj/it's"),
            ("~/$HOME", "/home/tester/$HOME"),
            ("/abs/~/x", "/abs/~/x"),
            ("~user's/x", "~user's/x"),
            ("~ x", "~ x"),
            ("-L", "./-L"),
            ("-", "./-"),
        ];
        for (path, expanded) in table {
            assert_eq!(
                through_sh(&path_word(path)),
                expanded,
                "{path:?} as {}",
                path_word(path)
            );
        }
        // `~root` is a real user's home on any machine.
        assert_eq!(
            through_sh(&path_word("~root/x")),
            format!("{}/x", root_home())
        );
    }

    fn root_home() -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg("printf %s ~root")
            .output()
            .expect("sh");
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn printf_formats_print_the_value_back() {
        let table = [
            "plain",
            "100%",
            "%s%d%n",
            "back\\slash\\n",
            "new\nline",
            "trailing\n",
            "'quotes\" and `ticks`",
            "$HOME ${X}",
            "ünïcödé",
            "",
            " leading and trailing ",
            "--max-old-space-size=4096",
            "-n",
            "-Xmx4g",
        ];
        for text in table {
            let format = printf_format(text);
            assert!(!format.contains(['\n', '\'', '%']), "{format}");
            let script = format!("v=$(printf '{format}x'); printf %s \"${{v%x}}\"");
            let output = Command::new("sh")
                .arg("-c")
                .arg(script)
                .output()
                .expect("sh");
            assert_eq!(
                String::from_utf8(output.stdout).expect("utf-8"),
                text,
                "{text:?}"
            );
        }
    }

    #[test]
    fn variable_names() {
        for good in ["A", "_x", "ANTHROPIC_BASE_URL", "a1"] {
            assert!(is_variable_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "ü"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }
}
