//! The destination side: a decoder in caller memory (or allocated), fed frames, delivering
//! pages to callbacks or straight into guest RAM.

use core::ffi::c_void;
use core::ptr::NonNull;

use pagewire::FRAME_HEADER_LEN;
use pagewire::{Config, Decoder, Error};

use crate::config::{pagewire_config, sizes_of};
use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result;
use crate::place::{allocate, carve, deallocate, handle_ref, release, with_slot, Common, Slot};
use crate::ptr::{arg, bytes, items, opt_arg, Out};
use crate::sink::{pagewire_ram_region, pagewire_sink, Events, Ram};
use crate::stats::pagewire_decoder_stats;

/// A decoder: the destination side of one stream. Opaque; lives in the memory given to
/// `pagewire_decoder_init` (or allocated by `pagewire_decoder_new`).
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
}

// SAFETY: repr(C), Common first; alignment 8 (asserted below).
unsafe impl Slot for DecoderSlot {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwDECODR");
    const WRONG_RELEASE: [&'static str; 2] = [
        "this decoder was made by pagewire_decoder_new: release it with pagewire_decoder_free",
        "this decoder was made by pagewire_decoder_init: release it with pagewire_decoder_deinit",
    ];
    fn common(&self) -> &Common {
        &self.common
    }
}

const _: () = assert!(align_of::<DecoderSlot>() <= crate::place::ALLOC_ALIGN);

fn slot(p: *mut pagewire_decoder) -> *mut DecoderSlot {
    p.cast()
}

/// How a decoder learns its configuration.
#[derive(Clone, Copy)]
enum Start<'i> {
    Config(Config),
    /// From the stream header at the front of the input.
    Header(&'i [u8]),
}

impl Start<'_> {
    fn config(&self) -> Res<Config> {
        match *self {
            Start::Config(c) => Ok(c),
            Start::Header(h) => Ok(Config::from_header(h)?),
        }
    }
}

/// Builds a decoder in `len` bytes at `mem`; returns the handle and the input consumed.
///
/// # Safety
/// `mem` is valid for `len` bytes, used by nothing else until the decoder is released.
unsafe fn build(
    start: Start<'_>,
    mem: NonNull<u8>,
    len: usize,
    allocated: usize,
) -> Res<(*mut DecoderSlot, usize)> {
    let cfg = start.config()?;
    let needed = sizes_of(&cfg).decoder_storage;
    let short = || Fail::from(Error::InsufficientStorage { needed, given: len });
    if len < needed {
        return Err(short());
    }
    // SAFETY: forwarded contract.
    let c = unsafe { carve::<DecoderSlot>(mem, len) }.ok_or_else(short)?;
    let (inner, used) = match start {
        Start::Config(cfg) => (Decoder::new(cfg, c.rest)?, 0),
        Start::Header(h) => Decoder::from_header(h, c.rest)?,
    };
    let h = c.place.fill(DecoderSlot {
        common: Common::new(DecoderSlot::MAGIC, allocated),
        failed: false,
        inner,
    });
    Ok((h, used))
}

/// `build` in caller memory.
///
/// # Safety
/// Pointer rules for `storage`.
unsafe fn init(
    start: Start<'_>,
    storage: *mut c_void,
    len: usize,
) -> Res<(*mut DecoderSlot, usize)> {
    let mem = NonNull::new(storage.cast::<u8>()).ok_or_else(|| Fail::null("storage"))?;
    // SAFETY: pointer rules: `len` bytes at `storage` belong to the decoder until released.
    unsafe { build(start, mem, len, 0) }
}

/// `build` in a fresh allocation.
fn new(start: Start<'_>) -> Res<(*mut DecoderSlot, usize)> {
    let len = sizes_of(&start.config()?).decoder_storage;
    let mem = allocate(len)?;
    // SAFETY: a fresh allocation of `len` bytes, owned by the decoder from here on.
    unsafe { build(start, mem, len, len) }.inspect_err(|_| {
        // SAFETY: nothing was built in it.
        unsafe { deallocate(mem, len) }
    })
}

/// Builds a decoder for `*cfg` in `storage_len` bytes at `storage` (any alignment; at least
/// `pagewire_sizes.decoder_storage` bytes) and writes its handle to `*out`. Most callers
/// learn the configuration from the stream instead: `pagewire_decoder_init_from_header`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_init(
    cfg: *const pagewire_config,
    storage: *mut c_void,
    storage_len: usize,
    out: *mut *mut pagewire_decoder,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        // SAFETY: pointer rules for `storage`.
        let (h, _) = unsafe { init(Start::Config(cfg.to_codec()?), storage, storage_len)? };
        out.write(h.cast());
        Ok(())
    })
}

