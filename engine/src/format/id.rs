//! Identifier newtypes. All are fixed-width byte arrays, shown as lowercase hex.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Width in bytes.
            pub const LEN: usize = $len;

            /// A fresh random id from the OS generator.
            pub fn random() -> Self {
                let mut b = [0u8; $len];
                crate::crypto::fill_random(&mut b);
                Self(b)
            }

            /// Lowercase hex, `2 * LEN` characters. (By reference, so that
            /// `iter().map(Id::to_hex)` works over borrowed ids.)
            #[allow(clippy::wrong_self_convention)]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly `2 * LEN` hex characters.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut b = [0u8; $len];
                hex::decode_to_slice(s, &mut b).ok()?;
                Some(Self(b))
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12.min(2 * $len)])
            }
        }
    };
}

byte_id!(
    /// Keyed BLAKE3 of a plaintext chunk (see `DESIGN.md` §Crypto): dedup key, never
    /// shown to the store in clear.
    ChunkId,
    32
);
byte_id!(
    /// Random id of a pack object.
    PackId,
    32
);
byte_id!(
    /// Random id of a device (one bound local folder).
    DeviceId,
    16
);
byte_id!(
    /// Random id of a repository, stored in its plaintext `config`.
    RepoId,
    16
);
byte_id!(
    /// Random id of a key slot.
    SlotId,
    16
);
byte_id!(
    /// Random id of a partner drop (`DESIGN.md` §4c).
    DropId,
    16
);
byte_id!(
    /// BLAKE3 of a sealed commit object: the link of a device's hash chain.
    CommitHash,
    32
);

impl DeviceId {
    /// The short form used in conflict-copy names (first 8 hex digits).
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_width() {
        let id = ChunkId::random();
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("abcd"), None);
        assert_eq!(DeviceId::from_hex(&"zz".repeat(16)), None);
    }
}
