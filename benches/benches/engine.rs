//! Throughput of each stage of a push, and of the whole pipeline into a
//! `MemoryStore`, in bytes per second of plaintext.
//!
//! ```text
//! cargo bench -p coffer-benches            # all
//! cargo bench -p coffer-benches -- seal    # one group
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_benches::{incompressible, write_incompressible_tree};
use coffer_engine::chunk::chunker::{Chunker, ChunkerParams};
use coffer_engine::chunk::codec::Compressor;
use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::crypto::{Keys, Kind, MasterKey};
use coffer_engine::folder::Folder;
use coffer_engine::format::id::PackId;
use coffer_engine::format::pack::PackBuilder;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore};
use coffer_engine::sync::push::push;
use coffer_engine::sync::push::upload::UploadOptions;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

const MIB: usize = 1024 * 1024;

fn keys() -> Keys {
    Keys::derive(&MasterKey::from_bytes([7; 32]))
}

fn chunking(c: &mut Criterion) {
    let data = incompressible(64 * MIB, 1);
    let chunker = Chunker::new(ChunkerParams::DEFAULT, 42);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc 64 MiB", |b| {
        b.iter(|| chunker.chunks(&data[..], Some(data.len() as u64)).count())
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = incompressible(MIB, 2);
    let keys = keys();
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("keyed blake3 1 MiB", |b| {
        b.iter(|| keys.chunk_id(black_box(&data)))
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let data = incompressible(MIB, 3);
    let keys = keys();
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("xchacha20poly1305 1 MiB", |b| {
        b.iter(|| keys.seal(Kind::Chunk, b"chunk id", black_box(&data)))
    });
    g.finish();
}

fn packing(c: &mut Criterion) {
    let chunks: Vec<Vec<u8>> = (0..16).map(|i| incompressible(MIB, 10 + i)).collect();
    let keys = keys();
    let ids: Vec<_> = chunks.iter().map(|d| keys.chunk_id(d)).collect();
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 * MIB as u64));
    g.sample_size(20);
    g.bench_function("16 x 1 MiB: zstd probe + seal + trailer", |b| {
        let mut zstd = Compressor::new();
        b.iter(|| {
            let mut p = PackBuilder::with_capacity(17 * MIB);
            for (id, d) in ids.iter().zip(&chunks) {
                p.add(&keys, *id, d, &mut zstd);
            }
            p.finish(&keys, PackId::random())
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let total = 256 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    write_incompressible_tree(tmp.path(), 4, total / 4).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.bench_function("256 MiB incompressible in 4 files into MemoryStore", |b| {
        b.iter(|| {
            rt.block_on(async {
                let store: DynStore = Arc::new(MemoryStore::new());
                let repo = Repository::init(store, b"pw", KdfParams::MINIMUM, None)
                    .await
                    .unwrap();
                // A fresh binding each time: nothing is known, everything is sent.
                let _ = std::fs::remove_dir_all(tmp.path().join(".coffer"));
                let folder = Folder::open(tmp.path(), repo.id(), "memory://", false).unwrap();
                let r = push(&repo, &folder, &UploadOptions::default(), &NoProgress)
                    .await
                    .unwrap();
                assert_eq!(r.upload.bytes_read, total as u64);
            })
        })
    });
    g.finish();
}

criterion_group!(stages, chunking, hashing, sealing, packing);
criterion_group!(end_to_end, pipeline);
criterion_main!(stages, end_to_end);
