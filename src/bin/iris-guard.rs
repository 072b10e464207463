//! `iris-guard`: the orphan guard as a program of its own (see `iris::guard`). Iris starts it
//! when it is installed next to the `iris` executable (`cargo install` puts it there), else
//! runs `iris guard`: the same loop, in a bigger program. Small on purpose: it lives as long
//! as Iris and only waits, then signals.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let grace = match (args.next(), args.next()) {
        (Some(argument), None) => argument
            .strip_prefix("--grace-ms=")
            .and_then(|grace| grace.parse::<u64>().ok()),
        _ => None,
    };
    let Some(grace) = grace else {
        eprintln!(
            "usage: iris-guard --grace-ms=N (started by Iris, which writes the process groups to stop on its stdin)"
        );
        return ExitCode::from(2);
    };
    match iris::guard::run(Duration::from_millis(grace)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("iris guard: {error}");
            ExitCode::FAILURE
        }
    }
}
