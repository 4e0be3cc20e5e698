//! Pairing codes: created by `ferry-relay pair`, looked up by nameplate,
//! burned after failures, completed into a client.

use ferry_protocol::keys::PublicKey;
use ferry_protocol::pairing::PairingCode;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::clients::client_where;
use super::{Catalog, ClientRecord, Result, MAX_PAIRING_FAILURES};

/// A pending pairing found by nameplate.
#[derive(Debug)]
pub struct PendingPairing {
    /// Row id.
    pub id: i64,
    /// The full code.
    pub code: PairingCode,
    /// The client name the operator chose.
    pub client_name: String,
}

/// What a nameplate leads to.
#[derive(Debug)]
pub enum PairingLookup {
    /// A live code.
    Pending(PendingPairing),
    /// The newest code with this nameplate has expired.
    Expired,
    /// The newest code with this nameplate was burned by wrong attempts.
    Burned,
    /// The newest code with this nameplate has been used.
    Used,
    /// No code has this nameplate.
    Unknown,
}

/// The state of one pairing, for `ferry-relay pair` waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairingState {
    /// Still waiting for the endpoint.
    Pending,
    /// Used by the client with this record.
    Used(Box<ClientRecord>),
    /// Burned by wrong attempts.
    Burned,
    /// Expired unused.
    Expired,
}

/// Outcome of completing a pairing.
#[derive(Debug)]
pub enum PairOutcome {
    /// The client was created.
    Paired(Box<ClientRecord>),
    /// The code stopped being valid meanwhile (expired, burned or used).
    NoLongerValid,
    /// This key already belongs to an active client of that name.
    KeyAlreadyPaired(String),
    /// Another active client took the name meanwhile.
    NameTaken,
}

impl Catalog {
    /// Registers a pending pairing for `client_name`, valid until `expires_ms`.
    /// A pending code for the same name is replaced. Returns its id and code.
    /// `random` (from the OS) picks the secret (its low half) and, among the
    /// free ones, the nameplate (its high half): nameplates in order would
    /// tell a prober which ones are pending.
    ///
    /// # Errors
    /// `Ok(Err(message))` when the name is taken by an active client or every
    /// nameplate is in use; SQLite errors otherwise.
    pub fn create_pairing(
        &mut self,
        client_name: &str,
        now: i64,
        expires_ms: i64,
        random: u64,
    ) -> Result<Result<(i64, PairingCode), String>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM clients WHERE name = ?1 AND removed_at IS NULL)",
            [client_name],
            |r| r.get(0),
        )?;
        if taken {
            return Ok(Err(format!(
                "a client named {client_name:?} is already paired; remove it first with `ferry-relay clients remove {client_name}`"
            )));
        }
        tx.execute(
            "UPDATE pairings SET state = 'expired' WHERE state = 'pending' AND (expires_at <= ?1 OR client_name = ?2)",
            params![now, client_name],
        )?;
        let used: Vec<u32> = tx
            .prepare("SELECT nameplate FROM pairings WHERE state = 'pending'")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let free: Vec<u32> = (1..=ferry_protocol::pairing::MAX_NAMEPLATE)
            .filter(|n| !used.contains(n))
            .collect();
        if free.is_empty() {
            return Ok(Err(
                "too many pending pairings; wait for some to expire".into()
            ));
        }
        let nameplate = free[(random >> 32) as usize % free.len()];
        let code = PairingCode::new(nameplate, random as u32).expect("nameplate in range");
        tx.execute(
            "INSERT INTO pairings (nameplate, secret, client_name, created_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            params![
                nameplate,
                code.secret_digits(),
                client_name,
                now,
                expires_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Ok((id, code)))
    }

    /// Finds the newest pairing with `nameplate`, expiring it if its time is up.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn find_pairing(&mut self, nameplate: u32, now: i64) -> Result<PairingLookup> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT id, secret, client_name, expires_at, state FROM pairings
                 WHERE nameplate = ?1 ORDER BY id DESC LIMIT 1",
                [nameplate],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let lookup = match row {
            None => PairingLookup::Unknown,
            Some((id, _, _, expires, state)) if state == "pending" && expires <= now => {
                tx.execute("UPDATE pairings SET state = 'expired' WHERE id = ?1", [id])?;
                PairingLookup::Expired
            }
            Some((id, secret, client_name, _, state)) if state == "pending" => {
                match PairingCode::from_parts(nameplate, &secret) {
                    Ok(code) => PairingLookup::Pending(PendingPairing {
                        id,
                        code,
                        client_name,
                    }),
                    Err(_) => PairingLookup::Unknown,
                }
            }
            Some((.., state)) if state == "burned" => PairingLookup::Burned,
            Some((.., state)) if state == "used" => PairingLookup::Used,
            Some(_) => PairingLookup::Expired,
        };
        tx.commit()?;
        Ok(lookup)
    }

    /// Counts a wrong attempt; returns the attempts left (0: now burned).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_pairing_failure(&mut self, id: i64) -> Result<u32> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let failures: u32 = tx.query_row(
            "UPDATE pairings SET failures = failures + 1 WHERE id = ?1 RETURNING failures",
            [id],
            |r| r.get(0),
        )?;
        if failures >= MAX_PAIRING_FAILURES {
            tx.execute(
                "UPDATE pairings SET state = 'burned' WHERE id = ?1 AND state = 'pending'",
                [id],
            )?;
        }
        tx.commit()?;
        Ok(MAX_PAIRING_FAILURES.saturating_sub(failures))
    }

    /// Turns a proven pairing into a client, in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn complete_pairing(
        &mut self,
        pairing_id: i64,
        key: &PublicKey,
        hostname: &str,
        now: i64,
    ) -> Result<PairOutcome> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, i64, String)> = tx
            .query_row(
                "SELECT client_name, expires_at, state FROM pairings WHERE id = ?1",
                [pairing_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((name, expires, state)) = row else {
            return Ok(PairOutcome::NoLongerValid);
        };
        if state != "pending" || expires <= now {
            return Ok(PairOutcome::NoLongerValid);
        }
        if let Some(existing) = tx
            .query_row(
                "SELECT name FROM clients WHERE public_key = ?1 AND removed_at IS NULL",
                [&key.0[..]],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Ok(PairOutcome::KeyAlreadyPaired(existing));
        }
        let inserted = tx.execute(
            "INSERT INTO clients (name, public_key, hostname, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, &key.0[..], hostname, now],
        );
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted {
            if e.code == rusqlite::ErrorCode::ConstraintViolation {
                return Ok(PairOutcome::NameTaken);
            }
        }
        inserted?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE pairings SET state = 'used', client_id = ?2 WHERE id = ?1",
            params![pairing_id, id],
        )?;
        let record = client_where(&tx, "id = ?1", id)?.expect("just inserted");
        tx.commit()?;
        Ok(PairOutcome::Paired(Box::new(record)))
    }

    /// The state of the pairing with row `id`, for waiting on it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pairing_state(&self, id: i64, now: i64) -> Result<PairingState> {
        let (state, expires, client): (String, i64, Option<i64>) = self.conn.query_row(
            "SELECT state, expires_at, client_id FROM pairings WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(match state.as_str() {
            "pending" if expires > now => PairingState::Pending,
            "used" => match client {
                Some(id) => client_where(&self.conn, "id = ?1", id)?
                    .map_or(PairingState::Expired, |c| PairingState::Used(Box::new(c))),
                None => PairingState::Expired,
            },
            "burned" => PairingState::Burned,
            _ => PairingState::Expired,
        })
    }
}
