//! The destination side: a decoder built from the stream header in caller memory (or
//! allocated), fed stream bytes, delivering pages where a `pagewire_destination` says.

use core::ffi::c_void;
use core::ptr::NonNull;

use pagewire::{Config, DecodeMode, Decoder, Error};

use crate::config::pagewire_config;
use crate::defines::{PAGEWIRE_DECODE_IN_PLACE, PAGEWIRE_FRAME_HEADER_LEN};
use crate::destination::{pagewire_destination, Destination};
use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result::{self, PAGEWIRE_INVALID_ARGUMENT};
use crate::place::{
    allocate, carve, deallocate, handle_ref, overhead, release, with_slot, Common, Release, Slot,
};
use crate::ptr::{arg, bytes, Out};
use crate::sink::Events;
use crate::stats::pagewire_decoder_stats;

/// A decoder: the destination side of one stream. Opaque; made by `pagewire_decoder_open`
/// in the memory given to it (or allocated), released by `pagewire_decoder_close`.
///
/// Thread-safety: not thread-safe. Use it from one thread at a time (it may move between
/// threads); its callbacks run on the thread that called the decode function.
pub struct pagewire_decoder {
    _opaque: [u8; 0],
}

/// What a handle points to.
#[repr(C)]
pub(crate) struct DecoderSlot {
    common: Common,
    /// Set when delivery stopped (callback or RAM failure) or a frame length was refused:
    /// cases where the codec's own decoder does not know the stream is broken.
    failed: bool,
    inner: Decoder<'static>,
    /// The page a decode call writes into when its destination has no RAM (cache copy;
    /// empty in place, where every page goes to RAM).
    staging: &'static mut [u8],
}

