//! The source side: an encoder in caller memory (or allocated), fed pages one at a time or
//! in batches, writing finished stream bytes to a caller buffer.

use core::ffi::c_void;
use core::ptr::NonNull;

use pagewire::{Config, Encoder, Error};

use crate::config::pagewire_config;
use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result;
use crate::place::{
    allocate, carve, deallocate, handle_ref, overhead, release, with_slot, Common, Release, Slot,
};
use crate::ptr::{arg, bytes, bytes_mut, items, Out};
use crate::stats::pagewire_encoder_stats;

/// An encoder: the source side of one stream. Opaque; lives in the memory given to
/// `pagewire_encoder_init` (or allocated by `pagewire_encoder_new`).
///
/// Thread-safety: not thread-safe. Use it from one thread at a time (it may move between
/// threads, e.g. with a lock around it); a VMM's migration thread usually owns it alone.
pub struct pagewire_encoder {
    _opaque: [u8; 0],
}

/// One page of a batch for `pagewire_encoder_encode_pages`. 16 bytes on 64-bit targets.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewire_page_in {
    /// Guest page frame number.
    pub pfn: u64,
    /// `page_size` readable bytes: the page's current content.
    pub data: *const u8,
}

/// What a handle points to.
#[repr(C)]
pub(crate) struct EncoderSlot {
    common: Common,
    /// One page: each guest page is copied here once and the copy encoded (see
    /// [`EncoderSlot::encode_guest_page`]).
    snapshot: &'static mut [u8],
    inner: Encoder<'static>,
}

impl EncoderSlot {
    /// Encodes the page at `page`, which running vCPUs may be writing meanwhile.
    ///
    /// The codec reads a page several times (zero test, hashes, compares, delta, the copy
    /// into its cache) and relies on it not changing in between: a page that changed
    /// between the delta and the cache copy would leave the two ends' caches out of step
    /// and corrupt later pages silently. So the page is copied once into `snapshot` and the
    /// copy is encoded. A torn copy is harmless: the write that tore it also set the page's
    /// dirty bit, so the page is sent again.
    ///
    /// # Safety
    /// `page` is non-NULL and valid for reads of `page_size` bytes.
    unsafe fn encode_guest_page(
        &mut self,
        pfn: u64,
        page: *const u8,
        out: &mut [u8],
    ) -> Res<usize> {
        let ps = self.snapshot.len();
        // SAFETY: `page` has `ps` readable bytes (contract); `snapshot` is our own page and
        // cannot overlap guest memory. The source may be written concurrently by vCPUs: the
        // copy is a plain memcpy of whatever bytes are there, taken once.
        unsafe { core::ptr::copy_nonoverlapping(page, self.snapshot.as_mut_ptr(), ps) };
        Ok(self.inner.encode_page(pfn, self.snapshot, out)?)
    }
}

// SAFETY: repr(C), Common first; alignment 8 (asserted below).
unsafe impl Slot for EncoderSlot {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwENCODR");
    const WRONG_RELEASE: [&'static str; 2] = [
        "this encoder was made by pagewire_encoder_new: release it with pagewire_encoder_free",
        "this encoder was made by pagewire_encoder_init: release it with pagewire_encoder_deinit",
    ];
    fn common(&self) -> &Common {
        &self.common
    }
}

const _: () = assert!(align_of::<EncoderSlot>() <= crate::place::ALLOC_ALIGN);

fn slot(p: *mut pagewire_encoder) -> *mut EncoderSlot {
    p.cast()
}

/// Bytes a handle takes in front of the codec's storage, alignment slack included.
pub(crate) const HANDLE_LEN: usize = overhead::<EncoderSlot>();

/// Bytes an encoder for `cfg` needs (`pagewire_sizes.encoder_storage`): the handle, its
/// snapshot page, and the codec's storage.
pub(crate) const fn storage_len(cfg: &Config) -> usize {
    HANDLE_LEN + cfg.page_size as usize + cfg.encoder_storage_len()
}