/// Parses the stream header at the front of `input` and builds a decoder for the
/// configuration it carries in `storage` (size it first with `pagewire_config_from_header`
/// and `pagewire_config_sizes`). Writes the handle to `*out` and the header bytes consumed
/// (`PAGEWIRE_HEADER_LEN`) to `*consumed`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_init_from_header(
    input: *const u8,
    input_len: usize,
    storage: *mut c_void,
    storage_len: usize,
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
        // SAFETY: pointer rules for `storage`.
        let (h, used) = unsafe { init(Start::Header(input), storage, storage_len)? };
        out.write(h.cast());
        consumed.write(used);
        Ok(())
    })
}

/// Like `pagewire_decoder_init`, with memory from the allocator. Release with
/// `pagewire_decoder_free`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_new(
    cfg: *const pagewire_config,
    out: *mut *mut pagewire_decoder,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        let (h, _) = new(Start::Config(cfg.to_codec()?))?;
        out.write(h.cast());
        Ok(())
    })
}

/// Like `pagewire_decoder_init_from_header`, with memory from the allocator. Release with
/// `pagewire_decoder_free`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_new_from_header(
    input: *const u8,
    input_len: usize,
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
        let (h, used) = new(Start::Header(input))?;
        out.write(h.cast());
        consumed.write(used);
        Ok(())
    })
}

/// Releases a decoder made by `pagewire_decoder_init*`; its memory is the caller's again.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_deinit(dec: *mut pagewire_decoder) -> pagewire_result {
    // SAFETY: pointer rules: `dec` is a handle from this library; not used after success.
    guard(|| unsafe { release(slot(dec), "dec", false) })
}

/// Releases a decoder made by `pagewire_decoder_new*` and frees its memory. NULL is
/// accepted and ignored.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_free(dec: *mut pagewire_decoder) -> pagewire_result {
    guard(|| {
        if dec.is_null() {
            return Ok(());
        }
        // SAFETY: pointer rules: `dec` is a handle from this library; not used after success.
        unsafe { release(slot(dec), "dec", true) }
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

/// Decodes one frame of exactly `frame.len()` bytes; returns the pages delivered.
fn one_frame(s: &mut DecoderSlot, frame: &[u8], events: &mut Events<'_>) -> Res<usize> {
    if s.failed {
        return Err(Error::Finished.into());
    }
    let pages = s.inner.decode_frame(frame, events)?;
    if let Some(fail) = events.stopped {
        s.failed = true;
        return Err(fail);
    }
    Ok(pages)
}

/// Decodes every complete frame at the front of `input`; returns the bytes consumed.
fn frames(s: &mut DecoderSlot, input: &[u8], events: &mut Events<'_>) -> Res<usize> {
    let mut pos = 0;
    while input.len() - pos >= FRAME_HEADER_LEN && !s.failed {
        let rest = &input[pos..];
        let len = s.inner.frame_len(rest).inspect_err(|_| s.failed = true)?;
        if rest.len() < len {
            break;
        }
        one_frame(s, &rest[..len], events)?;
        pos += len;
    }
    if s.failed {
        return Err(Error::Finished.into());
    }
    Ok(pos)
}

/// Where a decode call delivers pages besides the callbacks.
#[derive(Clone, Copy)]
enum Target {
    Callbacks,
    Regions(*const pagewire_ram_region, usize),
    Table(*const *mut u8, usize),
}

/// Checks the arguments common to the decode functions and runs them.
///
/// # Safety
/// The pointer rules at the top of this header.
unsafe fn decode_call(
    dec: *mut pagewire_decoder,
    input: *const u8,
    input_len: usize,
    sink: *const pagewire_sink,
    target: Target,
    one: bool,
    result: *mut usize,
) -> Res {
    // SAFETY: pointer rules: `input_len` readable bytes at `input`; `sink` NULL or readable;
    // `result` writable.
    let (input, result) = unsafe {
        (
            bytes(input, input_len, "input")?,
            Out::new(result, "result")?,
        )
    };
    let sink = match target {
        // SAFETY: as above (a required sink for the callback variants).
        Target::Callbacks => Some(unsafe { arg(sink, "sink")? }),
        // SAFETY: as above (optional events for the RAM variants).
        _ => unsafe { opt_arg(sink, "events")? },
    };
    let places = match target {
        Target::Callbacks => None,
        // SAFETY: pointer rules: `n` regions at `p`.
        Target::Regions(p, n) => Some(Ok(unsafe { items(p, n, "regions")? })),
        // SAFETY: pointer rules: `n` page pointers at `p`.
        Target::Table(p, n) => Some(Err(unsafe { items(p, n, "page_table")? })),
    };
    // SAFETY: pointer rules: `dec` is a live handle used by this thread alone.
    unsafe {
        with_slot(slot(dec), "dec", |s| {
            let page_size = s.inner.config().page_size as usize;
            let ram = match places {
                None => None,
                Some(Ok(regions)) => Some(Ram::regions(regions, page_size)?),
                Some(Err(table)) => Some(Ram::table(table, page_size)),
            };
            let mut events = Events::new(sink, ram);
            let n = if one {
                one_frame(s, input, &mut events)?
            } else {
                frames(s, input, &mut events)?
            };
            result.write(n);
            Ok(())
        })
    }
}

/// Decodes exactly one frame (`frame_len` bytes, as `pagewire_decoder_frame_len` said) and
/// delivers its pages, iteration ends, blobs and end of stream to `*sink`. The frame is
/// checked completely (CRC, every record) before anything is delivered; any error is final
/// for the stream. Writes the number of pages delivered to `*pages`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode_frame(
    dec: *mut pagewire_decoder,
    frame: *const u8,
    frame_len: usize,
    sink: *const pagewire_sink,
    pages: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe { decode_call(dec, frame, frame_len, sink, Target::Callbacks, true, pages) })
}

