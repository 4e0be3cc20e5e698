//! A closed standard output (`ferry status | head -1`) ends the command
//! quietly. Rust ignores SIGPIPE, so a write to a pipe whose reader is gone
//! fails with EPIPE and `println!` panics; setting SIGPIPE back to its
//! default would need unsafe code, so the panic is caught instead.

/// Exit status of a process that SIGPIPE ended (128 + 13), as shells show.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Installs a panic hook under which a panic from printing to a closed
/// pipe exits with [`BROKEN_PIPE_EXIT`] and says nothing; every other
/// panic goes to the hook that was there before.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe(message) {
            std::process::exit(i32::from(BROKEN_PIPE_EXIT));
        }
        previous(info);
    }));
}

/// Whether an error (given as its chain of causes, as
/// `anyhow::Error::chain` gives it) came from writing to a closed pipe: a
/// command that wrote with `write!` rather than `println!` ends as quietly.
pub fn is_closed_pipe<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> bool {
    chain.any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether a panic message is the standard library's for printing to a
/// closed pipe.
fn is_broken_pipe(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printing_to_a_closed_pipe_counts() {
        assert!(is_broken_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe("failed printing to stdout: No space left"));
        assert!(!is_broken_pipe("index out of bounds: Broken pipe"));
    }
}