/// Builds an encoder in `len` bytes at `mem`.
///
/// # Safety
/// `mem` is valid for `len` bytes, used by nothing else until the encoder is released.
unsafe fn build(
    cfg: Config,
    mem: NonNull<u8>,
    len: usize,
    allocated: usize,
) -> Res<*mut EncoderSlot> {
    let needed = storage_len(&cfg);
    if len < needed {
        return Err(Error::InsufficientStorage { needed, given: len }.into());
    }
    // SAFETY: forwarded contract.
    let carved = unsafe { carve::<EncoderSlot>(mem, len) };
    // `needed` includes the slot and its worst-case alignment padding.
    let c = carved.ok_or_else(|| Fail::from(Error::InsufficientStorage { needed, given: len }))?;
    let (snapshot, rest) = c.rest.split_at_mut(cfg.page_size as usize);
    let inner = Encoder::new(cfg, rest)?;
    Ok(c.place.fill(EncoderSlot {
        common: Common::new(EncoderSlot::MAGIC, allocated),
        snapshot,
        inner,
    }))
}

/// Builds an encoder for `*cfg` in `storage_len` bytes at `storage` (any alignment; at least
/// `pagewire_sizes.encoder_storage` bytes) and writes its handle to `*out`. The memory
/// belongs to the encoder until `pagewire_encoder_deinit`; the handle points inside it.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_init(
    cfg: *const pagewire_config,
    storage: *mut c_void,
    storage_len: usize,
    out: *mut *mut pagewire_encoder,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `cfg` readable, `out` writable, or NULL.
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        let cfg = cfg.to_codec()?;
        let mem = NonNull::new(storage.cast::<u8>()).ok_or_else(|| Fail::null("storage"))?;
        // SAFETY: pointer rules: `storage_len` bytes at `storage` belong to the encoder
        // until it is released.
        let h = unsafe { build(cfg, mem, storage_len, 0)? };
        out.write(h.cast());
        Ok(())
    })
}

/// Like `pagewire_encoder_init`, with memory from the allocator (one allocation of
/// `pagewire_sizes.encoder_storage` bytes). Release with `pagewire_encoder_free`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_new(
    cfg: *const pagewire_config,
    out: *mut *mut pagewire_encoder,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        let cfg = cfg.to_codec()?;
        let len = storage_len(&cfg);
        let mem = allocate(len)?;
        // SAFETY: a fresh allocation of `len` bytes, owned by the encoder from here on.
        match unsafe { build(cfg, mem, len, len) } {
            Ok(h) => {
                out.write(h.cast());
                Ok(())
            }
            Err(e) => {
                // SAFETY: nothing was built in it.
                unsafe { deallocate(mem, len) };
                Err(e)
            }
        }
    })
}

/// Releases an encoder made by `pagewire_encoder_init`; its memory is the caller's again.
/// An encoder made by `pagewire_encoder_new` is refused (`PAGEWIRE_INVALID_HANDLE`).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_deinit(enc: *mut pagewire_encoder) -> pagewire_result {
    // SAFETY: pointer rules: `enc` is a handle from this library; not used after success.
    guard(|| unsafe { release(slot(enc), "enc", Release::Deinit) })
}

/// Releases an encoder made by `pagewire_encoder_new` and frees its memory. NULL is
/// accepted and ignored, like `free(NULL)`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_free(enc: *mut pagewire_encoder) -> pagewire_result {
    guard(|| {
        if enc.is_null() {
            return Ok(());
        }
        // SAFETY: pointer rules: `enc` is a handle from this library; not used after success.
        unsafe { release(slot(enc), "enc", Release::Free) }
    })
}

