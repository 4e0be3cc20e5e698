//! `ferry key`: the client's vault key, from which every key of its sealed
//! data comes (`ferry_protocol::sealed`), kept where a lost laptop cannot
//! take it along: on paper (`export --paper`, `import`) and on the relay
//! wrapped under a passphrase (`passphrase`, then `recover` on the machine
//! that took the client over with `ferry-relay pair --replace`).
//!
//! The vault key is made at first need (these commands, a sealed backup),
//! not at pairing, so a new machine that took a client over recovers the
//! client's vault instead of making another. It lives in
//! `STATE/keys/vault.key` at mode 0600.
//!
//! A passphrase comes from `--passphrase-file FILE`, else the file
//! `FERRY_PASSPHRASE_FILE` names, else the terminal (not echoed); never
//! from the command line, where other users could see it.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ferry_net::io::keyfile;
use ferry_protocol::keys::{from_hex, to_hex};
use ferry_protocol::message::{Message, KEY_WRAP_SINCE_MINOR};
use ferry_protocol::sealed::VaultKey;
use ferry_protocol::{recovery, vault};
use zeroize::Zeroizing;

use crate::client::{unexpected, RelayClient};
use crate::state::StateDir;

/// `ferry key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Set or change the passphrase that guards this client's vault key on
    /// the relay (a new machine recovers the key with it).
    Passphrase {
        /// Read the passphrase from this file (else FERRY_PASSPHRASE_FILE,
        /// else the terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Also wrap the vault key to the organisation's recovery key, this
        /// recipient (`ferry-recipient-…`, from its operator). The relay's
        /// word alone is never taken for it: a relay that named its own
        /// key would otherwise get every vault.
        #[arg(long)]
        recovery_recipient: Option<String>,
    },
    /// Print the vault key as text to keep on paper.
    Export {
        /// As text with a checksum, in groups of four (the only form).
        #[arg(long)]
        paper: bool,
    },
    /// Read a vault key printed by `ferry key export --paper` from FILE (or
    /// `-` for standard input).
    Import {
        /// The paper key's text.
        file: PathBuf,
    },
    /// Fetch this client's vault key from the relay and open it with its
    /// passphrase (on a machine that took the client over), or with the
    /// organisation's recovery identity.
    Recover {
        /// Read the passphrase from this file (else FERRY_PASSPHRASE_FILE,
        /// else the terminal).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Open it with this recovery identity (the operator's offline
        /// secret, from `ferry-relay recovery-key new`) instead.
        #[arg(long, conflicts_with = "passphrase_file")]
        identity: Option<PathBuf>,
    },
}

/// Runs `ferry key …`.
///
/// # Errors
/// One line for the user: a weak or wrong passphrase, a paper key with a
/// typo, a vault key that would be replaced, a relay too old or unreachable.
pub async fn run(state: &StateDir, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Passphrase {
            passphrase_file,
            recovery_recipient,
        } => set_passphrase(state, passphrase_file, recovery_recipient.as_deref()).await?,
        KeyCommand::Export { .. } => {
            let vault = vault_or_new(state)?;
            print!("{}", vault::paper(&vault));
            println!("fingerprint: {}", vault::fingerprint(&vault));
            eprintln!("whoever holds this text can open this client's sealed backups: keep it as you keep a house key");
        }
        KeyCommand::Import { file } => {
            let text = Zeroizing::new(read_text(&file)?);
            let imported = vault::from_paper(&text)?;
            keep(state, &imported)?;
            println!("vault key {} imported", vault::fingerprint(&imported));
        }
        KeyCommand::Recover {
            passphrase_file,
            identity,
        } => recover(state, passphrase_file, identity).await?,
    }
    Ok(())
}

/// `ferry key passphrase`: the vault key wrapped under a new passphrase
/// and, when the owner names the recovery recipient (`given`) and the
/// relay names the same, to it; both kept on the relay.
async fn set_passphrase(
    state: &StateDir,
    file: Option<PathBuf>,
    given: Option<&str>,
) -> Result<()> {
    let given = given.map(recovery::Recipient::decode).transpose()?;
    let vault = vault_or_new(state)?;
    let passphrase = passphrase(file.as_deref(), true)?;
    if let Err(why) = vault::check_passphrase(&passphrase) {
        bail!("a weak passphrase: {why}; nothing was changed");
    }
    let wrapped = vault::wrap(&vault, passphrase.as_bytes(), random(), random());
    let mut client = key_client(state).await?;
    let (_, offered) = key_wraps(&mut client).await?;
    let recipient = trusted_recipient(given, offered)?;
    kept(client.request(&Message::SetKeyWrap { wrapped }).await?)?;
    if let Some(recipient) = &recipient {
        let wrapped = recovery::wrap_to(&vault, recipient, random(), random());
        kept(
            client
                .request(&Message::SetRecoveryWrap { wrapped })
                .await?,
        )?;
    }
    client.close().await;
    println!(
        "the vault key ({}) is kept on the relay under this passphrase{}: a machine that takes this client over recovers it with `ferry key recover`",
        vault::fingerprint(&vault),
        if recipient.is_some() {
            " and for the organisation's recovery key"
        } else {
            ""
        }
    );
    Ok(())
}

