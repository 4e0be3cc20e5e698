//! Shell completions and man pages, for both binaries: `completions
//! bash|zsh|fish` and `man [--dir DIR]` print what clap knows of the
//! command line, so they never drift from it; the main page adds what clap
//! cannot know (EXAMPLES, EXIT STATUS, FILES, ENVIRONMENT, from [`Extras`]),
//! and each annotated example configuration becomes its section-5 page
//! ([`config_page`]): `relay.toml(5)`, `endpoint.toml(5)`.

use std::io::Write;
use std::path::Path;

use clap_complete::Shell;

/// `completions` and `man`, the same in both binaries (flattened into
/// their subcommands).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DocsCommand {
    /// Print a shell completion script (e.g. `completions bash >
    /// /etc/bash_completion.d/NAME`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), or write it and one per subcommand into DIR.
    Man {
        /// Write `NAME.1` and `NAME-SUBCOMMAND.1` here instead of printing.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// What a binary's main man page says beyond its options: each section's
/// title and its items (a term, in bold, and what it means).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// `(section title, [(term, text)])`, in order.
    pub sections: &'static [(&'static str, &'static [(&'static str, &'static str)])],
    /// Its configuration file's page: the file's name (`relay.toml`), one
    /// line on what it is, and its annotated example.
    pub config: Option<(&'static str, &'static str, &'static str)>,
    /// Whether `completions` prints the script that asks the binary itself
    /// (values only it knows, such as the set names of endpoint.toml; see
    /// [`complete_from_env`]) rather than a fixed one.
    pub dynamic_completions: bool,
}

pub use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

/// Answers the shell's completion request and exits, when the binary was
/// run for one (`COMPLETE=bash ferry -- …`, from the script `completions`
/// printed); does nothing otherwise. Call it first in `main`.
pub fn complete_from_env(command: fn() -> clap::Command) {
    clap_complete::CompleteEnv::with_factory(command).complete();
}

impl DocsCommand {
    /// Prints or writes what was asked about `command` (the whole CLI).
    ///
    /// # Errors
    /// When a man page cannot be written.
    pub fn run(&self, command: clap::Command, extras: &Extras) -> std::io::Result<()> {
        let done = match self {
            DocsCommand::Completions { shell } if extras.dynamic_completions => {
                print_registration(*shell, &command)
            }
            DocsCommand::Completions { shell } => print_completions(*shell, command),
            DocsCommand::Man { dir } => write_man(command, dir.as_deref(), extras),
        };
        match done {
            // `ferry man | head`: the reader had enough.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Prints the completion script of `command` for `shell` to stdout.
///
/// # Errors
/// When stdout cannot be written.
pub fn print_completions(shell: Shell, mut command: clap::Command) -> std::io::Result<()> {
    let name = command.get_name().to_string();
    // Made whole first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()
}

/// Prints the script that makes `shell` ask the binary itself for
/// completions (`COMPLETE=SHELL NAME -- ARGS`).
///
/// # Errors
/// When stdout cannot be written, or the shell has no such script.
pub fn print_registration(shell: Shell, command: &clap::Command) -> std::io::Result<()> {
    use clap_complete::env::EnvCompleter;
    let name = command.get_name();
    let mut script = Vec::new();
    let completer: &dyn EnvCompleter = match shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
        Shell::Elvish => &clap_complete::env::Elvish,
        Shell::PowerShell => &clap_complete::env::Powershell,
        _ => return Err(std::io::Error::other("no completion script for that shell")),
    };
    completer.write_registration("COMPLETE", name, name, name, &mut script)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()
}

/// Prints `command`'s man page to stdout, or, with `dir`, writes it and
/// one page per subcommand (`ferry-backup.1`) there, and the configuration
/// file's page (`relay.toml.5`) when `extras` has one.
///
/// # Errors
/// When a page cannot be written.
pub fn write_man(
    command: clap::Command,
    dir: Option<&Path>,
    extras: &Extras,
) -> std::io::Result<()> {
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        out.write_all(&main_page(command, extras)?)?;
        return out.flush();
    };
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_string();
    std::fs::write(
        dir.join(format!("{name}.1")),
        main_page(command.clone(), extras)?,
    )?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("{name}-{}", sub.get_name());
        let mut page = Vec::new();
        // The page's title and synopsis name the whole command line.
        let sub = sub
            .clone()
            .display_name(full.clone())
            .bin_name(format!("{name} {}", sub.get_name()));
        clap_mangen::Man::new(sub).render(&mut page)?;
        std::fs::write(dir.join(format!("{full}.1")), page)?;
    }
    if let Some((file, about, example)) = extras.config {
        std::fs::write(
            dir.join(format!("{file}.5")),
            config_page(file, about, &name, example),
        )?;
    }
    Ok(())
}

/// The main page: clap's, then the extra sections.
fn main_page(command: clap::Command, extras: &Extras) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    for (title, items) in extras.sections {
        page.extend_from_slice(format!(".SH {title}\n").as_bytes());
        for (term, text) in *items {
            page.extend_from_slice(
                format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text)).as_bytes(),
            );
        }
    }
    if let Some((file, _, _)) = extras.config {
        page.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}(5)\n", roff(file)).as_bytes());
    }
    Ok(page)
}

