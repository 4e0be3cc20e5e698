//! How a command that failed says so: one line on stderr, and with
//! `--json` also one JSON object on stdout (`{"error": "..."}`), so a script
//! that reads stdout gets an answer rather than nothing.

/// Writes `message` (the whole error, causes included) as `PROGRAM: error:
/// MESSAGE` on stderr and, when the command line asked for `--json`, as
/// `{"error": MESSAGE}` on stdout.
pub fn report(program: &str, message: &str) {
    eprintln!("{program}: error: {message}");
    if std::env::args_os().skip(1).any(|arg| arg == "--json") {
        println!("{}", serde_json::json!({ "error": message }));
    }
}
