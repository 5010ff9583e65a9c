//! Compression of the whole pagewire stream on the tunnel's link: zstd, streaming, with its
//! window across frames (the codec's LZ4 is then off: zstd on LZ4 output gains little).
//! QEMU's multifd compresses its pages with zstd; the tunnel gives zstd what is left after
//! the codec's zero pages, duplicates and deltas. Flushed at every QEMU section end, so
//! nothing waits in the compressor.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};

/// What compresses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCompression {
    /// The codec's own stream (with LZ4 frames, if the codec setting has them).
    None,
    /// zstd at this level over the codec's stream.
    Zstd { level: i32 },
}

/// zstd's level unless told otherwise: QEMU's multifd uses 1; 3 is zstd's own default.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl LinkCompression {
    /// `none` or `zstd` (at `level`).
    pub fn parse(name: &str, level: i32) -> Result<Self> {
        match name {
            "none" => Ok(LinkCompression::None),
            "zstd" => {
                if !zstd::compression_level_range().contains(&level) {
                    bail!(
                        "zstd level {level} is outside {:?}",
                        zstd::compression_level_range()
                    );
                }
                Ok(LinkCompression::Zstd { level })
            }
            _ => bail!("unknown link compression {name:?}: use zstd or none"),
        }
    }

    /// Its name in the hello.
    pub fn name(self) -> &'static str {
        match self {
            LinkCompression::None => "none",
            LinkCompression::Zstd { .. } => "zstd",
        }
    }

    /// Whether the codec should put LZ4 on its frames under it.
    pub fn wants_codec_lz4(self) -> bool {
        self == LinkCompression::None
    }

    /// Runs `f` on a writer that compresses into `link`, then ends the compressed stream.
    pub fn write<W: Write, T>(
        self,
        link: &mut W,
        f: impl FnOnce(&mut dyn Write) -> Result<T>,
    ) -> Result<T> {
        match self {
            LinkCompression::None => f(link),
            LinkCompression::Zstd { level } => {
                let mut z =
                    zstd::stream::write::Encoder::new(link, level).context("starting zstd")?;
                let t = f(&mut z)?;
                z.finish()
                    .context("sending to the tunnel's destination end")?;
                Ok(t)
            }
        }
    }
}

/// Runs `f` on a reader that decompresses what `link` carries, as the hello named it.
pub fn read<R: Read, T>(
    name: &str,
    link: &mut R,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    match name {
        "none" => f(link),
        "zstd" => {
            let mut z = zstd::stream::read::Decoder::new(link).context("starting zstd")?;
            f(&mut z)
        }
        other => {
            bail!("the source end compresses its link with {other:?}, which this end does not know")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_settings_round_trip_and_unknown_ones_are_refused() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [LinkCompression::None, LinkCompression::Zstd { level: 3 }] {
            let mut wire = Vec::new();
            c.write(&mut wire, |w| {
                w.write_all(&data[..1000])?;
                w.flush()?;
                w.write_all(&data[1000..])?;
                Ok(())
            })
            .unwrap();
            let back = read(c.name(), &mut &wire[..], |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Ok(v)
            })
            .unwrap();
            assert_eq!(back, data);
            if c != LinkCompression::None {
                assert!(wire.len() < data.len() / 4, "{} B", wire.len());
            }
        }
        assert!(LinkCompression::parse("zstd", 99).is_err());
        assert!(LinkCompression::parse("lz5", 3).is_err());
        assert!(read("brotli", &mut &[][..], |_| Ok(())).is_err());
    }
}
