//! Object keys of a repository (`DESIGN.md` §Bucket layout), and the most each
//! kind of object may weigh. Nothing but ids and sequence numbers ever appears in
//! a key. A reader refuses a larger object from its listing size or after
//! `limit + 1` bytes ([`super::get_at_most`]), so whatever the store holds, a
//! command's memory stays bounded (`DESIGN.md` §1).

use crate::crypto::epoch::EpochName;
use crate::format::id::{DeviceId, DropId, PackId, SlotId};

pub const CONFIG: &str = "config";
pub const KEYS_PREFIX: &str = "keys/";
pub const DATA_PREFIX: &str = "data/";
pub const LOG_PREFIX: &str = "log/";
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";
pub const EPOCHS_PREFIX: &str = "epochs/";
pub const GRANTS_PREFIX: &str = "grants/";
/// Garbage-collection marks (`DESIGN.md` §11).
pub const GC_PREFIX: &str = "gc/";
/// Head markers: where each device's log ends (`DESIGN.md` §6b).
pub const HEAD_PREFIX: &str = "head/";
/// The owner's drop records (`DESIGN.md` §4c): `drops/<drop id>/record`,
/// `drops/<drop id>/closed`.
pub const DROPS_PREFIX: &str = "drops/";
/// What partners write into their drops: `drop/<drop id>/data/<pack>`,
/// `drop/<drop id>/log/<device>/<seq>`.
pub const DROP_PREFIX: &str = "drop/";

/// Every prefix under which a repository has objects (besides `config`).
pub const ALL_PREFIXES: [&str; 10] = [
    KEYS_PREFIX,
    LOG_PREFIX,
    CHECKPOINT_PREFIX,
    DATA_PREFIX,
    EPOCHS_PREFIX,
    GRANTS_PREFIX,
    GC_PREFIX,
    HEAD_PREFIX,
    DROPS_PREFIX,
    DROP_PREFIX,
];

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The most a `config` may weigh (it is a few hundred bytes).
pub const CONFIG_MAX: u64 = 64 * KIB;
/// The most a key slot may weigh (it is under 1 KiB).
pub const SLOT_MAX: u64 = 64 * KIB;
/// The most an epoch record may weigh (48 bytes per older epoch: ~10,000
/// rotations).
pub const EPOCH_MAX: u64 = MIB;
/// The most a grant may weigh (an age file of one 32-byte key: ~200 bytes).
pub const GRANT_MAX: u64 = 64 * KIB;
/// The most a sealed commit may weigh. A commit of 16,384 changes is a few MiB;
/// this is ~3.5 million chunks (1.7 TiB of new data) in one batch. A push that
/// would write a larger commit fails before writing it.
pub const COMMIT_MAX: u64 = 256 * MIB;
/// The most a sealed checkpoint may weigh (~10 million files).
pub const CHECKPOINT_MAX: u64 = 2048 * MIB;

/// The most a drop record or closure may weigh (one age identity, one key,
/// and the closure's heads).
pub const DROP_RECORD_MAX: u64 = MIB;
/// The most a drop commit may weigh (a commit lists at most
/// `crate::drops` `COMMIT_FILES` files).
pub const DROP_COMMIT_MAX: u64 = 64 * MIB;

/// The most a garbage-collection mark may weigh (65,536 packs of ~90 bytes each).
pub const MARK_MAX: u64 = 16 * MIB;

pub fn key_slot(slot: &SlotId) -> String {
    format!("{KEYS_PREFIX}{slot}")
}

pub fn epoch(name: &EpochName) -> String {
    format!("{EPOCHS_PREFIX}{name}")
}

pub fn grant(epoch: &EpochName, slot: &SlotId) -> String {
    format!("{GRANTS_PREFIX}{epoch}/{slot}")
}

/// Parses `epochs/<name>`.
pub fn parse_epoch(key: &str) -> Option<EpochName> {
    EpochName::parse(key.strip_prefix(EPOCHS_PREFIX)?)
}