// SAFETY: repr(C), Common first; alignment 8 (asserted below).
unsafe impl Slot for DecoderSlot {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwDECODR");
    // one release function for both kinds (`Release::Either`): never refused as the wrong one
    const WRONG_RELEASE: [&'static str; 2] = ["", ""];
    fn common(&self) -> &Common {
        &self.common
    }
}

const _: () = assert!(align_of::<DecoderSlot>() <= crate::place::ALLOC_ALIGN);

fn slot(p: *mut pagewire_decoder) -> *mut DecoderSlot {
    p.cast()
}

/// Bytes a handle takes in front of the codec's storage, alignment slack included.
pub(crate) const HANDLE_LEN: usize = overhead::<DecoderSlot>();

/// The decoding mode `flags` of `pagewire_decoder_open` ask for: 0 a cache copy,
/// `PAGEWIRE_DECODE_IN_PLACE` in place; any other bit is refused.
pub(crate) fn mode_of(flags: u32) -> Res<DecodeMode> {
    match flags {
        0 => Ok(DecodeMode::CacheCopy),
        PAGEWIRE_DECODE_IN_PLACE => Ok(DecodeMode::InPlace),
        _ => Err(Fail::new(
            PAGEWIRE_INVALID_ARGUMENT,
            "flags may hold only PAGEWIRE_DECODE_IN_PLACE (or be 0)",
        )),
    }
}

/// The staging page a decoder in `mode` keeps: one page with a cache copy (for callbacks
/// without RAM), none in place.
const fn staging_len(cfg: &Config, mode: DecodeMode) -> usize {
    match mode {
        DecodeMode::CacheCopy => cfg.page_size as usize,
        DecodeMode::InPlace => 0,
    }
}

/// Bytes a decoder for `cfg` in `mode` needs (`pagewire_sizes.decoder_storage` for a cache
/// copy, `pagewire_config_decoder_storage` for either): the handle, its staging page and
/// the codec's storage.
pub(crate) const fn storage_len(cfg: &Config, mode: DecodeMode) -> usize {
    HANDLE_LEN + staging_len(cfg, mode) + cfg.decoder_storage_len_for(mode)
}

/// Builds a decoder for the stream header at the front of `input` in `len` bytes at `mem`;
/// returns the handle and the input consumed.
///
/// # Safety
/// `mem` is valid for `len` bytes, used by nothing else until the decoder is released.
unsafe fn build(
    input: &[u8],
    mode: DecodeMode,
    mem: NonNull<u8>,
    len: usize,
    allocated: usize,
) -> Res<(*mut DecoderSlot, usize)> {
    let cfg = Config::from_header(input)?;
    let needed = storage_len(&cfg, mode);
    let short = || Fail::from(Error::InsufficientStorage { needed, given: len });
    if len < needed {
        return Err(short());
    }
    // SAFETY: forwarded contract.
    let c = unsafe { carve::<DecoderSlot>(mem, len) }.ok_or_else(short)?;
    let staging = staging_len(&cfg, mode);
    if c.rest.len() < staging {
        return Err(short());
    }
    let (staging, rest) = c.rest.split_at_mut(staging);
    let (inner, used) = Decoder::from_header(input, mode, rest)?;
    let h = c.place.fill(DecoderSlot {
        common: Common::new(DecoderSlot::MAGIC, allocated),
        failed: false,
        inner,
        staging,
    });
    Ok((h, used))
}

/// `build` in a fresh allocation of the size the header and the mode ask for.
fn build_allocated(input: &[u8], mode: DecodeMode) -> Res<(*mut DecoderSlot, usize)> {
    let len = storage_len(&Config::from_header(input)?, mode);
    let mem = allocate(len)?;
    // SAFETY: a fresh allocation of `len` bytes, owned by the decoder from here on.
    unsafe { build(input, mode, mem, len, len) }.inspect_err(|_| {
        // SAFETY: nothing was built in it.
        unsafe { deallocate(mem, len) }
    })
}

/// Parses the stream header at the front of `input` (at least `PAGEWIRE_HEADER_LEN` bytes)
/// and builds a decoder for the configuration it carries. Writes the handle to `*out` and
/// the header bytes consumed (`PAGEWIRE_HEADER_LEN`) to `*consumed`; decode the stream
/// bytes after them.
///
/// `flags` chooses how the decoder keeps the pages its stream refers to:
///
/// * 0: a cache copy. The decoder holds a copy of the whole cache (67,473,416 bytes of
///   codec storage for the default configuration, about `cache_pages * page_size`) and
///   delivers to any destination, callbacks alone included.
/// * `PAGEWIRE_DECODE_IN_PLACE`: in place, for a VMM. The decoder builds each page
///   directly in guest memory and reads referenced pages back from there: 364,552 bytes
///   of codec storage for the default configuration. Every decode call must then give RAM
///   regions or a page table (see `pagewire_destination` for the memory contract);
///   callbacks alone are refused with `PAGEWIRE_INVALID_ARGUMENT`.
///
/// Any other bit is refused with `PAGEWIRE_INVALID_ARGUMENT`. Both modes decode the same
/// streams into the same memory.
///
/// The decoder lives in `storage_len` bytes at `storage` (any alignment; at least
/// `pagewire_config_decoder_storage` for the same `flags`, which for flags 0 is
/// `pagewire_sizes.decoder_storage`: learn the configuration first with
/// `pagewire_config_from_header`), which belong to it until `pagewire_decoder_close`; the
/// handle points inside them. With `storage` NULL and `storage_len` 0 the library
/// allocates the memory instead (as much as the mode needs).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_open(
    input: *const u8,
    input_len: usize,
    storage: *mut c_void,
    storage_len: usize,
    flags: u32,
    out: *mut *mut pagewire_decoder,
    consumed: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (input, out, consumed) = unsafe {
            (
                bytes(input, input_len, "input")?,
                Out::new(out, "out")?,
                Out::new(consumed, "consumed")?,
            )
        };
        let mode = mode_of(flags)?;
        let (h, used) = match NonNull::new(storage.cast::<u8>()) {
            None if storage_len == 0 => build_allocated(input, mode)?,
            None => return Err(Fail::null("storage")),
            // SAFETY: pointer rules: `storage_len` bytes at `storage` belong to the decoder
            // until it is released.
            Some(mem) => unsafe { build(input, mode, mem, storage_len, 0)? },
        };
        out.write(h.cast());
        consumed.write(used);
        Ok(())
    })
}

/// Releases a decoder made by `pagewire_decoder_open`: memory the caller gave is the
/// caller's again, memory the library allocated is freed. NULL is accepted and ignored.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_close(dec: *mut pagewire_decoder) -> pagewire_result {
    guard(|| {
        if dec.is_null() {
            return Ok(());
        }
        // SAFETY: pointer rules: `dec` is a handle from this library; not used after success.
        unsafe { release(slot(dec), "dec", Release::Either) }
    })
}

