//! The catalog's one way to speak SQL, whichever engine holds it: SQLite
//! (embedded, the default) or PostgreSQL (several relays on several
//! hosts). Queries are written once, in the SQL both engines read
//! (`?N` parameters, `ON CONFLICT`, `RETURNING`, `COALESCE`, quoted
//! `"offset"`), with values as [`Value`]s and rows read through
//! [`FromValue`]; only the schema and the engine's own checks differ.
//!
//! Writes keep SQLite's rule on both: one writer at a time. A write
//! transaction is `BEGIN IMMEDIATE` on SQLite and, on PostgreSQL, a
//! transaction that first takes one advisory lock every relay shares, so
//! the reasoning the rules rest on (a sweep and a reuse never interleave)
//! holds for relays on several hosts too.

use std::cell::RefCell;

use super::{CatalogError, Result};

mod postgres;
mod postgres_tls;
mod sqlite;
mod value;

pub use value::{FromValue, Row, Value};

/// Values for a query, in parameter order: `args![client, name]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$($crate::catalog::sql::Value::from($value)),*][..]
    };
}
pub(crate) use args;

/// Which engine holds the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// One connection to the catalog's engine.
pub(crate) enum Db {
    /// An SQLite connection (WAL, `synchronous=FULL`).
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL client, borrowed per statement.
    Postgres(Box<RefCell<postgres::PgConn>>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Sqlite(_) => "Db::Sqlite",
            Db::Postgres(_) => "Db::Postgres",
        })
    }
}

impl Db {
    /// Connects to the PostgreSQL database at `url` (`postgres://…`).
    ///
    /// # Errors
    /// An unreachable server, refused credentials.
    pub fn connect_postgres(url: &str) -> Result<Self> {
        Ok(Db::Postgres(Box::new(RefCell::new(
            postgres::PgConn::connect(url)?,
        ))))
    }

    /// The engine behind this connection.
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs one statement; returns the rows it changed.
    ///
    /// # Errors
    /// The engine's errors.
    pub fn execute(&self, sql: &str, args: &[Value]) -> Result<u64> {
        match self {
            Db::Sqlite(conn) => sqlite::execute(conn, sql, args),
            Db::Postgres(conn) => conn.borrow_mut().execute(sql, args),
        }
    }

    /// Runs statements without parameters (schema changes).
    ///
    /// # Errors
    /// The engine's errors.
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => conn.borrow_mut().batch(sql),
        }
    }

    /// Every row of a query, each read by `f`.
    ///
    /// # Errors
    /// The engine's errors, or what `f` returns.
    pub fn rows<T>(
        &self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, args, |row| {
            out.push(f(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` on every row of a query, in order. On SQLite the rows
    /// stream; on PostgreSQL they are read first, so `f` may query too.
    ///
    /// # Errors
    /// The engine's errors, or what `f` returns.
    pub fn each(
        &self,
        sql: &str,
        args: &[Value],
        mut f: impl FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(conn) => sqlite::scan(conn, sql, args, |row| f(row).map(|()| true)),
            Db::Postgres(conn) => {
                let rows = conn.borrow_mut().query(sql, args, usize::MAX)?;
                rows.iter().try_for_each(f)
            }
        }
    }

    /// The first row of a query read by `f`, if there is one.
    ///
    /// # Errors
    /// The engine's errors, or what `f` returns.
    pub fn row<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        // Only the first row is read: the rest is never fetched.
        let first = match self {
            Db::Sqlite(conn) => {
                let mut first = None;
                sqlite::scan(conn, sql, args, |row| {
                    first = Some(row.clone());
                    Ok(false)
                })?;
                first
            }
            Db::Postgres(conn) => conn.borrow_mut().query(sql, args, 1)?.pop(),
        };
        first.as_ref().map(f).transpose()
    }

    /// The first column of the first row, which the query must return.
    ///
    /// # Errors
    /// The engine's errors; no row; a value of another type.
    pub fn value<T: FromValue>(&self, sql: &str, args: &[Value]) -> Result<T> {
        self.row(sql, args, |r| r.get(0))?
            .ok_or_else(|| CatalogError::Value(format!("no row for: {}", first_line(sql))))
    }

    /// Whether a query returns any row.
    ///
    /// # Errors
    /// The engine's errors.
    pub fn exists(&self, sql: &str, args: &[Value]) -> Result<bool> {
        Ok(self.row(sql, args, |_| Ok(()))?.is_some())
    }

    /// Starts a write transaction: the only writer until it commits or is
    /// dropped (rolled back).
    ///
    /// # Errors
    /// The engine's errors (a lock not had within SQLite's busy timeout).
    pub fn write(&self) -> Result<Tx<'_>> {
        self.begin_write()?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    /// Begins a write transaction the caller ends with `COMMIT` or
    /// `ROLLBACK` itself (see [`Db::write`] for one that ends on drop).
    ///
    /// # Errors
    /// The engine's errors.
    pub fn begin_write(&self) -> Result<()> {
        self.batch(match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => postgres::BEGIN_WRITE,
        })
    }
}

/// An open transaction: queries through it (it derefs to the [`Db`]);
/// [`Tx::commit`] ends it, dropping it rolls back.
pub(crate) struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    /// Commits.
    ///
    /// # Errors
    /// The engine's errors (nothing is committed then).
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        self.db.batch("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.db.batch("ROLLBACK") {
                tracing::warn!("catalog: a rollback failed: {e}");
            }
        }
    }
}

/// Rows written by one multi-row `INSERT` at most (each of a few
/// columns: far below both engines' limits on parameters).
pub(crate) const ROWS_PER_INSERT: usize = 128;

/// `(?1, …, ?width), (…)`: the `VALUES` of `rows` rows of `width`
/// parameters each, numbered in row order.
pub(crate) fn values_list(rows: usize, width: usize) -> String {
    let row = |r: usize| {
        let marks: Vec<String> = (1..=width).map(|c| format!("?{}", r * width + c)).collect();
        format!("({})", marks.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A statement's first line, for an error message.
fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::catalog::{test_catalogs, Catalog};

    #[test]
    fn the_first_row_is_read_alone_and_the_connection_goes_on() {
        for (at, _dir) in test_catalogs() {
            let catalog = Catalog::open_at(&at).unwrap();
            let db = &catalog.db;
            let tx = db.write().unwrap();
            for key in ["a", "b", "c"] {
                tx.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)",
                    args![key, "v"],
                )
                .unwrap();
            }
            let first: String = tx
                .value("SELECT key FROM settings ORDER BY key", args![])
                .unwrap();
            assert_eq!(first, "a", "{at}");
            assert!(tx.exists("SELECT 1 FROM settings", args![]).unwrap());
            // A statement after a result left unread runs on the same
            // connection, in the same transaction.
            let all: i64 = tx.value("SELECT COUNT(*) FROM settings", args![]).unwrap();
            assert_eq!(all, 3, "{at}");
            tx.commit().unwrap();
            assert_eq!(catalog.setting("b").unwrap().as_deref(), Some("v"), "{at}");
        }
    }
}