/// Decodes every complete frame at the front of `input` (stream bytes after the header),
/// delivering to `*sink` as `pagewire_decoder_decode_frame` does, and writes the bytes
/// consumed to `*consumed`; a partial frame at the end is left for the next call.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode(
    dec: *mut pagewire_decoder,
    input: *const u8,
    input_len: usize,
    sink: *const pagewire_sink,
    consumed: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        decode_call(
            dec,
            input,
            input_len,
            sink,
            Target::Callbacks,
            false,
            consumed,
        )
    })
}

/// Decodes exactly one frame, writing each page straight into guest RAM: page `pfn` goes
/// to the region of `regions[0 .. region_count)` that holds it. `events` may be NULL; if
/// not, its callbacks get iteration ends, blobs and the end of stream, and its `page`
/// callback (if set) runs after each page has been stored. A page in no region stops
/// delivery with `PAGEWIRE_PFN_OUT_OF_RANGE` (final, like a callback failure). Writes the
/// number of pages stored to `*pages`.
///
/// # Safety
/// The pointer rules at the top of this header; each region's `host` has
/// `page_count * page_size` writable bytes that overlap no other buffer of the call and no
/// decoder storage.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode_frame_to_ram(
    dec: *mut pagewire_decoder,
    frame: *const u8,
    frame_len: usize,
    regions: *const pagewire_ram_region,
    region_count: usize,
    events: *const pagewire_sink,
    pages: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        decode_call(
            dec,
            frame,
            frame_len,
            events,
            Target::Regions(regions, region_count),
            true,
            pages,
        )
    })
}

/// `pagewire_decoder_decode` into guest RAM, as `pagewire_decoder_decode_frame_to_ram`
/// does; writes the bytes consumed to `*consumed`.
///
/// # Safety
/// As for `pagewire_decoder_decode_frame_to_ram`.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode_to_ram(
    dec: *mut pagewire_decoder,
    input: *const u8,
    input_len: usize,
    regions: *const pagewire_ram_region,
    region_count: usize,
    events: *const pagewire_sink,
    consumed: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        decode_call(
            dec,
            input,
            input_len,
            events,
            Target::Regions(regions, region_count),
            false,
            consumed,
        )
    })
}

/// Decodes exactly one frame, writing page `pfn` to `page_table[pfn]`: a page table of
/// `table_len` host pointers indexed by pfn, for guest memory mapped page by page (Xen's
/// foreign mappings, or any scattered layout). A pfn at or past `table_len`, or whose entry
/// is NULL, stops delivery with `PAGEWIRE_PFN_OUT_OF_RANGE`. Otherwise as
/// `pagewire_decoder_decode_frame_to_ram`.
///
/// # Safety
/// The pointer rules at the top of this header; each non-NULL entry points to `page_size`
/// writable bytes that overlap no other buffer of the call and no decoder storage.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode_frame_to_page_table(
    dec: *mut pagewire_decoder,
    frame: *const u8,
    frame_len: usize,
    page_table: *const *mut u8,
    table_len: usize,
    events: *const pagewire_sink,
    pages: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        decode_call(
            dec,
            frame,
            frame_len,
            events,
            Target::Table(page_table, table_len),
            true,
            pages,
        )
    })
}

/// `pagewire_decoder_decode` through a page table, as
/// `pagewire_decoder_decode_frame_to_page_table` does; writes the bytes consumed to
/// `*consumed`.
///
/// # Safety
/// As for `pagewire_decoder_decode_frame_to_page_table`.
#[no_mangle]
pub unsafe extern "C" fn pagewire_decoder_decode_to_page_table(
    dec: *mut pagewire_decoder,
    input: *const u8,
    input_len: usize,
    page_table: *const *mut u8,
    table_len: usize,
    events: *const pagewire_sink,
    consumed: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        decode_call(
            dec,
            input,
            input_len,
            events,
            Target::Table(page_table, table_len),
            false,
            consumed,
        )
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
