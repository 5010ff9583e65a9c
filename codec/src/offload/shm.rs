//! Access to the shared region as `&[AtomicU32]`.
//!
//! The region is memory another agent (host process, host CPU over PCIe, device core) writes
//! while we read it, so every access is atomic: that keeps the codec free of `unsafe` and of
//! data races. Bulk bytes (pages in, frames out) move with Relaxed word accesses; the index
//! stores and loads around them (Release/Acquire) order them. Byte order inside a word is the
//! machine's own, so bytes land in memory in the order they were written.

use core::sync::atomic::{AtomicU32, Ordering};

use bytemuck::Pod;

use super::layout::{Completion, SubmitDesc, ENTRY_BYTES, ENTRY_WORDS};

/// The shared region, as words.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    words: &'a [AtomicU32],
}

impl<'a> Region<'a> {
    /// Views `words` as the region.
    pub fn new(words: &'a [AtomicU32]) -> Self {
        Region { words }
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// The word at byte offset `at` (a multiple of 4 inside the region; callers pass
    /// validated offsets, so the lookup never fails, and a stray one reads a dummy 0).
    #[inline]
    fn word(&self, at: usize) -> Option<&'a AtomicU32> {
        self.words.get(at / 4)
    }

    /// Loads the word at byte offset `at`.
    #[inline]
    pub fn load(&self, at: usize, order: Ordering) -> u32 {
        self.word(at).map_or(0, |w| w.load(order))
    }

    /// Stores the word at byte offset `at`.
    #[inline]
    pub fn store(&self, at: usize, value: u32, order: Ordering) {
        if let Some(w) = self.word(at) {
            w.store(value, order);
        }
    }

    /// Adds 1 to the word at `at` (Relaxed), e.g. the heartbeat.
    #[inline]
    pub fn bump(&self, at: usize) {
        if let Some(w) = self.word(at) {
            w.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Copies `dst.len()` bytes starting at byte offset `at` (4-aligned) out of the region.
    pub fn read_bytes(&self, at: usize, dst: &mut [u8]) {
        let first = at / 4;
        let words = self.words.get(first..).unwrap_or(&[]);
        let mut chunks = dst.chunks_exact_mut(4);
        let mut w = words.iter();
        for (c, word) in (&mut chunks).zip(&mut w) {
            c.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            if let Some(word) = w.next() {
                let b = word.load(Ordering::Relaxed).to_ne_bytes();
                tail.copy_from_slice(&b[..tail.len()]);
            }
        }
    }

    /// Copies `src` into the region at byte offset `at` (4-aligned). A partial last word is
    /// padded with zeros: the writer owns the region up to the next word boundary.
    pub fn write_bytes(&self, at: usize, src: &[u8]) {
        let first = at / 4;
        let words = self.words.get(first..).unwrap_or(&[]);
        let mut chunks = src.chunks_exact(4);
        let mut w = words.iter();
        for (c, word) in (&mut chunks).zip(&mut w) {
            word.store(
                u32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                Ordering::Relaxed,
            );
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            if let Some(word) = w.next() {
                let mut b = [0u8; 4];
                b[..tail.len()].copy_from_slice(tail);
                word.store(u32::from_ne_bytes(b), Ordering::Relaxed);
            }
        }
    }

    /// Reads a 32-byte ring entry at byte offset `at` (Relaxed; the index load before it
    /// is the Acquire).
    pub fn read_entry<T: Entry>(&self, at: usize) -> T {
        let mut w = [0u32; ENTRY_WORDS];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.load(at + 4 * i, Ordering::Relaxed);
        }
        T::from_words(w)
    }

    /// Writes a 32-byte ring entry at byte offset `at` (Relaxed; the index store after it
    /// is the Release).
    pub fn write_entry<T: Entry>(&self, at: usize, entry: &T) {
        for (i, v) in entry.to_words().into_iter().enumerate() {
            self.store(at + 4 * i, v, Ordering::Relaxed);
        }
    }
}

/// A ring entry: exactly [`ENTRY_WORDS`] words.
pub trait Entry: Pod {
    /// The entry from its words.
    fn from_words(w: [u32; ENTRY_WORDS]) -> Self;
    /// The entry as words.
    fn to_words(&self) -> [u32; ENTRY_WORDS];
}

impl Entry for SubmitDesc {
    fn from_words(w: [u32; ENTRY_WORDS]) -> Self {
        bytemuck::cast(w)
    }
    fn to_words(&self) -> [u32; ENTRY_WORDS] {
        bytemuck::cast(*self)
    }
}

impl Entry for Completion {
    fn from_words(w: [u32; ENTRY_WORDS]) -> Self {
        bytemuck::cast(w)
    }
    fn to_words(&self) -> [u32; ENTRY_WORDS] {
        bytemuck::cast(*self)
    }
}

const _: () = assert!(core::mem::size_of::<SubmitDesc>() == ENTRY_BYTES);
const _: () = assert!(core::mem::size_of::<Completion>() == ENTRY_BYTES);