/// Encodes page `pfn` (`page_len` must be the page size). Finished stream bytes, usually
/// none, go to the front of `out` (at least `pagewire_sizes.max_output` bytes); their count
/// goes to `*written`. Send `out[0 .. *written]` before the next call reuses `out`. The
/// page may be guest memory that running vCPUs write meanwhile: it is copied once and the
/// copy encoded (a page torn by a concurrent write is sent again after its dirty bit).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_encode_page(
    enc: *mut pagewire_encoder,
    pfn: u64,
    page: *const u8,
    page_len: usize,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> pagewire_result {
    guard(|| {
        if page.is_null() {
            return Err(Fail::null("page"));
        }
        // SAFETY: pointer rules: `out_len` writable bytes at `out`, `written` writable.
        let (out, written) = unsafe {
            (
                bytes_mut(out, out_len, "out")?,
                Out::new(written, "written")?,
            )
        };
        let work = |s: &mut EncoderSlot| -> Res {
            let expected = s.snapshot.len();
            if page_len != expected {
                return Err(Error::WrongPageLength {
                    expected,
                    got: page_len,
                }
                .into());
            }
            // SAFETY: non-NULL (checked above) with `page_len` == page size readable bytes
            // (pointer rules).
            written.write(unsafe { s.encode_guest_page(pfn, page, out)? });
            Ok(())
        };
        // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
        unsafe { with_slot(slot(enc), "enc", work) }
    })
}

/// Encodes pages of a batch in order while `out` has room for another call's worst case,
/// so that one call can write several frames. Writes how many pages it took to
/// `*pages_done` (at least 1 when `count` > 0, since `out_len` must be at least
/// `pagewire_sizes.max_output`) and the stream bytes written to the front of `out` to
/// `*written`. Call again with the rest of the batch after sending `out[0 .. *written]`.
/// Every `data` pointer is checked before anything is encoded: on `PAGEWIRE_NULL_ARGUMENT`
/// nothing was. Pages may be written by running vCPUs meanwhile, as for `encode_page`.
///
/// # Safety
/// The pointer rules at the top of this header; each `pages[i].data` has page-size
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_encode_pages(
    enc: *mut pagewire_encoder,
    pages: *const pagewire_page_in,
    count: usize,
    out: *mut u8,
    out_len: usize,
    pages_done: *mut usize,
    written: *mut usize,
) -> pagewire_result {
    let encode = |s: &mut EncoderSlot, list: &[pagewire_page_in], out: &mut [u8]| {
        let need = s.inner.config().max_output_len();
        if out.len() < need {
            return Err(Error::OutputTooSmall {
                needed: need,
                given: out.len(),
            }
            .into());
        }
        no_null_page(list)?;
        let (mut done, mut n) = (0, 0);
        for p in list {
            if out.len() - n < need {
                break;
            }
            // Only the first page can fail (a finished encoder): the checks above rule
            // out every other error, so no written bytes are lost.
            // SAFETY: non-NULL (checked above); page-size readable bytes by the pointer
            // rules.
            n += unsafe { s.encode_guest_page(p.pfn, p.data, &mut out[n..])? };
            done += 1;
        }
        Ok((done, n))
    };
    // SAFETY: forwarded pointer rules.
    guard(|| unsafe { encode_batch(enc, pages, count, out, out_len, pages_done, written, encode) })
}

/// What the two batch calls share, inside their panic boundary: their arguments checked,
/// `encode` run on the encoder with the batch and `out`, and what it returns (pages taken,
/// bytes written) stored.
///
/// # Safety
/// The pointer rules at the top of the header, for the batch calls' arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn encode_batch(
    enc: *mut pagewire_encoder,
    pages: *const pagewire_page_in,
    count: usize,
    out: *mut u8,
    out_len: usize,
    pages_done: *mut usize,
    written: *mut usize,
    encode: impl FnOnce(&mut EncoderSlot, &[pagewire_page_in], &mut [u8]) -> Res<(usize, usize)>,
) -> Res {
    // SAFETY: pointer rules: `count` entries at `pages`, `out_len` writable bytes at `out`;
    // `pages_done` and `written` writable.
    let (list, out, done_out, written_out) = unsafe {
        (
            items(pages, count, "pages")?,
            bytes_mut(out, out_len, "out")?,
            Out::new(pages_done, "pages_done")?,
            Out::new(written, "written")?,
        )
    };
    let work = |s: &mut EncoderSlot| -> Res {
        let (done, n) = encode(s, list, out)?;
        done_out.write(done);
        written_out.write(n);
        Ok(())
    };
    // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
    unsafe { with_slot(slot(enc), "enc", work) }
}

