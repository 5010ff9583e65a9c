//! Carving caller-provided storage into the aligned pieces a state needs.

use crate::error::{Error, Result};

/// Splits `buf` into aligned pieces, front to back.
pub struct Carver<'a> {
    rest: &'a mut [u8],
}

impl<'a> Carver<'a> {
    /// Starts at the first 8-byte-aligned address of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        let pad = buf.as_ptr().align_offset(8).min(buf.len());
        Carver {
            rest: &mut buf[pad..],
        }
    }

    /// The next `len` bytes (rounded up to keep 8-byte alignment for what follows).
    pub fn bytes(&mut self, len: usize) -> Result<&'a mut [u8]> {
        let padded = (len + 7) & !7;
        let given = self.rest.len();
        if padded > given {
            return Err(Error::InsufficientStorage {
                needed: padded,
                given,
            });
        }
        let (head, tail) = core::mem::take(&mut self.rest).split_at_mut(padded);
        self.rest = tail;
        Ok(&mut head[..len])
    }

    /// The next `count` 32-bit words.
    #[cfg(any(feature = "encoder", feature = "decoder"))]
    pub fn words32(&mut self, count: usize) -> Result<&'a mut [u32]> {
        let bytes = self.bytes(count * 4)?;
        bytemuck::try_cast_slice_mut(bytes).map_err(|_| Error::InsufficientStorage {
            needed: count * 4,
            given: 0,
        })
    }

    /// The next `count` 64-bit words.
    pub fn words(&mut self, count: usize) -> Result<&'a mut [u64]> {
        let bytes = self.bytes(count * 8)?;
        bytemuck::try_cast_slice_mut(bytes).map_err(|_| Error::InsufficientStorage {
            needed: count * 8,
            given: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_aligned_pieces_from_any_offset() {
        let mut buf = [0u8; 100];
        for skew in 0..8 {
            let mut c = Carver::new(&mut buf[skew..]);
            let a = c.bytes(5).unwrap();
            assert_eq!(a.len(), 5);
            let w = c.words(3).unwrap();
            assert_eq!(w.len(), 3);
            assert_eq!(w.as_ptr() as usize % 8, 0);
            assert!(matches!(
                c.bytes(1000),
                Err(Error::InsufficientStorage { .. })
            ));
        }
    }
}
