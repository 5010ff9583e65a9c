//! zstd over the stream (feature `zstd`; the header declares it under `PAGEWIRE_ZSTD`): on a
//! slow link zstd with its window across frames sends fewer bytes than the codec's LZ4 per
//! frame. The source passes the encoder's output through a `pagewire_zstd_out`, whose level
//! the caller may change between any two calls; the destination pushes what its link gave
//! into a `pagewire_zstd_in` and feeds the stream that comes out to its decoder. The chunks
//! on the link are those of the runner's `--compress zstd|auto` (`docs/C-API.md`, *zstd
//! over the stream*). Unlike the codec, these objects allocate (zstd's state and window).

use pagewire_stream_zstd::{check_level, Unchunker, ZstdOut};

use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result::{
    self, PAGEWIRE_BAD_ZSTD_STREAM, PAGEWIRE_FINISHED, PAGEWIRE_INVALID_ARGUMENT,
    PAGEWIRE_OUT_OF_MEMORY,
};
use crate::place::{allocate, carve, deallocate, release, with_slot, Common, Release, Slot};
use crate::ptr::{bytes, bytes_mut, Out};

/// The source's zstd stage. Opaque; made by `pagewire_zstd_out_new`.
///
/// Thread-safety: not thread-safe; one thread at a time.
pub struct pagewire_zstd_out {
    _opaque: [u8; 0],
}

/// The destination's zstd stage. Opaque; made by `pagewire_zstd_in_new`.
///
/// Thread-safety: not thread-safe; one thread at a time.
pub struct pagewire_zstd_in {
    _opaque: [u8; 0],
}

#[repr(C)]
struct OutSlot {
    common: Common,
    z: ZstdOut,
    /// Link bytes not yet handed out (a level change's), or handed out by the latest
    /// call and valid until the next one.
    ready: Vec<u8>,
    handed_out: bool,
    finished: bool,
}

impl OutSlot {
    /// Starts a call: bytes the caller has had are dropped, bytes it has not are kept.
    fn begin(&mut self) -> Res {
        if self.finished {
            return Err(finished());
        }
        if self.handed_out {
            self.ready.clear();
            self.handed_out = false;
        }
        Ok(())
    }
}

// SAFETY: repr(C), Common first; alignment at most ALLOC_ALIGN (asserted below).
unsafe impl Slot for OutSlot {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwZSTDOU");
    // only `_new` makes these and only `_free` releases them
    const WRONG_RELEASE: [&'static str; 2] = ["release it with pagewire_zstd_out_free"; 2];
    fn common(&self) -> &Common {
        &self.common
    }
}

#[repr(C)]
struct InSlot {
    common: Common,
    un: Unchunker,
    /// A feed failed: the stream is damaged and nothing more is taken.
    failed: bool,
}

// SAFETY: repr(C), Common first; alignment at most ALLOC_ALIGN (asserted below).
unsafe impl Slot for InSlot {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwZSTDIN");
    const WRONG_RELEASE: [&'static str; 2] = ["release it with pagewire_zstd_in_free"; 2];
    fn common(&self) -> &Common {
        &self.common
    }
}

const _: () = assert!(align_of::<OutSlot>() <= crate::place::ALLOC_ALIGN);
const _: () = assert!(align_of::<InSlot>() <= crate::place::ALLOC_ALIGN);

/// An allocation holding `state` alone; its handle.
fn allocate_slot<S: Slot>(state: impl FnOnce(usize) -> S) -> Res<*mut S> {
    let len = crate::place::overhead::<S>();
    let mem = allocate(len)?;
    // SAFETY: a fresh allocation of `len` bytes, owned by the object from here on.
    match unsafe { carve::<S>(mem, len) } {
        Some(c) => Ok(c.place.fill(state(len))),
        None => {
            // SAFETY: nothing was built in it.
            unsafe { deallocate(mem, len) };
            Err(Fail::new(PAGEWIRE_OUT_OF_MEMORY, "allocation too small"))
        }
    }
}

/// The level as the stage takes it: 0 means stored chunks.
fn level_arg(level: i32) -> Res<Option<i32>> {
    if level == 0 {
        return Ok(None);
    }
    check_level(level).map(Some).map_err(|_| {
        Fail::new(
            PAGEWIRE_INVALID_ARGUMENT,
            "zstd level out of range: 0 (stored chunks) or zstd's levels, -131072..=22",
        )
    })
}

/// zstd failed to compress (out of memory is the one way it can).
fn compress_failed(_: std::io::Error) -> Fail {
    Fail::new(
        PAGEWIRE_OUT_OF_MEMORY,
        "zstd could not compress (out of memory)",
    )
}

fn finished() -> Fail {
    Fail::new(
        PAGEWIRE_FINISHED,
        "this zstd stage is finished (pagewire_zstd_out_finish) or failed on a damaged stream",
    )
}

/// Makes a source zstd stage that compresses at `level` (zstd's levels, negative ones
/// included; 0 sends stored chunks, the stream as it is) and writes its handle to `*out`.
/// Release it with `pagewire_zstd_out_free`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_new(
    level: i32,
    out: *mut *mut pagewire_zstd_out,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let out = unsafe { Out::new(out, "out")? };
        let level = level_arg(level)?;
        let z = ZstdOut::new(level).map_err(compress_failed)?;
        let h = allocate_slot(|len| OutSlot {
            common: Common::new(OutSlot::MAGIC, len),
            z,
            ready: Vec::new(),
            handed_out: false,
            finished: false,
        })?;
        out.write(h.cast());
        Ok(())
    })
}