/// Refuses a batch with a NULL `data` pointer, before any of it is encoded.
fn no_null_page(list: &[pagewire_page_in]) -> Res {
    match list.iter().any(|p| p.data.is_null()) {
        true => Err(Fail::null("pages[i].data")),
        false => Ok(()),
    }
}

/// Guest pages of a `pagewire_encoder_encode_plain_pages` batch, each read once by a copy
/// into its record.
struct GuestPages<'a> {
    list: &'a [pagewire_page_in],
    page_size: usize,
}

impl pagewire::CopyPages for GuestPages<'_> {
    fn count(&self) -> usize {
        self.list.len()
    }
    fn pfn(&self, i: usize) -> u64 {
        self.list[i].pfn
    }
    fn copy_page(&mut self, i: usize, dst: &mut [u8]) {
        debug_assert_eq!(dst.len(), self.page_size);
        // SAFETY: `data` is non-NULL (checked before the encoder runs) with `page_size`
        // readable bytes (pointer rules); `dst` is the encoder's frame in `out`, which
        // cannot overlap guest memory the caller reads from. vCPUs may write the page
        // meanwhile: the copy takes whatever bytes are there, once, as
        // `encode_guest_page` does.
        unsafe {
            core::ptr::copy_nonoverlapping(self.list[i].data, dst.as_mut_ptr(), self.page_size)
        };
    }
}

/// Encodes pages of a batch as plain pages, the fast path for links where compression
/// would make the CPU the bottleneck: a ZERO record for a zero page, every other page whole
/// as a PLAIN record (no cache lookup, no delta, no LZ4), in stored frames built and sealed
/// in `out` itself. Each page is read once, by a copy straight into its record, and the copy
/// is zero-tested, so pages may be guest memory that running vCPUs write meanwhile, as for
/// `encode_page` (a page torn by a concurrent write goes out as copied and is sent again
/// after its dirty bit). `out_len` must be at least `pagewire_sizes.max_output`; every
/// further `pagewire_sizes.max_frame` of it holds another frame of pages, so a larger `out`
/// takes more pages per call. Writes how many pages it took to `*pages_done` and the stream
/// bytes written to the front of `out` to `*written`; a call may take no page when the
/// frame it had to finish first filled `out`: send `out[0 .. *written]` and call again with
/// the rest. The encoder's frame is sealed at the end of each call. Works with any LZ4
/// setting, and mixes with `encode_page`'s records in one stream. Every `data` pointer is
/// checked before anything is encoded: on `PAGEWIRE_NULL_ARGUMENT` nothing was.
///
/// # Safety
/// The pointer rules at the top of this header; each `pages[i].data` has page-size
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_encode_plain_pages(
    enc: *mut pagewire_encoder,
    pages: *const pagewire_page_in,
    count: usize,
    out: *mut u8,
    out_len: usize,
    pages_done: *mut usize,
    written: *mut usize,
) -> pagewire_result {
    let encode = |s: &mut EncoderSlot, list: &[pagewire_page_in], out: &mut [u8]| {
        no_null_page(list)?;
        let mut guest = GuestPages {
            list,
            page_size: s.snapshot.len(),
        };
        let b = s.inner.encode_plain_pages_copied(&mut guest, out)?;
        Ok((b.pages, b.written))
    };
    // SAFETY: forwarded pointer rules.
    guard(|| unsafe { encode_batch(enc, pages, count, out, out_len, pages_done, written, encode) })
}

