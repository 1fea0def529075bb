//! Cutting data into chunks (FastCDC), compressing them (zstd), and the
//! buffers the pipeline recycles.

pub mod buffers;
pub mod chunker;
pub mod codec;