/// Runs `f` on the stage, then hands out what it made (and what a level change made
/// before it).
///
/// # Safety
/// The pointer rules at the top of this header.
unsafe fn out_call(
    z: *mut pagewire_zstd_out,
    link: *mut *const u8,
    link_len: *mut usize,
    f: impl FnOnce(&mut OutSlot) -> std::io::Result<()>,
) -> Res {
    // SAFETY: pointer rules.
    let (link, link_len) = unsafe { (Out::new(link, "link")?, Out::new(link_len, "link_len")?) };
    // SAFETY: pointer rules: `z` is a handle from this library, used by this call alone.
    unsafe {
        with_slot(z.cast::<OutSlot>(), "z", |s| {
            s.begin()?;
            f(s).map_err(compress_failed)?;
            link.write(s.ready.as_ptr());
            link_len.write(s.ready.len());
            s.handed_out = true;
            Ok(())
        })
    }
}

/// From the next write on, compresses at `level` (0: stored chunks). What zstd holds at the
/// old level is kept for the next write, flush or finish to hand out.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_set_level(
    z: *mut pagewire_zstd_out,
    level: i32,
) -> pagewire_result {
    guard(|| {
        let level = level_arg(level)?;
        // SAFETY: pointer rules: `z` is a handle from this library, used by this call alone.
        unsafe {
            with_slot(z.cast::<OutSlot>(), "z", |s| {
                s.begin()?;
                // any chunk this makes waits in `ready` for the next call to hand out
                s.z.set_level(&mut s.ready, level).map_err(compress_failed)
            })
        }
    })
}

/// Takes `len` stream bytes (the encoder's output). Link bytes ready to send, often none
/// while zstd gathers a chunk, are at `*link` for `*link_len` bytes, valid until the next
/// call on `z`: send them before then.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_write(
    z: *mut pagewire_zstd_out,
    stream: *const u8,
    len: usize,
    link: *mut *const u8,
    link_len: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `len` readable bytes at `stream`.
        let stream = unsafe { bytes(stream, len, "stream")? };
        // SAFETY: pointer rules.
        unsafe { out_call(z, link, link_len, |s| s.z.write(&mut s.ready, stream)) }
    })
}

/// Hands out everything written so far: once `*link` is sent, the destination can decode
/// all of it. Call it where the destination must see the stream up to here (the end of an
/// iteration, before waiting for its acknowledgement).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_flush(
    z: *mut pagewire_zstd_out,
    link: *mut *const u8,
    link_len: *mut usize,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe { out_call(z, link, link_len, |s| s.z.flush(&mut s.ready)) })
}

/// Ends the compressed stream: the rest of zstd's output and the end chunk, at `*link`.
/// Later calls other than `pagewire_zstd_out_free` return `PAGEWIRE_FINISHED`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_finish(
    z: *mut pagewire_zstd_out,
    link: *mut *const u8,
    link_len: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        unsafe {
            out_call(z, link, link_len, |s| {
                s.z.finish(&mut s.ready)?;
                s.finished = true;
                Ok(())
            })
        }
    })
}

/// Releases a source zstd stage. NULL is accepted and ignored.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_out_free(z: *mut pagewire_zstd_out) -> pagewire_result {
    guard(|| {
        if z.is_null() {
            return Ok(());
        }
        // SAFETY: pointer rules: `z` is a handle from this library; not used after success.
        unsafe { release(z.cast::<OutSlot>(), "z", Release::Free) }
    })
}

/// Makes a destination zstd stage at the start of a stream and writes its handle to
/// `*out`. Release it with `pagewire_zstd_in_free`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_in_new(out: *mut *mut pagewire_zstd_in) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let out = unsafe { Out::new(out, "out")? };
        let un = Unchunker::new()
            .map_err(|_| Fail::new(PAGEWIRE_OUT_OF_MEMORY, "zstd could not start"))?;
        let h = allocate_slot(|len| InSlot {
            common: Common::new(InSlot::MAGIC, len),
            un,
            failed: false,
        })?;
        out.write(h.cast());
        Ok(())
    })
}