/// The recovery recipient to wrap to: the one the owner gave, when the
/// relay names the same one. The relay alone is never believed (it could
/// name its own key); one it names that the owner did not give is only
/// mentioned.
///
/// # Errors
/// The owner gave one and the relay names another, or none.
fn trusted_recipient(
    given: Option<recovery::Recipient>,
    offered: Option<recovery::Recipient>,
) -> Result<Option<recovery::Recipient>> {
    match (given, offered) {
        (Some(given), Some(offered)) if given == offered => Ok(Some(given)),
        (Some(given), _) => bail!(
            "the relay does not name recovery recipient {} (its relay.toml [sealed] recovery-recipient differs or is unset); nothing was changed",
            given.encode()
        ),
        (None, Some(offered)) => {
            eprintln!(
                "the relay names recovery recipient {}; the vault key is wrapped to it only when you give it too (--recovery-recipient), as your organisation told you",
                offered.encode()
            );
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}

/// `ferry key recover`: the vault key the relay keeps, opened with the
/// passphrase or the recovery identity, kept here.
async fn recover(state: &StateDir, file: Option<PathBuf>, identity: Option<PathBuf>) -> Result<()> {
    let mut client = key_client(state).await?;
    let (wraps, _) = key_wraps(&mut client).await?;
    client.close().await;
    let (under_passphrase, to_recipient) = wraps;
    let recovered = match identity {
        Some(path) => {
            let text = Zeroizing::new(read_text(&path)?);
            let identity = recovery::Identity::decode(&text)?;
            let wrapped = to_recipient.context(
                "the relay keeps no copy of this client's vault key for the recovery key (its endpoint never wrapped it: the relay had no [sealed] recovery-recipient then)",
            )?;
            recovery::unwrap_with(&wrapped, &identity)
        }
        None => {
            let wrapped = under_passphrase.context(
                "the relay keeps no passphrase-wrapped key for this client (set one with `ferry key passphrase` on a machine that has the key, or import its paper key)",
            )?;
            let passphrase = passphrase(file.as_deref(), false)?;
            vault::unwrap(&wrapped, passphrase.as_bytes())
        }
    }
    .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
    keep(state, &recovered)?;
    println!("vault key {} recovered", vault::fingerprint(&recovered));
    Ok(())
}

/// This client's vault key for a sealed job: the one kept here; else the
/// relay's copy under the owner's passphrase (from `--passphrase-file`'s
/// `FERRY_PASSPHRASE_FILE` or the terminal), then kept here; else, when
/// `may_create` and the client has no snapshot on the relay, a new one.
///
/// # Errors
/// A wrong passphrase (one line, nothing written), or a client whose
/// history was sealed under a key this endpoint does not have.
pub async fn vault_for(
    state: &StateDir,
    client: &mut RelayClient,
    may_create: bool,
) -> Result<VaultKey> {
    if let Some(vault) = load_vault(state)? {
        return Ok(vault);
    }
    let ((under_passphrase, _), _) = key_wraps(client).await?;
    if let Some(wrapped) = under_passphrase {
        let passphrase = passphrase(None, false)?;
        let vault = vault::unwrap(&wrapped, passphrase.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}; nothing was written"))?;
        keep(state, &vault)?;
        return Ok(vault);
    }
    let history = match client
        .request(&Message::ListSnapshots { set: None })
        .await?
    {
        Message::SnapshotList { snapshots } => !snapshots.is_empty(),
        other => return Err(unexpected("SnapshotList", &other)),
    };
    if history || !may_create {
        bail!(
            "this endpoint has no vault key for this sealed client{}: import it (`ferry key import FILE`) or recover it (`ferry key recover`)",
            if history { ", whose snapshots were sealed with one" } else { "" }
        );
    }
    vault_or_new(state)
}

/// What the relay keeps of this client's vault key (under its passphrase,
/// to the recipient) and its recovery recipient.
async fn key_wraps(
    client: &mut RelayClient,
) -> Result<(
    (Option<Vec<u8>>, Option<Vec<u8>>),
    Option<recovery::Recipient>,
)> {
    match client.request(&Message::GetKeyWrap).await? {
        Message::KeyWrap {
            wrapped,
            recovery: to_recipient,
            recipient,
        } => {
            let recipient = recipient
                .map(|r| <[u8; 32]>::try_from(r.as_slice()).map(recovery::Recipient))
                .transpose()
                .map_err(|_| anyhow::anyhow!("the relay's recovery recipient is not 32 bytes"))?;
            let wraps = (
                wrapped.map(|w| w.into_vec()),
                to_recipient.map(|w| w.into_vec()),
            );
            Ok((wraps, recipient))
        }
        other => Err(unexpected("KeyWrap", &other)),
    }
}

fn kept(answer: Message) -> Result<()> {
    match answer {
        Message::KeyWrapKept => Ok(()),
        other => Err(unexpected("KeyWrapKept", &other)),
    }
}

/// Where the vault key lives.
fn vault_path(state: &StateDir) -> PathBuf {
    state.root().join("keys").join("vault.key")
}

/// The vault key, if this endpoint has one.
///
/// # Errors
/// A key file others can read, or one that is not 32 bytes in hex.
pub fn load_vault(state: &StateDir) -> Result<Option<VaultKey>> {
    let path = vault_path(state);
    if !path.exists() {
        return Ok(None);
    }
    keyfile::check_trusted(&path).with_context(|| format!("refusing to use {}", path.display()))?;
    let text = Zeroizing::new(std::fs::read_to_string(&path)?);
    let bytes = from_hex::<32>(text.trim())
        .with_context(|| format!("{} is not a vault key", path.display()))?;
    Ok(Some(VaultKey::from_bytes(bytes)))
}

/// The vault key, made now (from the OS's randomness) if there is none.
fn vault_or_new(state: &StateDir) -> Result<VaultKey> {
    if let Some(vault) = load_vault(state)? {
        return Ok(vault);
    }
    state.load_or_create_keys()?;
    let vault = VaultKey::from_bytes(random());
    write_vault(state, &vault)?;
    Ok(vault)
}

/// Keeps `vault` as this endpoint's, unless it has another.
fn keep(state: &StateDir, vault: &VaultKey) -> Result<()> {
    match load_vault(state)? {
        Some(have) if have.expose() == vault.expose() => Ok(()),
        Some(have) => bail!(
            "this endpoint has another vault key ({}); it is not replaced (move {} away first if you mean to)",
            vault::fingerprint(&have),
            vault_path(state).display()
        ),
        None => {
            state.load_or_create_keys()?;
            write_vault(state, vault)
        }
    }
}

fn write_vault(state: &StateDir, vault: &VaultKey) -> Result<()> {
    let hex = Zeroizing::new(to_hex(vault.expose()));
    let path = vault_path(state);
    keyfile::write_private(&path, hex.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A session with a relay that keeps wrapped keys.
async fn key_client(state: &StateDir) -> Result<RelayClient> {
    let client = crate::client::open_client(state).await?;
    if client.relay_minor() < KEY_WRAP_SINCE_MINOR {
        bail!(
            "the relay speaks protocol 1.{}; keeping a vault key needs 1.{KEY_WRAP_SINCE_MINOR}: upgrade the relay",
            client.relay_minor()
        );
    }
    Ok(client)
}

/// The passphrase: from `file`, else `FERRY_PASSPHRASE_FILE`, else the
/// terminal (asked twice when `confirm`).
fn passphrase(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    let from_env = std::env::var_os("FERRY_PASSPHRASE_FILE").map(PathBuf::from);
    if let Some(file) = file.map(Path::to_path_buf).or(from_env) {
        let text = Zeroizing::new(
            std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?,
        );
        return Ok(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_string(),
        ));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase: give --passphrase-file FILE or FERRY_PASSPHRASE_FILE (there is no terminal to ask on)");
    }
    let first = ask("passphrase: ")?;
    if confirm && *ask("the same again: ")? != *first {
        bail!("the two passphrases differ; nothing was changed");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn ask(prompt: &str) -> Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn echo off")?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = Zeroizing::new(String::new());
    let read = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    read.context("cannot read the passphrase")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

/// A file's text, or standard input's for `-`.
fn read_text(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Bytes from the OS's randomness.
fn random<const N: usize>() -> [u8; N] {
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}