/// `text` safe in roff: backslashes and hyphens escaped, no line taken
/// for a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The section-5 page of configuration file `file` (of program `program`)
/// from its annotated example: the comment before the first setting is the
/// description; each `[table]` a subsection; each setting (commented out or
/// not) an item with its example value, explained by the comment above it
/// or beside it.
pub fn config_page(file: &str, about: &str, program: &str, example: &str) -> String {
    let mut page = format!(
        ".TH {} 5 \"\" \"{program}\" \"File formats\"\n.SH NAME\n{} \\- {}\n.SH DESCRIPTION\n",
        file.to_uppercase(),
        roff(file),
        roff(about)
    );
    let mut prose: Vec<String> = Vec::new();
    let mut started = false;
    let flush = |page: &mut String, prose: &mut Vec<String>| {
        if !prose.is_empty() {
            page.push_str(&format!(".PP\n{}\n", roff(&prose.join(" "))));
            prose.clear();
        }
    };
    for line in example.lines() {
        let trimmed = line.trim();
        if let Some(table) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if !started {
                started = true;
                flush(&mut page, &mut prose);
                page.push_str(".SH SETTINGS\n");
            }
            page.push_str(&format!(".SS [{}]\n", roff(table)));
            flush(&mut page, &mut prose);
        } else if let Some((key, value, note)) = setting(trimmed) {
            if !started {
                // The comment just above the first setting is that
                // setting's; what came before it was flushed as the
                // description at the blank line.
                started = true;
                page.push_str(".SH SETTINGS\n");
            }
            page.push_str(&format!(".TP\n\\fB{}\\fR = {}\n", roff(key), roff(value)));
            let mut text = std::mem::take(&mut prose).join(" ");
            if let Some(note) = note {
                text = if text.is_empty() {
                    note.to_string()
                } else {
                    format!("{text} ({note})")
                };
            }
            if !text.is_empty() {
                page.push_str(&format!("{}\n", roff(&text)));
            }
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            prose.push(comment.trim().to_string());
        } else if trimmed.is_empty() {
            flush(&mut page, &mut prose);
        }
    }
    flush(&mut page, &mut prose);
    page.push_str(&format!(
        ".SH EXAMPLE\nThe settings above, as a file:\n.PP\n.nf\n{}\n.fi\n.SH \"SEE ALSO\"\n{program}(1)\n",
        roff(example.trim_end())
    ));
    page
}

/// A setting line, `key = value  # note` or commented out: its key, value
/// and note.
fn setting(line: &str) -> Option<(&str, &str, Option<&str>)> {
    let line = line.strip_prefix('#').map_or(line, str::trim_start);
    let (key, rest) = line.split_once('=')?;
    let key = key.trim();
    let is_key = (key.starts_with('"') && key.ends_with('"') && key.len() > 1)
        || (!key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
    if !is_key {
        return None;
    }
    let (value, note) = match rest.split_once(" #") {
        Some((value, note)) => (value.trim(), Some(note.trim())),
        None => (rest.trim(), None),
    };
    Some((key, value, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("tool")
            .about("a tool")
            .subcommand(clap::Command::new("go").about("goes"))
    }

    #[test]
    fn pages_for_the_command_and_each_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        write_man(command(), Some(dir.path()), &Extras::default()).unwrap();
        let main = std::fs::read_to_string(dir.path().join("tool.1")).unwrap();
        assert!(main.contains(".TH tool"), "{main}");
        let sub = std::fs::read_to_string(dir.path().join("tool-go.1")).unwrap();
        assert!(sub.contains("goes"), "{sub}");
    }

    #[test]
    fn a_config_page_explains_each_setting_under_its_table() {
        let example = "# tool configuration.\n\n# Where to listen.\nlisten = \"0.0.0.0:1\"\n\n[web]\n# token-file = \"t\"   # mode 0600\n# A sentence, not a setting: a = b is prose.\nport = 7\n";
        let page = config_page("tool.toml", "the tool's settings", "tool", example);
        assert!(page.contains(".TH TOOL.TOML 5"), "{page}");
        assert!(page.contains("tool configuration."), "{page}");
        assert!(
            page.contains(".TP\n\\fBlisten\\fR = \"0.0.0.0:1\"\nWhere to listen.\n"),
            "{page}"
        );
        assert!(page.contains(".SS [web]"), "{page}");
        assert!(
            page.contains("\\fBtoken\\-file\\fR = \"t\"\nmode 0600"),
            "{page}"
        );
        assert!(
            page.contains("\\fBport\\fR = 7\nA sentence, not a setting: a = b is prose."),
            "{page}"
        );
    }
}
