//! Version-4 slots: round trips of both kinds, and every field bound to the
//! seal and the MAC (an edited expiry does not open, and is not authentic).

use super::*;
use crate::crypto::keyslot::StoredSlot;

const CREATED: u64 = 1_796_000_000_000;
const EXPIRES: u64 = CREATED + 7 * 86_400_000;

fn ids() -> (RepoId, SlotId) {
    (RepoId::random(), SlotId::random())
}

fn passphrase_grant(root: &MasterKey, identity: &SlotIdentity, (repo, slot): (&RepoId, &SlotId)) -> GrantSlot {
    let pw = (&b"grant pw"[..], KdfParams::MINIMUM);
    GrantSlot::create_passphrase(identity, root, pw, (repo, slot), (CREATED, "vm", EXPIRES)).unwrap()
}

#[test]
fn a_passphrase_grant_round_trips_and_opens_with_its_passphrase_only() {
    let (root, identity, (repo, slot)) = (MasterKey::generate(), SlotIdentity::generate(), ids());
    let g = passphrase_grant(&root, &identity, (&repo, &slot));
    let json = serde_json::to_vec_pretty(&g).unwrap();
    let StoredSlot::Grant(back) = StoredSlot::parse(&json, "k").unwrap() else {
        panic!("a grant")
    };
    assert_eq!(back, g);
    back.check("k").unwrap();
    let opened = back.open(b"grant pw", &repo, &slot).unwrap().unwrap();
    assert_eq!(opened.recipient(), identity.recipient());
    assert!(back.open(b"other", &repo, &slot).unwrap().is_none());
    assert!(back.open(b"grant pw", &RepoId::random(), &slot).unwrap().is_none());
    assert!(back.authentic(&root, &repo, &slot));
    assert!(!back.authentic(&MasterKey::generate(), &repo, &slot));
    assert!(!back.expired(EXPIRES - 1) && back.expired(EXPIRES));
}

#[test]
fn an_edited_expiry_neither_opens_nor_is_authentic() {
    let (root, identity, (repo, slot)) = (MasterKey::generate(), SlotIdentity::generate(), ids());
    let g = passphrase_grant(&root, &identity, (&repo, &slot));
    let mut later = g.clone();
    later.expires += 365 * 86_400_000;
    assert!(later.open(b"grant pw", &repo, &slot).unwrap().is_none());
    assert!(!later.authentic(&root, &repo, &slot));
    for edit in [
        |g: &mut GrantSlot| g.created -= 1,
        |g: &mut GrantSlot| g.host = "elsewhere".into(),
        |g: &mut GrantSlot| g.kind = KIND_RECIPIENT.into(),
    ] {
        let mut edited = g.clone();
        edit(&mut edited);
        assert!(!edited.authentic(&root, &repo, &slot), "{edited:?}");
    }
    let r = GrantSlot::create_recipient(&identity.recipient(), &root, (&repo, &slot), (CREATED, "vm", EXPIRES))
        .unwrap();
    let mut extended = r.clone();
    extended.expires = u64::MAX;
    assert!(r.authentic(&root, &repo, &slot));
    assert!(!extended.authentic(&root, &repo, &slot));
}

#[test]
fn a_recipient_grant_holds_no_secret_and_checks_its_fields() {
    let (root, identity, (repo, slot)) = (MasterKey::generate(), SlotIdentity::generate(), ids());
    let r = GrantSlot::create_recipient(&identity.recipient(), &root, (&repo, &slot), (CREATED, "", EXPIRES))
        .unwrap();
    let json = serde_json::to_value(&r).unwrap();
    let fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 7, "{fields:?}");
    r.check("k").unwrap();
    assert!(matches!(r.open(b"x", &repo, &slot), Err(Error::Config(_))));
    let mut salted = r.clone();
    salted.salt = Some("00".repeat(32));
    assert!(matches!(salted.check("k"), Err(Error::Corrupt { .. })));
    let mut newer = r.clone();
    newer.version = 5;
    assert!(matches!(newer.check("k"), Err(Error::UnsupportedVersion { found: 5, .. })));
    let bad = GrantSlot::create_recipient("age1nope", &root, (&repo, &slot), (CREATED, "", EXPIRES));
    assert!(matches!(bad, Err(Error::Config(_))));
    let past = GrantSlot::create_recipient(&identity.recipient(), &root, (&repo, &slot), (CREATED, "", CREATED));
    assert!(matches!(past, Err(Error::Config(_))));
}

#[test]
fn the_mac_is_the_documented_keyed_hash() {
    let (root, identity, (repo, slot)) = (MasterKey::generate(), SlotIdentity::generate(), ids());
    let recipient = identity.recipient();
    let r = GrantSlot::create_recipient(&recipient, &root, (&repo, &slot), (CREATED, "vm", EXPIRES)).unwrap();
    let key = blake3::derive_key("coffer v4 2026-12 grant slot mac key", root.as_bytes());
    let mut m = b"coffer grant slot\0".to_vec();
    m.extend_from_slice(repo.as_bytes());
    m.extend_from_slice(slot.as_bytes());
    m.push(9);
    m.extend_from_slice(b"recipient");
    m.push(u8::try_from(recipient.len()).unwrap());
    m.extend_from_slice(recipient.as_bytes());
    m.extend_from_slice(&CREATED.to_be_bytes());
    m.push(2);
    m.extend_from_slice(b"vm");
    m.extend_from_slice(&EXPIRES.to_be_bytes());
    assert_eq!(r.mac, blake3::keyed_hash(&key, &m).to_hex().as_str());
}
