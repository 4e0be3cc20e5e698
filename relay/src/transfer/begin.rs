//! `BackupBegin`: whether a backup of a set may start now, and its upload.

use std::sync::Arc;

use ferry_protocol::message::{Message, Refusal};
use ferry_protocol::retention::Retention;
use ferry_protocol::units::format_size;

use super::upload::{QuotaUse, Upload};
use super::{check, violation, Result, Transfer};

impl Transfer {
    /// Opens an upload of `set` (replacing an open one), or says why not:
    /// a first backup over the internet where the client may not, a full
    /// disk, another session backing the set up, a spent quota.
    pub(super) fn begin(&mut self, set: &str, retention: Retention) -> Result<Message> {
        check_set_name(set)?;
        let client = self.client;
        if self.policy.is_some_and(|p| !p.full_backups) {
            let earlier = self.catalog(|c| c.list_snapshots(Some(client), Some(set)))?;
            if earlier.is_empty() {
                return Ok(refused(
                    Refusal::FullBackupNeedsLan,
                    format!(
                        "the first (full) backup of set {set:?} must run over the LAN: this relay lets this client send only incremental backups over the internet"
                    ),
                ));
            }
        }
        // A second BackupBegin replaces the open upload (and its permit).
        self.upload = None;
        if !self.repo.accepts_backups() {
            return Ok(refused(
                Refusal::DiskFull,
                "no space left on the relay's disk: it serves restores, and accepts backups again once its operator frees space".into(),
            ));
        }
        let set_id = self.catalog(|c| c.ensure_set(client, set))?;
        let set_id = set_id.ok_or_else(|| {
            violation!(
                "a backup set {set:?} would be this client's {}th; the limit is {}",
                crate::catalog::MAX_SETS + 1,
                crate::catalog::MAX_SETS
            )
        })?;
        let Some(permit) = self.repo.enter_upload(client, set_id, &self.life) else {
            return Ok(refused(
                Refusal::SetBusy,
                format!(
                    "set {set:?} is being backed up by another session of this client; try again when it ends"
                ),
            ));
        };
        let mut upload = Upload::begin(&self.repo, permit, set_id, retention);
        // Summed only for a client that has a quota.
        if let Some(limit) = self.quota()? {
            let appends = Arc::clone(upload.permit.client_appends());
            let quota = QuotaUse::start(limit, appends, || self.stored())?;
            if quota.in_use() >= limit {
                return Ok(refused(
                    Refusal::QuotaExceeded,
                    format!(
                        "this client uses {} of its quota of {} (what it stores, and what backups that did not finish left until the next collection): nothing more fits; forget snapshots on the relay (`ferry-relay snapshots forget`) and let it collect, or ask its operator for a larger quota (`ferry-relay clients quota`)",
                        format_size(quota.in_use()),
                        format_size(limit)
                    ),
                ));
            }
            upload.quota = Some(quota);
        }
        self.upload = Some(upload);
        Ok(Message::BackupReady {
            max_file: self.policy.and_then(|p| p.max_file),
        })
    }
}

fn refused(code: Refusal, message: String) -> Message {
    Message::Refused { code, message }
}

fn check_set_name(set: &str) -> Result<()> {
    check!(
        !set.is_empty() && set.len() <= 64 && !set.chars().any(|c| c.is_control() || c == '/'),
        "invalid backup set name {set:?}"
    );
    Ok(())
}
