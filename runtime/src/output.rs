//! Captured guest output: stdout, stderr, messages and warnings, in the order
//! they were written, with a cap on the total size.

use serde::{Deserialize, Serialize};

/// Where a piece of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
    /// An R `message()` condition.
    Message,
    /// An R `warning()` condition.
    Warning,
}

/// One contiguous piece of output from one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub stream: Stream,
    pub bytes: Vec<u8>,
}

/// Bytes of the cap each chunk costs besides its bytes. A chunk takes about
/// 100 bytes of host memory however short it is (its header, its slot in the
/// list, the allocation behind its bytes), so output alternating 1-byte
/// writes between streams would cost ~100x the cap if only bytes counted.
/// Counting chunks against `cap / CHUNK_COST` keeps the whole log within
/// about 2.5x the cap, while a cap's worth of output in a few chunks still
/// fits exactly.
pub const CHUNK_COST: usize = 64;

/// The output log of one evaluation.
#[derive(Debug)]
pub struct Output {
    chunks: Vec<Chunk>,
    total: usize,
    cap: usize,
    exceeded: bool,
}

impl Output {
    pub fn new(cap: usize) -> Self {
        Output {
            chunks: Vec::new(),
            total: 0,
            cap,
            exceeded: false,
        }
    }

    /// Append output. Past the cap the bytes are dropped and [`Output::exceeded`]
    /// becomes true; the guest is told the write succeeded so it does not spin.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let room = self.cap.saturating_sub(self.total);
        let take = data.len().min(room);
        if take < data.len() {
            self.exceeded = true;
        }
        if take == 0 {
            return;
        }
        let max_chunks = self.max_chunks();
        let n = self.chunks.len();
        match self.chunks.last_mut() {
            Some(last) if last.stream == stream => last.bytes.extend_from_slice(&data[..take]),
            _ if n >= max_chunks => {
                self.exceeded = true;
                return;
            }
            _ => self.chunks.push(Chunk {
                stream,
                bytes: data[..take].to_vec(),
            }),
        }
        self.total += take;
    }

    /// How many chunks the cap pays for (at least a few, for tiny caps).
    fn max_chunks(&self) -> usize {
        (self.cap / CHUNK_COST).max(16)
    }

    /// True once output was dropped because the cap was reached.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Take the log, leaving an empty one with the same cap.
    pub fn take(&mut self) -> Vec<Chunk> {
        self.total = 0;
        self.exceeded = false;
        std::mem::take(&mut self.chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_caps() {
        let mut o = Output::new(10);
        o.write(Stream::Stdout, b"abc");
        o.write(Stream::Stdout, b"def");
        o.write(Stream::Stderr, b"ghijkl");
        assert!(o.exceeded());
        let c = o.take();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].bytes, b"abcdef");
        assert_eq!(c[1].bytes, b"ghij");
        assert!(!o.exceeded());
    }

    #[test]
    fn alternating_tiny_writes_are_bounded_by_chunks() {
        let cap = 64 << 10;
        let mut o = Output::new(cap);
        for _ in 0..cap {
            o.write(Stream::Stdout, b"a");
            o.write(Stream::Stderr, b"b");
        }
        assert!(o.exceeded());
        let c = o.take();
        assert_eq!(c.len(), cap / CHUNK_COST);
        // A cap's worth in one stream still fits entirely.
        o.write(Stream::Stdout, &vec![b'x'; cap]);
        assert!(!o.exceeded());
        assert_eq!(o.take()[0].bytes.len(), cap);
    }
}
