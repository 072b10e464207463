//! `remote: ssh [options] host` and `remoteOptions.extraSshArgs`: the words of `remote` split
//! as a POSIX shell splits them, and the ssh options of both checked against what a
//! long-lived agent connection can use.
//!
//! Iris runs `ssh` itself, without a shell. So the text of `remote` gets the shell's quoting
//! (single quotes, double quotes with `\"`, `\\`, `\$` and `` \` `` escapes, backslashes
//! outside quotes) and its tilde expansion (an unquoted `~` or `~/...` starting a word is this
//! machine's home directory), and everything else a shell would act on is refused rather than
//! passed on literally: `$` and `` ` `` (the loader has already expanded `${VAR}`), `;`, `|`,
//! `&`, `<`, `>`, `(`, `)`, line breaks, and `#` starting a word.
//!
//! Options that stop ssh from running the agent over a plain pipe are refused too: `-N`, `-f`,
//! `-n`, `-s`, `-W` (no remote command, or not over ssh's stdin and stdout), `-t` (a tty),
//! `-M`, `-S`, `-O` (Iris manages the control connection itself), `-G`, `-Q`, `-V` (ssh
//! prints something and exits), and the `-o` keys that do the same.

use std::path::Path;

/// The words of a valid `remote` after `ssh`, and its host (the last of them).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SshCommand {
    pub(super) args: Vec<String>,
    pub(super) host: String,
}

/// OpenSSH's options that take a value (`-p 22` or `-p22`).
const WITH_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
/// OpenSSH's options that take none (they may be joined: `-AC`).
const WITHOUT_VALUE: &str = "1246AaCfGgKkMNnqsTtVvXxYy";

const CONTROL: &str = "Iris manages the control socket itself";
const NO_TTY: &str = "Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)";
const COMMAND: &str = "Iris runs the agent as the remote command";
const BACKGROUND: &str =
    "it sends ssh to the background, and Iris talks to the agent through ssh's stdin and stdout";
const STDIN_NULL: &str = "it closes ssh's stdin, through which Iris talks to the agent";

/// Why ssh option `-flag` cannot be used for an agent's connection, if it cannot.
fn forbidden_flag(flag: char) -> Option<&'static str> {
    Some(match flag {
        'M' | 'S' => CONTROL,
        'O' => {
            "it sends a command to a control master instead of connecting (Iris manages the control socket itself)"
        }
        'W' => "it forwards ssh's stdin and stdout to a port instead of running the agent",
        'N' => "it runs no remote command, and Iris runs the agent as the remote command",
        's' => "it runs a subsystem instead of the agent",
        'f' => BACKGROUND,
        'n' => STDIN_NULL,
        't' => NO_TTY,
        'G' => "ssh prints its configuration and exits without connecting",
        'Q' => "ssh lists what it supports and exits without connecting",
        'V' => "ssh prints its version and exits without connecting",
        _ => return None,
    })
}

/// `-o` keys (case-insensitive) that do what a refused option does.
const FORBIDDEN_CONFIG: &[(&str, &str)] = &[
    ("ControlMaster", CONTROL),
    ("ControlPath", CONTROL),
    ("ControlPersist", CONTROL),
    ("RequestTTY", NO_TTY),
    ("RemoteCommand", COMMAND),
    ("SessionType", COMMAND),
    ("ForkAfterAuthentication", BACKGROUND),
    ("StdinNull", STDIN_NULL),
];

/// Checks `remote` (already interpolated): `ssh [options] host`, split as a shell would.
/// `home` is this machine's home directory, for `~`.
pub(super) fn check_remote(remote: &str, home: Option<&Path>) -> Result<SshCommand, String> {
    let expected =
        "expected \"ssh [options] host\", such as \"ssh user@host\" or \"ssh -J bastion host\"";
    let words = shell_words(remote, home)?;
    let Some(args) = words
        .split_first()
        .filter(|(first, _)| *first == "ssh")
        .map(|(_, args)| args)
    else {
        return Err(format!("{expected}, got {remote:?}"));
    };
    let host_index = match walk_options(args) {
        Ok(Some(index)) => index,
        Ok(None) => return Err(format!("{expected}; no host in {remote:?}")),
        Err((_, message)) => return Err(message),
    };
    let host = &args[host_index];
    if let Some(word) = args.get(host_index + 1) {
        return Err(format!(
            "{word:?} follows the host {host:?}; the host must come last (Iris appends the remote command itself)"
        ));
    }
    if host.is_empty() {
        return Err(format!("{expected}; the host is empty in {remote:?}"));
    }
    if host.contains(char::is_whitespace) {
        return Err(format!(
            "the host {host:?} contains whitespace, which no host name can"
        ));
    }
    Ok(SshCommand {
        args: args.to_vec(),
        host: host.clone(),
    })
}

