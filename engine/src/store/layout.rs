//! Object keys of a repository (`DESIGN.md` §Bucket layout). Nothing but ids and
//! sequence numbers ever appears in a key.

use crate::id::{DeviceId, PackId, SlotId};

pub const CONFIG: &str = "config";
pub const KEYS_PREFIX: &str = "keys/";
pub const DATA_PREFIX: &str = "data/";
pub const LOG_PREFIX: &str = "log/";
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";

pub fn key_slot(slot: &SlotId) -> String {
    format!("{KEYS_PREFIX}{slot}")
}

pub fn pack(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{DATA_PREFIX}{}/{hex}", &hex[..2])
}

pub fn device_log_prefix(device: &DeviceId) -> String {
    format!("{LOG_PREFIX}{device}/")
}

pub fn commit(device: &DeviceId, seq: u64) -> String {
    format!("{LOG_PREFIX}{device}/{seq:016x}")
}

pub fn checkpoint(device: &DeviceId, seq: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{device}/{seq:016x}")
}

/// Parses `log/<device>/<seq>` or `checkpoint/<device>/<seq>` (after the prefix).
pub fn parse_device_seq(rest: &str) -> Option<(DeviceId, u64)> {
    let (dev, seq) = rest.split_once('/')?;
    if seq.len() != 16 {
        return None;
    }
    let device = DeviceId::from_hex(dev)?;
    let seq = u64::from_str_radix(seq, 16).ok()?;
    Some((device, seq))
}

/// Parses `data/<xx>/<pack id>`.
pub fn parse_pack(key: &str) -> Option<PackId> {
    let rest = key.strip_prefix(DATA_PREFIX)?;
    let (fan, id) = rest.split_once('/')?;
    let id = PackId::from_hex(id)?;
    (id.to_hex()[..2] == *fan).then_some(id)
}

/// Parses `keys/<slot>`.
pub fn parse_slot(key: &str) -> Option<SlotId> {
    SlotId::from_hex(key.strip_prefix(KEYS_PREFIX)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let d = DeviceId::random();
        let k = commit(&d, 0x2a);
        assert!(k.ends_with("/000000000000002a"));
        assert_eq!(
            parse_device_seq(k.strip_prefix(LOG_PREFIX).unwrap()),
            Some((d, 0x2a))
        );
        let p = PackId::random();
        assert_eq!(parse_pack(&pack(&p)), Some(p));
        assert_eq!(parse_pack("data/zz/abc"), None);
        let s = SlotId::random();
        assert_eq!(parse_slot(&key_slot(&s)), Some(s));
    }
}