/// Parses `grants/<epoch>/<slot>`.
pub fn parse_grant(key: &str) -> Option<(EpochName, SlotId)> {
    let (epoch, slot) = key.strip_prefix(GRANTS_PREFIX)?.split_once('/')?;
    Some((EpochName::parse(epoch)?, SlotId::from_hex(slot)?))
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

/// The (empty) marker telling that `device`'s log reaches `seq`.
pub fn head_marker(device: &DeviceId, seq: u64) -> String {
    format!("{HEAD_PREFIX}{device}/{seq:016x}")
}

pub fn checkpoint(device: &DeviceId, seq: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{device}/{seq:016x}")
}

/// Parses `log/<device>/<seq>`, `checkpoint/<device>/<seq>` or
/// `head/<device>/<seq>` (after the prefix).
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

/// Whether `key` is one a repository has (§1): `config`, a key slot, an epoch,
/// a grant, a pack, a mark, a commit, a checkpoint or a head marker.
pub fn is_coffer_key(key: &str) -> bool {
    key == CONFIG
        || parse_slot(key).is_some()
        || parse_epoch(key).is_some()
        || parse_grant(key).is_some()
        || parse_pack(key).is_some()
        || parse_mark(key).is_some()
        || parse_drop_record(key).is_some()
        || parse_drop_object(key).is_some()
        || key
            .strip_prefix(LOG_PREFIX)
            .or_else(|| key.strip_prefix(CHECKPOINT_PREFIX))
            .or_else(|| key.strip_prefix(HEAD_PREFIX))
            .and_then(parse_device_seq)
            .is_some()
}

/// The owner's record of a drop: `drops/<drop id>/record`.
pub fn drop_record(drop: &DropId) -> String {
    format!("{DROPS_PREFIX}{drop}/record")
}

/// The closure of a drop (removed or expired): `drops/<drop id>/closed`.
pub fn drop_closed(drop: &DropId) -> String {
    format!("{DROPS_PREFIX}{drop}/closed")
}

/// Parses `drops/<drop id>/record` (`Some((id, false))`) or
/// `drops/<drop id>/closed` (`Some((id, true))`).
pub fn parse_drop_record(key: &str) -> Option<(DropId, bool)> {
    let (id, what) = key.strip_prefix(DROPS_PREFIX)?.split_once('/')?;
    let closed = match what {
        "record" => false,
        "closed" => true,
        _ => return None,
    };
    Some((DropId::from_hex(id)?, closed))
}

/// Everything partners write into a drop: `drop/<drop id>/`.
pub fn drop_prefix(drop: &DropId) -> String {
    format!("{DROP_PREFIX}{drop}/")
}

/// A pack of a drop: `drop/<drop id>/data/<pack>`.
pub fn drop_pack(drop: &DropId, pack: &PackId) -> String {
    format!("{DROP_PREFIX}{drop}/data/{pack}")
}

/// The log of one partner device in a drop: `drop/<drop id>/log/<device>/`.
pub fn drop_log_prefix(drop: &DropId, device: &DeviceId) -> String {
    format!("{DROP_PREFIX}{drop}/log/{device}/")
}

/// A commit of a drop: `drop/<drop id>/log/<device>/<seq: 16 hex>`.
pub fn drop_commit(drop: &DropId, device: &DeviceId, seq: u64) -> String {
    format!("{DROP_PREFIX}{drop}/log/{device}/{seq:016x}")
}

/// An object a partner wrote, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropObject {
    Pack(DropId, PackId),
    Commit(DropId, DeviceId, u64),
}

/// Parses `drop/<drop id>/data/<pack>` or `drop/<drop id>/log/<device>/<seq>`.
pub fn parse_drop_object(key: &str) -> Option<DropObject> {
    let (id, rest) = key.strip_prefix(DROP_PREFIX)?.split_once('/')?;
    let drop = DropId::from_hex(id)?;
    if let Some(pack) = rest.strip_prefix("data/") {
        return Some(DropObject::Pack(drop, PackId::from_hex(pack)?));
    }
    let (device, seq) = parse_device_seq(rest.strip_prefix("log/")?)?;
    Some(DropObject::Commit(drop, device, seq))
}

/// The key of a mark written at `created_ms`, told apart by `nonce`.
pub fn mark(created_ms: u64, nonce: u64) -> String {
    format!("{GC_PREFIX}{created_ms:016x}-{nonce:016x}")
}

/// Parses `gc/<created ms: 16 hex>-<nonce: 16 hex>` into the creation time.
pub fn parse_mark(key: &str) -> Option<u64> {
    let (ms, nonce) = key.strip_prefix(GC_PREFIX)?.split_once('-')?;
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex16(ms) && hex16(nonce))
        .then(|| u64::from_str_radix(ms, 16).ok())
        .flatten()
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
        assert_eq!(parse_mark(&mark(0x18c0, 7)), Some(0x18c0));
        let s = SlotId::random();
        assert_eq!(parse_slot(&key_slot(&s)), Some(s));
        for ok in [
            CONFIG.to_string(),
            key_slot(&s),
            pack(&p),
            k,
            checkpoint(&d, 1),
            head_marker(&d, 3),
            epoch(&EpochName::random(1)),
            grant(&EpochName::ROOT, &s),
            mark(0x18c0, 7),
        ] {
            assert!(is_coffer_key(&ok), "{ok}");
        }
        for foreign in [
            "notes.txt",
            "log/x",
            "keys/zz",
            "data/00/ab",
            "configs",
            ".tmp/x",
            "gc/x",
            "gc/00000000000018c0-7",
            "head/x/0000000000000001",
        ] {
            assert!(!is_coffer_key(foreign), "{foreign}");
        }
    }
}