/// Ends the current pre-copy iteration and flushes the frame, so that the destination has
/// every page of it once it has decoded these bytes. Writes to `out` as `encode_page` does.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_end_iteration(
    enc: *mut pagewire_encoder,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (out, written) = unsafe {
            (
                bytes_mut(out, out_len, "out")?,
                Out::new(written, "written")?,
            )
        };
        // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
        unsafe {
            with_slot(slot(enc), "enc", |s| {
                written.write(s.inner.end_iteration(out)?);
                Ok(())
            })
        }
    })
}

/// Appends an opaque blob (vCPU registers, device state) of at most
/// `pagewire_sizes.max_blob` bytes, tagged `tag`; the destination gets it in stream order.
/// Writes to `out` as `encode_page` does.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_append_blob(
    enc: *mut pagewire_encoder,
    tag: u32,
    data: *const u8,
    data_len: usize,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (data, out, written) = unsafe {
            (
                bytes(data, data_len, "data")?,
                bytes_mut(out, out_len, "out")?,
                Out::new(written, "written")?,
            )
        };
        // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
        unsafe {
            with_slot(slot(enc), "enc", |s| {
                written.write(s.inner.append_blob(tag, data, out)?);
                Ok(())
            })
        }
    })
}

/// Ends the stream: writes the end record and the last frame. Every later call on the
/// encoder fails with `PAGEWIRE_FINISHED`; release it when done.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_finish(
    enc: *mut pagewire_encoder,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (out, written) = unsafe {
            (
                bytes_mut(out, out_len, "out")?,
                Out::new(written, "written")?,
            )
        };
        // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
        unsafe {
            with_slot(slot(enc), "enc", |s| {
                written.write(s.inner.finish(out)?);
                Ok(())
            })
        }
    })
}

/// Turns LZ4 on the frames on or off from the next frame on (a sender whose CPU, not its
/// link, is the bottleneck moves memory faster without it; see docs/C-API.md). LZ4 can be on
/// only in a stream whose configuration has `lz4` set. Writes whether it is on now to
/// `*now` (may be NULL).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_set_lz4(
    enc: *mut pagewire_encoder,
    on: bool,
    now: *mut bool,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `now` NULL or writable.
        let now = unsafe { Out::optional(now, "now")? };
        // SAFETY: pointer rules: `enc` is a live handle used by this thread alone.
        unsafe {
            with_slot(slot(enc), "enc", |s| {
                let is_on = s.inner.set_lz4(on);
                if let Some(now) = now {
                    now.write(is_on);
                }
                Ok(())
            })
        }
    })
}

/// Writes the encoder's counters to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_get_stats(
    enc: *const pagewire_encoder,
    out: *mut pagewire_encoder_stats,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `enc` a live handle not changed meanwhile; `out` writable.
        let (s, out) = unsafe {
            (
                handle_ref::<EncoderSlot>(enc.cast(), "enc")?,
                Out::new(out, "out")?,
            )
        };
        out.write(s.inner.stats().into());
        Ok(())
    })
}

/// Writes the number of the iteration being encoded (0 for the first pass) to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_iteration(
    enc: *const pagewire_encoder,
    out: *mut u64,
) -> pagewire_result {
    guard(|| {
        // SAFETY: as for pagewire_encoder_get_stats.
        let (s, out) = unsafe {
            (
                handle_ref::<EncoderSlot>(enc.cast(), "enc")?,
                Out::new(out, "out")?,
            )
        };
        out.write(s.inner.iteration());
        Ok(())
    })
}

/// Writes the encoder's configuration to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_encoder_get_config(
    enc: *const pagewire_encoder,
    out: *mut pagewire_config,
) -> pagewire_result {
    guard(|| {
        // SAFETY: as for pagewire_encoder_get_stats.
        let (s, out) = unsafe {
            (
                handle_ref::<EncoderSlot>(enc.cast(), "enc")?,
                Out::new(out, "out")?,
            )
        };
        out.write(pagewire_config::from_codec(s.inner.config()));
        Ok(())
    })
}
