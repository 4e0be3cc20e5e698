//! Shell completions and man pages, for both binaries: `completions
//! bash|zsh|fish` and `man [--dir DIR]` print what clap knows of the
//! command line, so they never drift from it.

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

impl DocsCommand {
    /// Prints or writes what was asked about `command` (the whole CLI).
    ///
    /// # Errors
    /// When a man page cannot be written.
    pub fn run(&self, command: clap::Command) -> std::io::Result<()> {
        let done = match self {
            DocsCommand::Completions { shell } => print_completions(*shell, command),
            DocsCommand::Man { dir } => write_man(command, dir.as_deref()),
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

/// Prints `command`'s man page to stdout, or, with `dir`, writes it and
/// one page per subcommand (`ferry-backup.1`) there.
///
/// # Errors
/// When a page cannot be written.
pub fn write_man(command: clap::Command, dir: Option<&Path>) -> std::io::Result<()> {
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(command).render(&mut out)?;
        return out.flush();
    };
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_string();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
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
    Ok(())
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
        write_man(command(), Some(dir.path())).unwrap();
        let main = std::fs::read_to_string(dir.path().join("tool.1")).unwrap();
        assert!(main.contains(".TH tool"), "{main}");
        let sub = std::fs::read_to_string(dir.path().join("tool-go.1")).unwrap();
        assert!(sub.contains("goes"), "{sub}");
    }
}
