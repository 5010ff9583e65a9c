//! Everything of a QEMU stream that is not a whole page, as the codec's blobs: the tunnel
//! sends pages through the codec (so they get its zero pages, cache and deltas) and the
//! rest as tagged blobs in the same codec stream, so the far end sees both in the order the
//! source QEMU wrote them. `docs/TUNNEL.md` lists the tags; all numbers are little-endian.

use anyhow::{bail, ensure, Result};

use crate::qemu::{RamBlock, RamSection};

/// Tags of the blobs the tunnel sends (all in the range `0x5157_xxxx`, "QW").
pub mod tag {
    /// The stream's header and configuration record, as QEMU wrote them.
    pub const HEADER: u32 = 0x5157_0001;
    /// A RAM section begins: kind (0 start, 1 part, 2 end), section id, instance, version.
    pub const SECTION: u32 = 0x5157_0002;
    /// One block of the START section's list: its name's length, name, length in bytes.
    pub const BLOCK: u32 = 0x5157_0003;
    /// The open RAM section ends: 1 if it had a footer, else 0.
    pub const SECTION_END: u32 = 0x5157_0004;
    /// An XBZRLE page: block index, offset, then the delta as QEMU encoded it.
    pub const XBZRLE: u32 = 0x5157_0005;
    /// A page filled with one non-zero byte: block index, offset, the byte (a zero page
    /// travels as a page, so the codec sends it as its own zero-page record).
    pub const FILL: u32 = 0x5157_0006;
    /// The next bytes of the device state.
    pub const DEVICE: u32 = 0x5157_0007;
    /// After the device state, last: the source end's digest of the QEMU stream
    /// (`super::super::digest`), 8 bytes.
    pub const DIGEST: u32 = 0x5157_0008;
    /// QEMU 10's SWITCHOVER_START command (no body).
    pub const SWITCHOVER_START: u32 = 0x5157_0009;
}

/// Largest device-state piece in one blob: the source gathers QEMU's many small device
/// writes into pieces of this size.
pub const DEVICE_PIECE: usize = 32 * 1024;

/// One item that travels as a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Header(&'a [u8]),
    Section(RamSection),
    Block(RamBlock),
    SectionEnd {
        footer: bool,
    },
    Xbzrle {
        block: u32,
        offset: u64,
        delta: &'a [u8],
    },
    Fill {
        block: u32,
        offset: u64,
        byte: u8,
    },
    Device(&'a [u8]),
    Digest(u64),
    SwitchoverStart,
}

impl<'a> Item<'a> {
    /// The blob's tag and bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> u32 {
        out.clear();
        match self {
            Item::Header(raw) => {
                out.extend_from_slice(raw);
                tag::HEADER
            }
            Item::Section(s) => {
                let (kind, id, instance, version) = match *s {
                    RamSection::Start {
                        id,
                        instance_id,
                        version_id,
                    } => (0u8, id, instance_id, version_id),
                    RamSection::Part { id } => (1, id, 0, 0),
                    RamSection::End { id } => (2, id, 0, 0),
                };
                out.push(kind);
                for v in [id, instance, version] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                tag::SECTION
            }
            Item::Block(b) => {
                out.push(b.name.len() as u8);
                out.extend_from_slice(&b.name);
                out.extend_from_slice(&b.length.to_le_bytes());
                tag::BLOCK
            }
            Item::SectionEnd { footer } => {
                out.push(u8::from(*footer));
                tag::SECTION_END
            }
            Item::Xbzrle {
                block,
                offset,
                delta,
            } => {
                out.extend_from_slice(&block.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(delta);
                tag::XBZRLE
            }
            Item::Fill {
                block,
                offset,
                byte,
            } => {
                out.extend_from_slice(&block.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*byte);
                tag::FILL
            }
            Item::Device(bytes) => {
                out.extend_from_slice(bytes);
                tag::DEVICE
            }
            Item::Digest(d) => {
                out.extend_from_slice(&d.to_le_bytes());
                tag::DIGEST
            }
            Item::SwitchoverStart => tag::SWITCHOVER_START,
        }
    }

