//! Content-addressed names: every chunk, content (a file version's chunk
//! list) and tree (a directory) is named by the BLAKE3 hash of its bytes, so
//! a name can be checked without trusting whoever sent the bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtocolError;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id of `bytes`: their BLAKE3 hash.
            pub fn of(bytes: &[u8]) -> Self {
                $name(*blake3::hash(bytes).as_bytes())
            }

            /// Reads an id from exactly 32 bytes.
            ///
            /// # Errors
            /// [`ProtocolError::Malformed`] on any other length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtocolError> {
                <[u8; 32]>::try_from(bytes)
                    .map($name)
                    .map_err(|_| ProtocolError::Malformed(stringify!($name)))
            }

            /// Lowercase hex of the first 8 bytes, for logs and listings.
            pub fn short(&self) -> String {
                self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

hash_id!(
    /// A chunk: a piece of a file cut by content-defined chunking.
    ChunkId
);
hash_id!(
    /// A content: one file version, the hash of its encoded chunk list.
    ContentId
);
hash_id!(
    /// A tree: one directory, the hash of its encoded entries.
    TreeId
);

/// A tree or content stored on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectId {
    /// A directory.
    Tree(TreeId),
    /// A file version's chunk list.
    Content(ContentId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hashes() {
        let id = ChunkId::of(b"abc");
        assert_eq!(id.to_string(), blake3::hash(b"abc").to_hex().as_str());
        assert_eq!(ChunkId::from_slice(&id.0).unwrap(), id);
        assert!(ChunkId::from_slice(&[0; 31]).is_err());
        assert_eq!(id.short().len(), 16);
    }
}