/// Takes link bytes from `link` (`link_len`, any amount the link gave) and writes stream
/// bytes to `stream` (`stream_cap`), until one of the two is used up or the end of the
/// compressed stream is reached. `*consumed` link bytes were taken (call again with the
/// rest), `*produced` stream bytes written; `*ended` is true once the end chunk was read
/// and all the stream before it handed out: link bytes after it (the caller's own
/// messages) are not taken. `*wants`, if not NULL, receives the most link bytes the stage
/// can take next without reading past its current chunk, for a caller that must not read
/// the link beyond the compressed stream. A damaged stream returns
/// `PAGEWIRE_BAD_ZSTD_STREAM`, and every later feed `PAGEWIRE_FINISHED`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_in_feed(
    z: *mut pagewire_zstd_in,
    link: *const u8,
    link_len: usize,
    stream: *mut u8,
    stream_cap: usize,
    consumed: *mut usize,
    produced: *mut usize,
    ended: *mut bool,
    wants: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: `link_len` readable bytes at `link`, `stream_cap` writable
        // bytes at `stream`, outputs writable or (`wants`) NULL.
        let (link, stream, consumed, produced, ended, wants) = unsafe {
            (
                bytes(link, link_len, "link")?,
                bytes_mut(stream, stream_cap, "stream")?,
                Out::new(consumed, "consumed")?,
                Out::new(produced, "produced")?,
                Out::new(ended, "ended")?,
                Out::optional(wants, "wants")?,
            )
        };
        // SAFETY: pointer rules: `z` is a handle from this library, used by this call alone.
        unsafe {
            with_slot(z.cast::<InSlot>(), "z", |s| {
                if s.failed {
                    return Err(finished());
                }
                let p = s.un.feed(link, stream).map_err(|_| {
                    s.failed = true;
                    Fail::new(
                        PAGEWIRE_BAD_ZSTD_STREAM,
                        "damaged zstd stream: a chunk length out of range, or zstd data that does not decode",
                    )
                })?;
                consumed.write(p.consumed);
                produced.write(p.produced);
                ended.write(p.ended);
                if let Some(w) = wants {
                    w.write(s.un.wants());
                }
                Ok(())
            })
        }
    })
}

/// Releases a destination zstd stage. NULL is accepted and ignored.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_zstd_in_free(z: *mut pagewire_zstd_in) -> pagewire_result {
    guard(|| {
        if z.is_null() {
            return Ok(());
        }
        // SAFETY: pointer rules: `z` is a handle from this library; not used after success.
        unsafe { release(z.cast::<InSlot>(), "z", Release::Free) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_through_both_stages_in_small_pieces() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 5000) as u8)
            .collect();
        let mut zo = core::ptr::null_mut();
        // SAFETY: valid pointers throughout; handles used by this thread alone.
        unsafe {
            assert_eq!(
                pagewire_zstd_out_new(3, &mut zo),
                pagewire_result::PAGEWIRE_OK
            );
            let mut link = Vec::new();
            let (mut p, mut n) = (core::ptr::null(), 0usize);
            for (i, piece) in data.chunks(7000).enumerate() {
                if i == 10 {
                    assert_eq!(
                        pagewire_zstd_out_set_level(zo, 0),
                        pagewire_result::PAGEWIRE_OK
                    );
                }
                if i == 20 {
                    assert_eq!(
                        pagewire_zstd_out_set_level(zo, -3),
                        pagewire_result::PAGEWIRE_OK
                    );
                }
                let r = pagewire_zstd_out_write(zo, piece.as_ptr(), piece.len(), &mut p, &mut n);
                assert_eq!(r, pagewire_result::PAGEWIRE_OK);
                link.extend_from_slice(std::slice::from_raw_parts(p, n));
            }
            assert_eq!(
                pagewire_zstd_out_finish(zo, &mut p, &mut n),
                pagewire_result::PAGEWIRE_OK
            );
            link.extend_from_slice(std::slice::from_raw_parts(p, n));
            let end = link.len();
            link.extend_from_slice(b"after");
            assert_eq!(
                pagewire_zstd_out_write(zo, data.as_ptr(), 1, &mut p, &mut n),
                PAGEWIRE_FINISHED
            );
            assert_eq!(
                pagewire_zstd_out_set_level(zo, 99),
                PAGEWIRE_INVALID_ARGUMENT
            );
            assert_eq!(pagewire_zstd_out_free(zo), pagewire_result::PAGEWIRE_OK);

            let mut zi = core::ptr::null_mut();
            assert_eq!(pagewire_zstd_in_new(&mut zi), pagewire_result::PAGEWIRE_OK);
            let mut back = Vec::new();
            let mut buf = [0u8; 999];
            let mut at = 0;
            loop {
                let (mut c, mut pr, mut e) = (0usize, 0usize, false);
                let chunk_end = (at + 1234).min(link.len());
                let r = pagewire_zstd_in_feed(
                    zi,
                    link[at..].as_ptr(),
                    chunk_end - at,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut c,
                    &mut pr,
                    &mut e,
                    core::ptr::null_mut(),
                );
                assert_eq!(r, pagewire_result::PAGEWIRE_OK);
                at += c;
                back.extend_from_slice(&buf[..pr]);
                if e {
                    break;
                }
            }
            assert!(back == data);
            assert_eq!(at, end, "nothing after the end chunk was taken");
            assert_eq!(pagewire_zstd_in_free(zi), pagewire_result::PAGEWIRE_OK);
        }
    }
}
