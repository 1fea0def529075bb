//! The reading half of a drop push: on a blocking thread of its own, each
//! file is opened, compared with what was last committed, and cut into
//! chunks, which reach the push (hashing, dedup, sealing, packing) through a
//! bounded channel — so reading and cutting overlap with sealing.

use super::{FileSeen, file_key};
use crate::chunk::chunker::Chunker;
use crate::error::{Error, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc::{Receiver, Sender, channel};

/// Chunks in flight between the reader and the push (~32 MiB at the
/// default average chunk size).
const IN_FLIGHT: usize = 64;

/// What the reader says, in file order.
#[derive(Debug)]
pub enum Piece {
    /// File `index` changed since its last commit; its chunks follow.
    Start { index: usize, seen: FileSeen },
    Chunk(Bytes),
    /// The file's chunks are all sent.
    End,
    Failed(Error),
}

/// Starts reading `files` (`(relative path, absolute path)`); files as last
/// committed in `tree` are skipped.
pub fn spawn(files: Vec<(String, PathBuf)>, tree: sled::Tree, chunker: Arc<Chunker>) -> Receiver<Piece> {
    let (tx, rx) = channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        for (index, (rel, abs)) in files.iter().enumerate() {
            match read(index, rel, abs, &tree, &chunker, &tx) {
                Ok(true) => {}
                Ok(false) => return, // the push stopped listening
                Err(e) => {
                    let _ = tx.blocking_send(Piece::Failed(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Sends one file; `Ok(false)` once the receiver is gone.
fn read(
    index: usize,
    rel: &str,
    abs: &std::path::Path,
    tree: &sled::Tree,
    chunker: &Chunker,
    tx: &Sender<Piece>,
) -> Result<bool> {
    let io = |e| Error::io(abs, e);
    let file = std::fs::File::open(abs).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let seen = FileSeen::of(&meta);
    let committed: Option<FileSeen> = tree
        .get(file_key(rel))?
        .map(|b| super::decode(&b, "file"))
        .transpose()?;
    if committed == Some(seen) {
        return Ok(true);
    }
    if tx.blocking_send(Piece::Start { index, seen }).is_err() {
        return Ok(false);
    }
    for chunk in chunker.chunks(file, Some(meta.len())) {
        if tx.blocking_send(Piece::Chunk(chunk.map_err(io)?)).is_err() {
            return Ok(false);
        }
    }
    Ok(tx.blocking_send(Piece::End).is_ok())
}