/// Checks `remoteOptions.extraSshArgs`: options and their values only, one word each. On a
/// problem, the index of the word at fault and the message.
pub(super) fn check_extra_args(args: &[String]) -> Result<(), (usize, String)> {
    match walk_options(args)? {
        None => Ok(()),
        Some(index) => Err((
            index,
            format!(
                "{:?} is not an ssh option: extraSshArgs holds options and their values, one word each (the host belongs in remote)",
                args[index]
            ),
        )),
    }
}

/// Walks the ssh options at the start of `words` (each with its value, joined or in the next
/// word) and returns the index of the first word that is neither, if any: the host.
fn walk_options(words: &[String]) -> Result<Option<usize>, (usize, String)> {
    let mut index = 0;
    while index < words.len() {
        let at = index;
        let word = &words[at];
        let Some(flags) = word.strip_prefix('-') else {
            return Ok(Some(at));
        };
        if flags.is_empty() || flags.starts_with('-') {
            return Err((at, format!("{word:?} is not an ssh option")));
        }
        for (offset, flag) in flags.char_indices() {
            if let Some(reason) = forbidden_flag(flag) {
                return Err((at, format!("ssh option -{flag} is not allowed: {reason}")));
            }
            if WITH_VALUE.contains(flag) {
                let joined = &flags[offset + flag.len_utf8()..];
                let value = if joined.is_empty() {
                    index += 1;
                    words
                        .get(index)
                        .ok_or_else(|| (at, format!("ssh option -{flag} needs a value")))?
                } else if joined.starts_with(char::is_whitespace) {
                    return Err((
                        at,
                        format!(
                            "{word:?}: write -{flag} and its value as two separate words ({:?} and {:?})",
                            format!("-{flag}"),
                            joined.trim_start()
                        ),
                    ));
                } else {
                    joined
                };
                if flag == 'o' {
                    check_config_option(value).map_err(|message| (at, message))?;
                }
                break;
            }
            if !WITHOUT_VALUE.contains(flag) {
                return Err((at, format!("{word:?}: ssh has no option -{flag}")));
            }
        }
        index += 1;
    }
    Ok(None)
}

/// The value of `-o`: `Key=value` or `Key value`.
fn check_config_option(value: &str) -> Result<(), String> {
    let key = value
        .trim_start()
        .split(|ch: char| ch == '=' || ch.is_whitespace())
        .next()
        .unwrap_or_default();
    match FORBIDDEN_CONFIG
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
    {
        Some((_, reason)) => Err(format!("ssh option -o {key} is not allowed: {reason}")),
        None => Ok(()),
    }
}