/// Length of the frame that starts `buf`, from its first `PAGEWIRE_FRAME_HEADER_LEN` bytes,
/// checked against the stream's limits: how many bytes a network reader must read next.
/// Never more than `pagewire_sizes.max_frame`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_frame_len(
    dec: *const pagewire_decoder,
    buf: *const u8,
    buf_len: usize,
    frame_len: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `dec` a live handle not changed meanwhile.
        let (s, buf, out) = unsafe {
            (
                handle_ref::<DecoderSlot>(dec.cast(), "dec")?,
                bytes(buf, buf_len, "buf")?,
                Out::new(frame_len, "frame_len")?,
            )
        };
        out.write(s.inner.frame_len(buf)?);
        Ok(())
    })
}

/// Decodes one frame of exactly `frame.len()` bytes; returns the pages delivered. A
/// delivery failure (callback or RAM) is reported as itself, whatever the codec made of it.
fn one_frame(
    inner: &mut Decoder<'_>,
    failed: &mut bool,
    frame: &[u8],
    events: &mut Events<'_>,
) -> Res<usize> {
    if *failed {
        return Err(Error::Finished.into());
    }
    let r = inner.decode_frame(frame, events);
    if let Some(fail) = events.stopped() {
        *failed = true;
        return Err(fail);
    }
    Ok(r?)
}

/// Decodes every complete frame at the front of `input`; returns the bytes consumed and
/// the pages delivered.
fn frames(
    inner: &mut Decoder<'_>,
    failed: &mut bool,
    input: &[u8],
    events: &mut Events<'_>,
) -> Res<(usize, usize)> {
    let (mut pos, mut pages) = (0, 0);
    while input.len() - pos >= PAGEWIRE_FRAME_HEADER_LEN && !*failed {
        let rest = &input[pos..];
        let len = inner.frame_len(rest).inspect_err(|_| *failed = true)?;
        if rest.len() < len {
            break;
        }
        pages += one_frame(inner, failed, &rest[..len], events)?;
        pos += len;
    }
    if *failed {
        return Err(Error::Finished.into());
    }
    Ok((pos, pages))
}

/// Decodes every complete frame at the front of `input` (stream bytes after the header, in
/// any amount) and delivers its pages, iteration ends, blobs and end of stream to `*dest`;
/// a partial frame at the end is left for the next call. Writes the bytes consumed to
/// `*consumed` and the pages delivered to `*pages` (may be NULL).
///
/// Each frame is checked completely (CRC, every record) before anything of it is
/// delivered. Any error of the stream or of its delivery is final: the decoder refuses all
/// later input (`PAGEWIRE_FINISHED`), and frames before the failing one may have been
/// delivered. Errors of the arguments found before any input is read (a NULL pointer, a
/// destination its checks refuse, callbacks alone for a decoder opened with
/// `PAGEWIRE_DECODE_IN_PLACE`) leave the decoder as it was.
///
/// # Safety
/// The pointer rules at the top of this header, and those of `pagewire_destination`.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode(
    dec: *mut pagewire_decoder,
    input: *const u8,
    input_len: usize,
    dest: *const pagewire_destination,
    consumed: *mut usize,
    pages: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `input_len` readable bytes at `input`; `dest` NULL or
        // readable, its arrays as it states; `consumed` writable, `pages` NULL or writable.
        let (input, dest, consumed, pages) = unsafe {
            (
                bytes(input, input_len, "input")?,
                Destination::check(arg(dest, "dest")?)?,
                Out::new(consumed, "consumed")?,
                Out::optional(pages, "pages")?,
            )
        };
        // SAFETY: pointer rules: `dec` is a live handle used by this thread alone.
        unsafe {
            with_slot(slot(dec), "dec", |s| {
                let DecoderSlot {
                    inner,
                    failed,
                    staging,
                    ..
                } = s;
                let page_size = inner.config().page_size as usize;
                let mut events = dest.sink(staging, page_size, inner.mode())?;
                let (used, delivered) = frames(inner, failed, input, &mut events)?;
                consumed.write(used);
                if let Some(pages) = pages {
                    pages.write(delivered);
                }
                Ok(())
            })
        }
    })
}

/// `PAGEWIRE_OK` once the end of the stream has been decoded; `PAGEWIRE_TRUNCATED` before
/// (the stream is incomplete: do not resume the guest); `PAGEWIRE_FINISHED` after a failure.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_check_complete(
    dec: *const pagewire_decoder,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `dec` a live handle not changed meanwhile.
        let s = unsafe { handle_ref::<DecoderSlot>(dec.cast(), "dec")? };
        if s.failed {
            return Err(Error::Finished.into());
        }
        Ok(s.inner.check_complete()?)
    })
}