    /// The item a blob carries; a blob that is no item is an error naming its tag.
    pub fn decode(tag: u32, data: &'a [u8]) -> Result<Self> {
        let mut r = Reader(data);
        let item = match tag {
            tag::HEADER => return Ok(Item::Header(data)),
            tag::DEVICE => return Ok(Item::Device(data)),
            tag::SECTION => {
                let kind = r.u8()?;
                let (id, instance_id, version_id) = (r.u32()?, r.u32()?, r.u32()?);
                Item::Section(match kind {
                    0 => RamSection::Start {
                        id,
                        instance_id,
                        version_id,
                    },
                    1 => RamSection::Part { id },
                    2 => RamSection::End { id },
                    k => bail!("tunnel item: unknown RAM section kind {k}"),
                })
            }
            tag::BLOCK => {
                let n = usize::from(r.u8()?);
                ensure!(n > 0, "tunnel item: a RAM block without a name");
                let name = r.take(n)?.to_vec();
                Item::Block(RamBlock {
                    name,
                    length: r.u64()?,
                })
            }
            tag::SECTION_END => match r.u8()? {
                0 => Item::SectionEnd { footer: false },
                1 => Item::SectionEnd { footer: true },
                f => bail!("tunnel item: section end with footer flag {f}"),
            },
            tag::XBZRLE => {
                let (block, offset) = (r.u32()?, r.u64()?);
                let delta = r.take(r.0.len())?;
                Item::Xbzrle {
                    block,
                    offset,
                    delta,
                }
            }
            tag::FILL => Item::Fill {
                block: r.u32()?,
                offset: r.u64()?,
                byte: r.u8()?,
            },
            tag::DIGEST => Item::Digest(r.u64()?),
            tag::SWITCHOVER_START => Item::SwitchoverStart,
            t => bail!("tunnel item: unknown blob tag {t:#x}"),
        };
        ensure!(
            r.0.is_empty(),
            "tunnel item: {} bytes after a blob of tag {tag:#x}",
            r.0.len()
        );
        Ok(item)
    }
}

/// Reads little-endian numbers off the front of a blob.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.0.len() >= n, "tunnel item: a blob ends early");
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_round_trips_and_damage_is_named() {
        let items = [
            Item::Header(b"QEVM\0\0\0\x03"),
            Item::Section(RamSection::Start {
                id: 2,
                instance_id: 0,
                version_id: 4,
            }),
            Item::Section(RamSection::Part { id: 2 }),
            Item::Section(RamSection::End { id: 2 }),
            Item::Block(RamBlock {
                name: b"pc.ram".to_vec(),
                length: 128 << 20,
            }),
            Item::SectionEnd { footer: true },
            Item::SectionEnd { footer: false },
            Item::Xbzrle {
                block: 1,
                offset: 8192,
                delta: &[1, 2, 3],
            },
            Item::Fill {
                block: 0,
                offset: 4096,
                byte: 0xff,
            },
            Item::Device(&[9; 100]),
            Item::Digest(0x0123_4567_89ab_cdef),
            Item::SwitchoverStart,
        ];
        let mut buf = Vec::new();
        for item in items {
            let t = item.encode(&mut buf);
            assert_eq!(Item::decode(t, &buf).unwrap(), item);
            if !matches!(
                item,
                Item::Header(_) | Item::Device(_) | Item::Xbzrle { .. } | Item::SwitchoverStart
            ) {
                let e = Item::decode(t, &buf[..buf.len() - 1]).unwrap_err();
                assert!(e.to_string().contains("ends early"), "{e}");
                let mut long = buf.clone();
                long.push(0);
                assert!(Item::decode(t, &long).is_err());
            }
        }
        assert!(Item::decode(0x1234, &[])
            .unwrap_err()
            .to_string()
            .contains("unknown blob tag 0x1234"));
        assert!(Item::decode(tag::SECTION, &[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Item::decode(tag::BLOCK, &[0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Item::decode(tag::SWITCHOVER_START, &[0]).is_err());
    }
}
