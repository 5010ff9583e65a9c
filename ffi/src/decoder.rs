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
/// * 0: a cache copy. The decoder holds a copy of the whole cache (about `cache_pages *
///   page_size` bytes: 67,473,416 for the default configuration) and delivers to any
///   destination, callbacks alone included.
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
/// delivered. Any error is final for the stream: the decoder refuses all later input
/// (`PAGEWIRE_FINISHED`), and frames before the failing one may have been delivered.
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