/// Writes the decoder's counters to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_get_stats(
    dec: *const pagewire_decoder,
    out: *mut pagewire_decoder_stats,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (s, out) = unsafe {
            (
                handle_ref::<DecoderSlot>(dec.cast(), "dec")?,
                Out::new(out, "out")?,
            )
        };
        out.write(s.inner.stats().into());
        Ok(())
    })
}

/// Writes the decoder's configuration (from the stream header) to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_get_config(
    dec: *const pagewire_decoder,
    out: *mut pagewire_config,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (s, out) = unsafe {
            (
                handle_ref::<DecoderSlot>(dec.cast(), "dec")?,
                Out::new(out, "out")?,
            )
        };
        out.write(pagewire_config::from_codec(s.inner.config()));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    //! Decoding in place through the C entry points, small enough for Miri: the RAM
    //! destination reads pages back and pairs them while the codec builds pages.

    use super::*;
    use crate::destination::pagewire_destination_kind::{self, *};
    use crate::pagewire_result::*;
    use crate::sink::{pagewire_ram_region, pagewire_sink};
    use pagewire::Encoder;

    const PS: usize = 4096;
    const PAGES: usize = 6;

    fn cfg() -> Config {
        Config {
            cache_pages: 4,
            frame_bytes: 16384,
            lz4: false,
            ..Config::DEFAULT
        }
    }

    /// Three passes over six pages with copies, small changes and a page of two others'
    /// halves: a stream with DUP, DELTA and BLOCKS records. Returns it and the memory.
    fn stream() -> (Vec<u8>, Vec<u8>) {
        let cfg = cfg();
        let mut storage = vec![0u8; cfg.encoder_storage_len()];
        let mut enc = Encoder::new(cfg, &mut storage).unwrap();
        let mut out = vec![0u8; cfg.max_output_len()];
        let mut wire = Vec::new();
        let mut mem: Vec<u8> = (0..PAGES * PS)
            .map(|i| ((i % PS) * 31 + (i / PS) * 7) as u8 ^ (i / 97) as u8)
            .collect();
        let copy = |mem: &mut Vec<u8>, from: usize, to: usize, bytes: core::ops::Range<usize>| {
            mem.copy_within(
                from * PS + bytes.start..from * PS + bytes.end,
                to * PS + bytes.start,
            )
        };
        for pass in 0..3 {
            match pass {
                0 => copy(&mut mem, 1, 3, 0..PS),
                1 => {
                    mem[5] ^= 0x55;
                    mem[2 * PS + 100] ^= 1;
                    copy(&mut mem, 0, 4, 0..PS);
                }
                _ => {
                    copy(&mut mem, 2, 5, 0..PS / 2);
                    copy(&mut mem, 0, 5, PS / 2..PS);
                    mem[PS + 7] ^= 0xf0;
                }
            }
            for pfn in 0..PAGES {
                let page = &mem[pfn * PS..(pfn + 1) * PS];
                let n = enc.encode_page(pfn as u64, page, &mut out).unwrap();
                wire.extend_from_slice(&out[..n]);
            }
            let n = enc.end_iteration(&mut out).unwrap();
            wire.extend_from_slice(&out[..n]);
        }
        let n = enc.finish(&mut out).unwrap();
        wire.extend_from_slice(&out[..n]);
        let s = enc.stats();
        assert!(
            s.dup.pages > 0 && s.delta.pages > 0 && s.blocks.pages > 0,
            "{s:?}"
        );
        (wire, mem)
    }

    fn destination(kind: pagewire_destination_kind) -> pagewire_destination {
        pagewire_destination {
            kind: kind as u32,
            reserved: 0,
            regions: core::ptr::null(),
            region_count: 0,
            page_table: core::ptr::null(),
            page_table_len: 0,
            events: pagewire_sink {
                user: core::ptr::null_mut(),
                page: None,
                iteration_end: None,
                blob: None,
                end_of_stream: None,
            },
        }
    }

    /// Opens a decoder in the mode of `flags` and decodes the whole stream into `dest`.
    fn decode(wire: &[u8], flags: u32, dest: &pagewire_destination) -> pagewire_result {
        let (mut dec, mut used, mut consumed) = (core::ptr::null_mut(), 0, 0);
        // SAFETY: valid pointers; `dest` describes live memory (the callers' contract).
        unsafe {
            let rc = pagewire_decoder_open(
                wire.as_ptr(),
                wire.len(),
                core::ptr::null_mut(),
                0,
                flags,
                &mut dec,
                &mut used,
            );
            assert_eq!(rc, PAGEWIRE_OK);
            let rest = &wire[used..];
            let mut rc = pagewire_decoder_decode(
                dec,
                rest.as_ptr(),
                rest.len(),
                dest,
                &mut consumed,
                core::ptr::null_mut(),
            );
            if rc == PAGEWIRE_OK {
                assert_eq!(consumed, rest.len());
                rc = pagewire_decoder_check_complete(dec);
            }
            assert_eq!(pagewire_decoder_close(dec), PAGEWIRE_OK);
            rc
        }
    }

    #[test]
    fn in_place_into_a_page_table_and_regions_equals_the_source_and_a_cache_copy() {
        let (wire, mem) = stream();
        // a cache copy into one region
        let mut copy = vec![0u8; PAGES * PS];
        let all = [pagewire_ram_region {
            first_pfn: 0,
            page_count: PAGES as u64,
            host: copy.as_mut_ptr(),
        }];
        let into_copy = pagewire_destination {
            regions: all.as_ptr(),
            region_count: 1,
            ..destination(PAGEWIRE_TO_RAM_REGIONS)
        };
        assert_eq!(decode(&wire, 0, &into_copy), PAGEWIRE_OK);
        assert!(copy == mem);

        // in place, each page its own allocation, the table in reverse order of them
        let mut pages: Vec<Vec<u8>> = (0..PAGES).map(|_| vec![0u8; PS]).collect();
        let table: Vec<*mut u8> = pages.iter_mut().rev().map(|p| p.as_mut_ptr()).collect();
        let through_table = pagewire_destination {
            page_table: table.as_ptr(),
            page_table_len: PAGES,
            ..destination(PAGEWIRE_TO_PAGE_TABLE)
        };
        assert_eq!(
            decode(&wire, PAGEWIRE_DECODE_IN_PLACE, &through_table),
            PAGEWIRE_OK
        );
        for (pfn, page) in pages.iter().rev().enumerate() {
            assert!(page[..] == mem[pfn * PS..(pfn + 1) * PS], "pfn {pfn}");
        }

        // in place, two regions of three pages
        let (mut low, mut high) = (vec![0u8; 3 * PS], vec![0u8; 3 * PS]);
        let banks = [
            pagewire_ram_region {
                first_pfn: 3,
                page_count: 3,
                host: high.as_mut_ptr(),
            },
            pagewire_ram_region {
                first_pfn: 0,
                page_count: 3,
                host: low.as_mut_ptr(),
            },
        ];
        let into_banks = pagewire_destination {
            regions: banks.as_ptr(),
            region_count: 2,
            ..destination(PAGEWIRE_TO_RAM_REGIONS)
        };
        assert_eq!(
            decode(&wire, PAGEWIRE_DECODE_IN_PLACE, &into_banks),
            PAGEWIRE_OK
        );
        assert!(low[..] == mem[..3 * PS] && high[..] == mem[3 * PS..]);

        // in place with callbacks alone: refused, never decoded into a staging page
        let callbacks = destination(PAGEWIRE_TO_CALLBACKS);
        assert_eq!(
            decode(&wire, PAGEWIRE_DECODE_IN_PLACE, &callbacks),
            PAGEWIRE_INVALID_ARGUMENT
        );
        assert_eq!(decode(&wire, 0, &callbacks), PAGEWIRE_OK);
    }

    #[test]
    fn flags_choose_the_mode_and_nothing_else() {
        assert_eq!(mode_of(0).unwrap(), DecodeMode::CacheCopy);
        assert_eq!(
            mode_of(PAGEWIRE_DECODE_IN_PLACE).unwrap(),
            DecodeMode::InPlace
        );
        for flags in [2, 3, 1 << 31, u32::MAX] {
            assert_eq!(mode_of(flags).unwrap_err().code, PAGEWIRE_INVALID_ARGUMENT);
        }
        let c = cfg();
        assert_eq!(
            storage_len(&c, DecodeMode::CacheCopy) - storage_len(&c, DecodeMode::InPlace),
            c.cache_len() + PS
        );
    }
}
