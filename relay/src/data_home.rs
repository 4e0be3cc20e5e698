//! Which data directory an admin command acts on, and as whom: `--data`,
//! else `FERRY_RELAY_DATA` (both read by the command line), else the
//! packaged relay's; and, for root on a directory another user owns (the
//! packaged `ferry-relay` user), the one line to type instead.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Where the package keeps the relay's data (deploy/package.sh).
pub const PACKAGED_DATA: &str = "/var/lib/ferry-relay";

/// The data directory to use: the one given, else the packaged one when
/// it exists.
///
/// # Errors
/// Neither: one line saying how to name one.
pub fn data_root(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(root) => Ok(root),
        None if Path::new(PACKAGED_DATA).is_dir() => Ok(PathBuf::from(PACKAGED_DATA)),
        None => bail!(
            "no data directory: pass --data DIR or set FERRY_RELAY_DATA (a packaged relay keeps its own in {PACKAGED_DATA})"
        ),
    }
}

/// Refuses root acting on a data directory another user owns: files it
/// wrote there would be root's, and the relay could no longer read them.
/// The error is the command to type instead.
///
/// # Errors
/// When run as root on a directory owned by another user.
pub fn check_owner(root: &Path, args: &[String]) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Ok(owner) = std::fs::metadata(root).map(|m| m.uid()) else {
        return Ok(());
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    match as_owner(owner, &passwd, root, args) {
        Some(line) => bail!(
            "{} belongs to user {}, whose relay it is; run the command as that user: {line}",
            root.display(),
            user_name(owner, &passwd).unwrap_or_else(|| owner.to_string())
        ),
        None => Ok(()),
    }
}

/// The command line as the directory's owner, when the owner is not root.
fn as_owner(owner: u32, passwd: &str, root: &Path, args: &[String]) -> Option<String> {
    if owner == 0 {
        return None;
    }
    let user = user_name(owner, passwd).unwrap_or_else(|| format!("#{owner}"));
    let mut line = vec!["sudo".to_string(), "-u".into(), user, "ferry-relay".into()];
    if !args
        .iter()
        .any(|a| a == "--data" || a.starts_with("--data="))
    {
        line.extend(["--data".to_string(), root.display().to_string()]);
    }
    line.extend(args.iter().map(|a| quoted(a)));
    Some(line.join(" "))
}

/// The name of user `uid` in `passwd` (the /etc/passwd format).
fn user_name(uid: u32, passwd: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_string())
    })
}

/// `arg` as a shell word.
fn quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nferry-relay:x:998:998::/var/lib/ferry-relay:/usr/sbin/nologin\n";

    #[test]
    fn root_on_the_relays_directory_is_told_the_line_to_type() {
        let args: Vec<String> = ["pair", "--name", "Anna's laptop"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            as_owner(998, PASSWD, Path::new(PACKAGED_DATA), &args).unwrap(),
            "sudo -u ferry-relay ferry-relay --data /var/lib/ferry-relay pair --name 'Anna'\\''s laptop'"
        );
        let with_data: Vec<String> = ["--data", "/srv/r", "gc"].map(String::from).to_vec();
        assert_eq!(
            as_owner(998, PASSWD, Path::new("/srv/r"), &with_data).unwrap(),
            "sudo -u ferry-relay ferry-relay --data /srv/r gc"
        );
        assert_eq!(as_owner(0, PASSWD, Path::new("/srv/r"), &with_data), None);
        assert_eq!(
            as_owner(1234, PASSWD, Path::new("/srv/r"), &with_data).unwrap(),
            "sudo -u #1234 ferry-relay --data /srv/r gc"
        );
    }
}
