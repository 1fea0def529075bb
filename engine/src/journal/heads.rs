//! The logs seen: each device's highest verified commit, and the own commits written to the outbox before their PUT.

use super::Journal;
use super::rows::Head;
use super::rows::{dec, enc};
use crate::error::{Error, Result};
use crate::format::id::DeviceId;

impl Journal {
    pub fn head(&self, device: &DeviceId) -> Result<Option<Head>> {
        self.heads
            .get(device.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    pub fn put_head(&self, device: &DeviceId, head: &Head) -> Result<()> {
        self.heads.insert(device.as_bytes(), enc(head)?)?;
        Ok(())
    }

    pub fn all_heads(&self) -> Result<Vec<(DeviceId, Head)>> {
        self.heads
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let mut d = [0u8; 16];
                if k.len() != 16 {
                    return Err(Error::Journal("bad head key".into()));
                }
                d.copy_from_slice(&k);
                Ok((DeviceId(d), dec(&v)?))
            })
            .collect()
    }

    pub fn outbox_put(&self, seq: u64, sealed: &[u8]) -> Result<()> {
        self.outbox.insert(seq.to_be_bytes(), sealed)?;
        Ok(())
    }

    pub fn outbox_all(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| Error::Journal("bad outbox key".into()))?,
                );
                Ok((seq, v.to_vec()))
            })
            .collect()
    }

    pub fn outbox_remove(&self, seq: u64) -> Result<()> {
        self.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }
}
