//! Questions about what the client has: its snapshots, why each is kept,
//! its storage use and its damage.

use ferry_protocol::ids::TreeId;
use ferry_protocol::message::{Message, SnapshotInfo, MAX_KEY_WRAP};

use super::{check, violation, Result, Transfer};

impl Transfer {
    /// The client's snapshots (of `set`, or all).
    pub(super) fn snapshots(&self, set: Option<&str>) -> Result<Message> {
        let client = self.client;
        let rows = self.catalog(move |c| c.list_snapshots(Some(client), set))?;
        let snapshots = rows
            .into_iter()
            .map(|r| SnapshotInfo {
                id: r.id.0,
                set: r.set,
                root: TreeId(r.root_id),
                started_ms: r.started_ms,
                finished_ms: r.finished_ms,
                files: r.files,
                bytes: r.bytes,
            })
            .collect();
        Ok(Message::SnapshotList { snapshots })
    }

    /// Why each of the client's snapshots (of `set`, or all) is kept.
    pub(super) fn kept_by(&self, set: Option<&str>) -> Result<Message> {
        let (client, defaults) = (self.client, self.retention_defaults);
        let decisions = self.catalog(|c| {
            c.retention_decisions(
                Some(client),
                None,
                &defaults,
                crate::clock::retention_now_ms(),
            )
        })?;
        let snapshots = decisions
            .into_iter()
            .filter(|d| set.is_none_or(|s| s == d.set))
            .flat_map(|d| d.decision.into_iter())
            .map(|(id, why)| (id, why.iter().map(|k| k.name().to_string()).collect()))
            .collect();
        Ok(Message::KeptBy { snapshots })
    }

    /// Keeps the label of the snapshot the open upload will commit.
    pub(super) fn set_label(&mut self, label: Vec<u8>) -> Result<Message> {
        if label.len() > ferry_protocol::message::MAX_LABEL {
            return Err(violation!(
                "a snapshot label of {} bytes (at most {})",
                label.len(),
                ferry_protocol::message::MAX_LABEL
            ));
        }
        self.upload()?.label = Some(label);
        Ok(Message::LabelKept)
    }

    /// The labels of this client's snapshots among `ids`.
    pub(super) fn labels(&self, ids: &[u64]) -> Result<Message> {
        if ids.len() > ferry_protocol::message::MAX_LABELS {
            return Err(violation!(
                "labels of {} snapshots asked for at once (at most {})",
                ids.len(),
                ferry_protocol::message::MAX_LABELS
            ));
        }
        let client = self.client;
        let labels = self.catalog(|c| c.snapshot_labels(client, ids))?;
        let labels = labels
            .into_iter()
            .map(|(id, l)| (id, serde_bytes::ByteBuf::from(l)))
            .collect();
        Ok(Message::Labels { labels })
    }

    /// What the client stores and may store.
    pub(super) fn usage(&self) -> Result<Message> {
        Ok(Message::Usage {
            stored: self.stored()?,
            quota: self.quota()?,
            warn_percent: self.quotas.warn_percent,
        })
    }

    /// The client's damaged and healed blobs.
    pub(super) fn damage(&self) -> Result<Message> {
        let client = self.client;
        let (damaged, healed) = self.catalog(|c| c.client_damage(client))?;
        Ok(Message::Damage { damaged, healed })
    }

    /// Keeps the client's wrapped vault key (`recovery`: the one wrapped
    /// to the recovery recipient).
    pub(super) fn set_key_wrap(&self, recovery: bool, wrapped: Vec<u8>) -> Result<Message> {
        check!(
            wrapped.len() <= MAX_KEY_WRAP,
            "a wrapped key of {} bytes; the limit is {MAX_KEY_WRAP}",
            wrapped.len()
        );
        let client = self.client;
        self.catalog(|c| c.set_key_wrap(client, recovery, &wrapped, crate::clock::now_ms()))?;
        Ok(Message::KeyWrapKept)
    }

    /// The client's wrapped vault keys, and the recovery recipient.
    pub(super) fn key_wrap(&self) -> Result<Message> {
        let client = self.client;
        let (wrapped, recovery) = self.catalog(|c| c.key_wraps(client))?;
        Ok(Message::KeyWrap {
            wrapped: wrapped.map(serde_bytes::ByteBuf::from),
            recovery: recovery.map(serde_bytes::ByteBuf::from),
            recipient: self
                .recovery_recipient
                .map(|r| serde_bytes::ByteBuf::from(r.to_vec())),
        })
    }
}