/// Splits `text` into words as a POSIX shell would, refusing what a shell would expand or run
/// (see the module documentation).
fn shell_words(text: &str, home: Option<&Path>) -> Result<Vec<String>, String> {
    if text.contains('\0') {
        return Err("contains a NUL character".to_owned());
    }
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has begun: `''` is an (empty) word, blanks are not.
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(format!("unterminated single quote in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => word.push(ch),
                            // A line continuation.
                            Some('\n') => {}
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(format!("unterminated double quote in {text:?}")),
                        },
                        Some('$') => return Err(dollar(text, "$ inside double quotes", chars)),
                        Some('`') => return Err(backquote(text, "` inside double quotes")),
                        Some(ch) => word.push(ch),
                        None => return Err(format!("unterminated double quote in {text:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(ch) => {
                    in_word = true;
                    word.push(ch);
                }
                None => {
                    return Err(format!(
                        "{text:?} ends with a backslash that escapes nothing"
                    ));
                }
            },
            '$' => return Err(dollar(text, "unquoted $", chars)),
            '`' => return Err(backquote(text, "unquoted `")),
            ';' | '|' | '&' | '<' | '>' | '(' | ')' | '\n' => {
                let what = if ch == '\n' {
                    "a line break".to_owned()
                } else {
                    format!("unquoted {ch:?}")
                };
                return Err(format!(
                    "{what} in {text:?}: Iris runs ssh without a shell, so there are no command lists, pipes, redirections or subshells; quote it if it is part of a value"
                ));
            }
            '#' if !in_word => {
                return Err(format!(
                    "unquoted '#' starting a word in {text:?}: a shell would ignore the rest as a comment; quote it if it is part of a value"
                ));
            }
            '~' if !in_word => {
                if !matches!(chars.peek(), None | Some(' ' | '\t' | '\n' | '/')) {
                    return Err(format!(
                        "'~user' is not supported in {text:?}: only ~ and ~/... are expanded (to this machine's home directory); write the full path"
                    ));
                }
                let home = home.ok_or_else(|| {
                    format!(
                        "cannot expand '~' in {text:?}: the home directory is unknown (HOME is not set)"
                    )
                })?;
                let home = home.to_str().ok_or_else(|| {
                    format!("cannot expand '~' in {text:?}: the home directory is not valid UTF-8")
                })?;
                word.push_str(home);
                in_word = true;
            }
            ch => {
                in_word = true;
                word.push(ch);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The problem with a `$` a shell would expand; `rest` is the text after it.
fn dollar(text: &str, what: &str, rest: impl Iterator<Item = char>) -> String {
    let name: String = rest
        .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
        .collect();
    if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
        format!(
            "{what} in {text:?}: Iris runs ssh without a shell, so nothing would expand it; write ${{VAR}} to have the config loader expand a variable, or \\$ to keep a $"
        )
    } else {
        format!(
            "{what} in {text:?}: Iris runs ssh without a shell, so nothing would expand ${name}; write ${{{name}}} to have the config loader expand it, or \\${name} to keep it as it is"
        )
    }
}

fn backquote(text: &str, what: &str) -> String {
    format!(
        "{what} in {text:?}: Iris runs ssh without a shell, so there is no command substitution; write \\` to keep a backquote"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> Option<&'static Path> {
        Some(Path::new("/home/me"))
    }

    fn words(text: &str) -> Result<Vec<String>, String> {
        shell_words(text, home())
    }

    fn args(remote: &str) -> Vec<String> {
        match check_remote(remote, home()) {
            Ok(command) => command.args,
            Err(message) => panic!("{remote:?} should be accepted, got: {message}"),
        }
    }

    fn refused(remote: &str) -> String {
        match check_remote(remote, home()) {
            Ok(command) => panic!("{remote:?} should be refused, got {command:?}"),
            Err(message) => message,
        }
    }

    fn owned(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn words_split_like_a_shell() {
        let table: &[(&str, &[&str])] = &[
            ("ssh host", &["ssh", "host"]),
            ("  ssh\t host  ", &["ssh", "host"]),
            ("ssh 'a b' c", &["ssh", "a b", "c"]),
            ("ssh \"a b\"c", &["ssh", "a bc"]),
            ("ssh a\\ b", &["ssh", "a b"]),
            ("ssh ''", &["ssh", ""]),
            (
                "ssh '$x' '`y`' ';|&<>()#'",
                &["ssh", "$x", "`y`", ";|&<>()#"],
            ),
            (
                r#"ssh "\"q\" \\ \$HOME \` \n""#,
                &["ssh", r#""q" \ $HOME ` \n"#],
            ),
            ("ssh \\$HOME \\; \\\\", &["ssh", "$HOME", ";", "\\"]),
            ("ssh a#b", &["ssh", "a#b"]),
            ("ssh \"it's\" 'say \"hi\"'", &["ssh", "it's", "say \"hi\""]),
            ("ssh a\\\nb", &["ssh", "ab"]),
            (
                "ssh ~ ~/k a~ '~/q' \\~",
                &["ssh", "/home/me", "/home/me/k", "a~", "~/q", "~"],
            ),
            ("ssh -i~/k", &["ssh", "-i~/k"]),
            ("ssh *? [x] {a,b} !", &["ssh", "*?", "[x]", "{a,b}", "!"]),
        ];
        for (text, expected) in table {
            assert_eq!(words(text), Ok(owned(expected)), "{text}");
        }
    }

    #[test]
    fn what_a_shell_would_expand_or_run_is_refused() {
        let table = [
            ("ssh 'a", "unterminated single quote in \"ssh 'a\""),
            ("ssh \"a", "unterminated double quote in \"ssh \\\"a\""),
            (
                "ssh \"a\\",
                "unterminated double quote in \"ssh \\\"a\\\\\"",
            ),
            (
                "ssh a\\",
                "\"ssh a\\\\\" ends with a backslash that escapes nothing",
            ),
            (
                "ssh $HOST",
                "unquoted $ in \"ssh $HOST\": Iris runs ssh without a shell, so nothing would expand $HOST; write ${HOST} to have the config loader expand it, or \\$HOST to keep it as it is",
            ),
            (
                "ssh \"$HOST\"",
                "$ inside double quotes in \"ssh \\\"$HOST\\\"\": Iris runs ssh without a shell, so nothing would expand $HOST; write ${HOST} to have the config loader expand it, or \\$HOST to keep it as it is",
            ),
            (
                "ssh ${HOST}",
                "unquoted $ in \"ssh ${HOST}\": Iris runs ssh without a shell, so nothing would expand it; write ${VAR} to have the config loader expand a variable, or \\$ to keep a $",
            ),
            (
                "ssh `h`",
                "unquoted ` in \"ssh `h`\": Iris runs ssh without a shell, so there is no command substitution; write \\` to keep a backquote",
            ),
            (
                "ssh \"`h`\"",
                "` inside double quotes in \"ssh \\\"`h`\\\"\": Iris runs ssh without a shell, so there is no command substitution; write \\` to keep a backquote",
            ),
            (
                "ssh host; rm x",
                "unquoted ';' in \"ssh host; rm x\": Iris runs ssh without a shell, so there are no command lists, pipes, redirections or subshells; quote it if it is part of a value",
            ),
            (
                "ssh host\nrm x",
                "a line break in \"ssh host\\nrm x\": Iris runs ssh without a shell, so there are no command lists, pipes, redirections or subshells; quote it if it is part of a value",
            ),
            (
                "ssh host #c",
                "unquoted '#' starting a word in \"ssh host #c\": a shell would ignore the rest as a comment; quote it if it is part of a value",
            ),
            (
                "ssh -i ~me/k host",
                "'~user' is not supported in \"ssh -i ~me/k host\": only ~ and ~/... are expanded (to this machine's home directory); write the full path",
            ),
            ("ssh a\0b", "contains a NUL character"),
        ];
        for (text, message) in table {
            assert_eq!(words(text), Err(message.to_owned()), "{text}");
        }
        for operator in ["|", "&", "<", ">", "(", ")"] {
            let text = format!("ssh a{operator}b");
            let error = words(&text).expect_err(&text);
            assert!(
                error.starts_with(&format!("unquoted '{operator}' in ")),
                "{error}"
            );
        }
        assert_eq!(
            shell_words("ssh -i ~/k h", None),
            Err(
                "cannot expand '~' in \"ssh -i ~/k h\": the home directory is unknown (HOME is not set)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn remote_forms() {
        let good: &[(&str, &[&str])] = &[
            ("ssh host", &["host"]),
            ("ssh user@host", &["user@host"]),
            ("ssh -J bastion host", &["-J", "bastion", "host"]),
            (
                "ssh -p 2222 -i ~/.ssh/k -o BatchMode=yes h",
                &[
                    "-p",
                    "2222",
                    "-i",
                    "/home/me/.ssh/k",
                    "-o",
                    "BatchMode=yes",
                    "h",
                ],
            ),
            ("ssh -p2222 h", &["-p2222", "h"]),
            ("ssh -oBatchMode=yes h", &["-oBatchMode=yes", "h"]),
            ("ssh -AC host", &["-AC", "host"]),
            ("ssh -Cp 22 host", &["-Cp", "22", "host"]),
            (
                "ssh -T -4 -v -q -x host",
                &["-T", "-4", "-v", "-q", "-x", "host"],
            ),
            (
                "ssh -o 'ProxyCommand=ssh -W %h:%p bastion' host",
                &["-o", "ProxyCommand=ssh -W %h:%p bastion", "host"],
            ),
            (
                "ssh -o \"ProxyCommand ssh -W %h:%p bastion\" host",
                &["-o", "ProxyCommand ssh -W %h:%p bastion", "host"],
            ),
            (
                "ssh -i \"/keys/my key\" host",
                &["-i", "/keys/my key", "host"],
            ),
            (
                "ssh -i /keys/my\\ key host",
                &["-i", "/keys/my key", "host"],
            ),
            ("ssh -o 'SetEnv=A=$x' host", &["-o", "SetEnv=A=$x", "host"]),
            ("'ssh' \"host\"", &["host"]),
            (
                "ssh -B eth0 -b 10.0.0.1 -c aes128-ctr -D 1080 -E /tmp/log -e none -F /cfg -I pkcs -l me -m hmac-sha2-256 -P tag -R 9000:localhost:80 -w 0:1 -L 80:x:80 host",
                &[
                    "-B",
                    "eth0",
                    "-b",
                    "10.0.0.1",
                    "-c",
                    "aes128-ctr",
                    "-D",
                    "1080",
                    "-E",
                    "/tmp/log",
                    "-e",
                    "none",
                    "-F",
                    "/cfg",
                    "-I",
                    "pkcs",
                    "-l",
                    "me",
                    "-m",
                    "hmac-sha2-256",
                    "-P",
                    "tag",
                    "-R",
                    "9000:localhost:80",
                    "-w",
                    "0:1",
                    "-L",
                    "80:x:80",
                    "host",
                ],
            ),
        ];
        for (remote, expected) in good {
            assert_eq!(args(remote), owned(expected), "{remote}");
        }
        assert_eq!(
            check_remote("ssh -J b 'deploy@app'", home()).map(|command| command.host),
            Ok("deploy@app".to_owned())
        );

        let expected =
            "expected \"ssh [options] host\", such as \"ssh user@host\" or \"ssh -J bastion host\"";
        let bad = [
            ("", format!("{expected}, got \"\"")),
            ("user@host", format!("{expected}, got \"user@host\"")),
            ("docker exec -i x", format!("{expected}, got \"docker exec -i x\"")),
            ("ssh", format!("{expected}; no host in \"ssh\"")),
            ("ssh -p 22", format!("{expected}; no host in \"ssh -p 22\"")),
            ("ssh -p", "ssh option -p needs a value".to_owned()),
            ("ssh -Ao", "ssh option -o needs a value".to_owned()),
            (
                "ssh host cmd",
                "\"cmd\" follows the host \"host\"; the host must come last (Iris appends the remote command itself)".to_owned(),
            ),
            ("ssh -- host", "\"--\" is not an ssh option".to_owned()),
            ("ssh - host", "\"-\" is not an ssh option".to_owned()),
            ("ssh -Z host", "\"-Z\": ssh has no option -Z".to_owned()),
            ("ssh -AZ host", "\"-AZ\": ssh has no option -Z".to_owned()),
            ("ssh \"my host\"", "the host \"my host\" contains whitespace, which no host name can".to_owned()),
            ("ssh ''", format!("{expected}; the host is empty in \"ssh ''\"")),
            (
                "ssh '-p 22' host",
                "\"-p 22\": write -p and its value as two separate words (\"-p\" and \"22\")".to_owned(),
            ),
            ("ssh 'a", "unterminated single quote in \"ssh 'a\"".to_owned()),
        ];
        for (remote, message) in bad {
            assert_eq!(refused(remote), message, "{remote}");
        }
        assert!(refused("ssh $HOME").starts_with("unquoted $ in \"ssh $HOME\": "));
    }

    #[test]
    fn options_that_break_an_agent_connection_are_refused() {
        let table = [
            (
                "-O",
                "check",
                "ssh option -O is not allowed: it sends a command to a control master instead of connecting (Iris manages the control socket itself)",
            ),
            (
                "-W",
                "h:22",
                "ssh option -W is not allowed: it forwards ssh's stdin and stdout to a port instead of running the agent",
            ),
            (
                "-N",
                "",
                "ssh option -N is not allowed: it runs no remote command, and Iris runs the agent as the remote command",
            ),
            (
                "-f",
                "",
                "ssh option -f is not allowed: it sends ssh to the background, and Iris talks to the agent through ssh's stdin and stdout",
            ),
            (
                "-M",
                "",
                "ssh option -M is not allowed: Iris manages the control socket itself",
            ),
            (
                "-S",
                "/tmp/s",
                "ssh option -S is not allowed: Iris manages the control socket itself",
            ),
            (
                "-t",
                "",
                "ssh option -t is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)",
            ),
            (
                "-tt",
                "",
                "ssh option -t is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)",
            ),
            (
                "-Ct",
                "",
                "ssh option -t is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)",
            ),
            (
                "-n",
                "",
                "ssh option -n is not allowed: it closes ssh's stdin, through which Iris talks to the agent",
            ),
            (
                "-s",
                "",
                "ssh option -s is not allowed: it runs a subsystem instead of the agent",
            ),
            (
                "-G",
                "",
                "ssh option -G is not allowed: ssh prints its configuration and exits without connecting",
            ),
            (
                "-V",
                "",
                "ssh option -V is not allowed: ssh prints its version and exits without connecting",
            ),
            (
                "-Q",
                "cipher",
                "ssh option -Q is not allowed: ssh lists what it supports and exits without connecting",
            ),
            (
                "-o",
                "ControlMaster=auto",
                "ssh option -o ControlMaster is not allowed: Iris manages the control socket itself",
            ),
            (
                "-ocontrolpath=/x",
                "",
                "ssh option -o controlpath is not allowed: Iris manages the control socket itself",
            ),
            (
                "-o",
                "'RequestTTY yes'",
                "ssh option -o RequestTTY is not allowed: Iris talks to the agent through pipes and needs no tty (a tty would alter what the agent writes)",
            ),
            (
                "-o",
                "RemoteCommand=ls",
                "ssh option -o RemoteCommand is not allowed: Iris runs the agent as the remote command",
            ),
            (
                "-o",
                "SessionType=none",
                "ssh option -o SessionType is not allowed: Iris runs the agent as the remote command",
            ),
        ];
        for (option, value, message) in table {
            let remote = format!("ssh {option} {value} host");
            assert_eq!(refused(&remote), message, "{remote}");
            let extra: Vec<String> = [option, value]
                .into_iter()
                .filter(|word| !word.is_empty())
                .map(|word| word.trim_matches('\'').to_owned())
                .collect();
            assert_eq!(
                check_extra_args(&extra),
                Err((0, message.to_owned())),
                "{extra:?}"
            );
        }
        // The value of an option is not an option.
        assert_eq!(
            args("ssh -o 'ProxyCommand=ssh -W %h:%p -t b' -l -t host"),
            owned(&["-o", "ProxyCommand=ssh -W %h:%p -t b", "-l", "-t", "host"])
        );
    }

    #[test]
    fn extra_args_are_options_and_values_only() {
        let ok = |list: &[&str]| check_extra_args(&owned(list));
        assert_eq!(ok(&[]), Ok(()));
        assert_eq!(ok(&["-o", "IdentitiesOnly=yes", "-C", "-p2222"]), Ok(()));
        assert_eq!(ok(&["-o", "-t"]), Ok(()));
        assert_eq!(
            ok(&["-C", "host"]),
            Err((
                1,
                "\"host\" is not an ssh option: extraSshArgs holds options and their values, one word each (the host belongs in remote)".to_owned()
            ))
        );
        assert_eq!(
            ok(&["-C", "-o"]),
            Err((1, "ssh option -o needs a value".to_owned()))
        );
        assert_eq!(
            ok(&["-p 22"]),
            Err((
                0,
                "\"-p 22\": write -p and its value as two separate words (\"-p\" and \"22\")"
                    .to_owned()
            ))
        );
    }
}
