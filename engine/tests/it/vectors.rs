//! Official test vectors, pinned in `fixtures/` (copied from their sources; see
//! `fixtures/README.md`).

use coffer_engine::chunk::chunker::{Chunker, ChunkerParams};
use coffer_engine::crypto::{envelope_open, envelope_seal_with_nonce, keyed_hash};
use serde_json::Value;

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(super::fixture(name)).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// The BLAKE3 team's `test_vectors.json`: keyed mode (the chunk-id function),
/// plus derive_key (sub-keys) and plain hash (commit chain), default and extended
/// output lengths.
#[test]
fn blake3_official_vectors() {
    let v = json("blake3_test_vectors.json");
    let key: [u8; 32] = v["key"].as_str().unwrap().as_bytes().try_into().unwrap();
    let context = v["context_string"].as_str().unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let len = case["input_len"].as_u64().unwrap() as usize;
        let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let keyed = unhex(&case["keyed_hash"]);
        assert_eq!(
            keyed_hash(&key, &input)[..],
            keyed[..32],
            "keyed_hash, len {len}"
        );
        let mut xof = vec![0u8; keyed.len()];
        blake3::Hasher::new_keyed(&key)
            .update(&input)
            .finalize_xof()
            .fill(&mut xof);
        assert_eq!(xof, keyed, "keyed_hash extended, len {len}");
        let derived = unhex(&case["derive_key"]);
        assert_eq!(
            blake3::derive_key(context, &input)[..],
            derived[..32],
            "derive_key, len {len}"
        );
        let hash = unhex(&case["hash"]);
        assert_eq!(
            blake3::hash(&input).as_bytes()[..],
            hash[..32],
            "hash, len {len}"
        );
    }
}

/// draft-irtf-cfrg-xchacha-03 §A.3.1, through coffer's envelope code path.
#[test]
fn xchacha20poly1305_draft_vector() {
    let v = json("xchacha20poly1305.json");
    let key: [u8; 32] = unhex(&v["key"]).try_into().unwrap();
    let nonce: [u8; 24] = unhex(&v["nonce"]).try_into().unwrap();
    let (aad, pt) = (unhex(&v["aad"]), unhex(&v["plaintext"]));
    let mut expected = nonce.to_vec();
    expected.extend(unhex(&v["ciphertext"]));
    expected.extend(unhex(&v["tag"]));
    assert_eq!(envelope_seal_with_nonce(&key, &nonce, &aad, &pt), expected);
    assert_eq!(envelope_open(&key, &aad, &expected).unwrap(), pt);
    let mut bad = expected.clone();
    bad[30] ^= 1;
    assert!(envelope_open(&key, &aad, &bad).is_err());
    assert!(envelope_open(&key, b"other aad", &expected).is_err());
}

/// FastCDC 2020 reference cuts on SekienAkashita.jpg (normalization 1, unseeded,
/// 4096/16384/65535), through coffer's streaming chunker. fastcdc ≥ 4 requires even
/// sizes (its issue #52: odd ones shift boundaries), so the max is rounded down to
/// 65534 — as the crate's own copy of this test does; no chunk of this file comes
/// near the max, so the reference cuts are the same.
#[test]
fn fastcdc2020_reference_chunks() {
    let v = json("fastcdc2020_sekien.json");
    let data = std::fs::read(super::fixture(v["file"].as_str().unwrap())).unwrap();
    let params = ChunkerParams {
        min: v["min"].as_u64().unwrap() as u32,
        avg: v["avg"].as_u64().unwrap() as u32,
        max: v["max"].as_u64().unwrap() as u32 & !1,
        normalization: 1,
    };
    let chunker = Chunker::new(params, 0);
    let lengths: Vec<u64> = chunker
        .chunks(&data[..], None)
        .map(|c| c.unwrap().len() as u64)
        .collect();
    let expected: Vec<u64> = v["chunk_lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(lengths, expected);
    let mut rest = &data[..];
    let mut hashes = Vec::new();
    while !rest.is_empty() {
        let (hash, len) = chunker.cut_with_hash(rest);
        hashes.push(hash);
        rest = &rest[len..];
    }
    let expected: Vec<u64> = v["chunk_gear_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(hashes, expected);
}
