//! Values as the catalog's queries pass and read them: SQLite's four
//! storage classes, which PostgreSQL's `BIGINT`, `TEXT` and `BYTEA`
//! columns (and its `BOOLEAN` results) map onto.

use super::super::{CatalogError, ClientId, Result, SetId, SnapshotId};
use crate::store::PackId;

/// One SQL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `NULL`.
    Null,
    /// An integer (a boolean is 0 or 1).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// One row a query returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row(pub(super) Vec<Value>);

impl Row {
    /// Column `index` as a `T`.
    ///
    /// # Errors
    /// No such column, or a value that is not a `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| CatalogError::Value(format!("no column {index}")))?;
        T::from_value(value.clone())
            .map_err(|e| CatalogError::Value(format!("column {index}: {e}")))
    }
}

/// A Rust type a column is read as.
pub trait FromValue: Sized {
    /// Reads `value`; an error says what it was instead.
    ///
    /// # Errors
    /// A value of another type or out of range.
    fn from_value(value: Value) -> std::result::Result<Self, String>;
}

impl FromValue for Value {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        Ok(value)
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

/// Integer types read through `i64`, refused when out of range.
macro_rules! integer {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> std::result::Result<Self, String> {
                let i = i64::from_value(value)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
        impl From<$t> for Value {
            fn from(i: $t) -> Self {
                Value::Int(i as i64)
            }
        }
    )*};
}
integer!(u32, u16, u8, i32, usize);

/// A `u64` is stored as the `i64` with its bits, and read back the same:
/// a count a client sent (any `u64`) round-trips whole, as it always did.
impl FromValue for u64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        i64::from_value(value).map(|i| i as u64)
    }
}

impl From<u64> for Value {
    fn from(i: u64) -> Self {
        Value::Int(i as i64)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Value::Text(s.clone())
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl FromValue for [u8; 32] {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        let bytes = Vec::<u8>::from_value(value)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| format!("expected a 32-byte id, found {len} bytes"))
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Blob(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Blob(b)
    }
}

impl From<&[u8; 32]> for Value {
    fn from(b: &[u8; 32]) -> Self {
        Value::Blob(b.to_vec())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Row ids stored as integers.
macro_rules! id {
    ($($t:ident),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> std::result::Result<Self, String> {
                u64::from_value(value).map($t)
            }
        }
                impl From<$t> for Value {
            fn from(id: $t) -> Self {
                Value::Int(id.0 as i64)
            }
        }
        impl From<&$t> for Value {
            fn from(id: &$t) -> Self {
                Value::Int(id.0 as i64)
            }
        }
    )*};
}
id!(ClientId, SetId, SnapshotId, PackId);
