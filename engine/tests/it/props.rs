//! Property tests of the pure parts.

use coffer_engine::chunk::chunker::{Chunker, ChunkerParams};
use coffer_engine::chunk::codec::{Compressor, decompress};
use coffer_engine::crypto::{Keys, Kind, MasterKey, envelope_open, envelope_seal_with_nonce};
use proptest::prelude::*;

fn small_chunker(seed: u64) -> Chunker {
    let params = ChunkerParams {
        min: 64,
        avg: 256,
        max: 1024,
        normalization: 2,
    };
    Chunker::new(params, seed)
}

/// Reads at most `step` bytes per call.
struct Trickle<'a>(&'a [u8], usize);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip(key in any::<[u8; 32]>(), id in proptest::collection::vec(any::<u8>(), 0..40), data in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let keys = Keys::derive(&MasterKey::from_bytes(key));
        let sealed = keys.seal(Kind::Chunk, &id, &data);
        prop_assert_eq!(keys.open(Kind::Chunk, &id, &sealed).unwrap(), data);
        prop_assert!(keys.open(Kind::Commit, &id, &sealed).is_err());
    }

    /// The envelope (HChaCha20 + AWS-LC ChaCha20-Poly1305) against RustCrypto's
    /// independent XChaCha20-Poly1305, byte for byte, both ways; lengths cross
    /// the 64-byte block and the AVX2 8-block boundaries.
    #[test]
    fn envelope_matches_rustcrypto_xchacha(
        key in any::<[u8; 32]>(),
        nonce in any::<[u8; 24]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        flip in any::<prop::sample::Index>(),
    ) {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let theirs = chacha20poly1305::XChaCha20Poly1305::new((&key).into())
            .encrypt((&nonce).into(), Payload { msg: &data, aad: &aad })
            .unwrap();
        let ours = envelope_seal_with_nonce(&key, &nonce, &aad, &data);
        prop_assert_eq!(&ours[..24], &nonce[..]);
        prop_assert_eq!(&ours[24..], &theirs[..]);
        prop_assert_eq!(envelope_open(&key, &aad, &ours).unwrap(), data);
        let mut bad = ours.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 0x40;
        prop_assert!(envelope_open(&key, &aad, &bad).is_err());
    }

    #[test]
    fn chunks_concatenate_to_the_input(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        seed in any::<u64>(),
        step in 1usize..3000,
        previous in proptest::collection::btree_set(0u64..25_000, 0..60),
    ) {
        let c = small_chunker(seed);
        let previous: Vec<u64> = previous.into_iter().collect();
        let chunks: Vec<_> = c
            .chunks_resyncing(Trickle(&data, step), None, previous)
            .map(|r| r.unwrap())
            .collect();
        let joined: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
        prop_assert_eq!(&joined, &data);
        for (i, ch) in chunks.iter().enumerate() {
            prop_assert!(ch.len() <= 1024);
            prop_assert!(ch.len() >= 64 || i + 1 == chunks.len(), "only the last chunk may be short");
        }
    }

    #[test]
    fn compression_round_trips_and_only_shrinks(data in proptest::collection::vec(0u8..4, 0..300_000)) {
        let mut z = Compressor::new();
        if let Some(c) = z.compress(&data) {
            prop_assert!(c.len() < data.len());
            let c = c.to_vec();
            prop_assert_eq!(decompress(&c, data.len()).unwrap(), data);
        }
    }
}

#[test]
fn an_edit_changes_only_nearby_chunks() {
    let mut data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let c = small_chunker(7);
    let before: std::collections::HashSet<Vec<u8>> = c
        .chunks(&data[..], None)
        .map(|b| b.unwrap().to_vec())
        .collect();
    data.splice(1_000_000..1_000_000, b"inserted bytes".iter().copied());
    let after: Vec<Vec<u8>> = c
        .chunks(&data[..], None)
        .map(|b| b.unwrap().to_vec())
        .collect();
    let new = after.iter().filter(|ch| !before.contains(*ch)).count();
    assert!(
        new <= 3,
        "an insertion re-chunked {new} chunks of {}",
        after.len()
    );
}
