//! The C API where it takes buffers and lengths: decoder storage of any size, stream bytes
//! of any length decoded straight into guest RAM (regions or a page table) or to a
//! callback, in either decoding mode (in place, or through a cache copy), frame lengths from short buffers, and the encoder with undersized output and
//! wrong page lengths. Every call returns a result code;
//! nothing panics, and nothing is written outside the buffers handed in (ASan checks).
#![no_main]

use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::ptr;

use libfuzzer_sys::fuzz_target;
use pagewire_ffi::config::{pagewire_config_default, pagewire_config_from_header};
use pagewire_ffi::decoder::{
    pagewire_decoder_check_complete, pagewire_decoder_close, pagewire_decoder_decode,
    pagewire_decoder_frame_len, pagewire_decoder_open,
};
use pagewire_ffi::defines::PAGEWIRE_DECODE_IN_PLACE;
use pagewire_ffi::destination::pagewire_destination_kind::*;
use pagewire_ffi::encoder::{pagewire_encoder_encode_page, pagewire_encoder_init};
use pagewire_ffi::sizes::{pagewire_config_decoder_storage, pagewire_config_sizes};
use pagewire_ffi::{
    pagewire_config, pagewire_destination, pagewire_ram_region, pagewire_result, pagewire_sink,
    pagewire_sizes,
};

const RAM_PAGES: u64 = 64;

/// A page callback that reads the whole page (ASan checks the length it is given).
unsafe extern "C" fn on_page(user: *mut c_void, _pfn: u64, data: *const u8, len: usize) -> c_int {
    // SAFETY: the decoder hands a page of `len` readable bytes; `user` is a live u8.
    unsafe {
        let sum = core::slice::from_raw_parts(data, len)
            .iter()
            .fold(0u8, |a, b| a ^ b);
        *user.cast::<u8>() ^= sum;
    }
    0
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let ok = pagewire_result::PAGEWIRE_OK;
    // SAFETY (whole block): every pointer passed is either NULL on purpose or points to a
    // live buffer of at least the length passed with it.
    unsafe {
        let mut cfg = MaybeUninit::<pagewire_config>::uninit();
        if pagewire_config_from_header(input.as_ptr(), input.len(), cfg.as_mut_ptr()) == ok {
            let cfg = cfg.assume_init();
            let mut sizes = MaybeUninit::<pagewire_sizes>::uninit();
            if pagewire_config_sizes(&cfg, sizes.as_mut_ptr()) == ok {
                let sizes = sizes.assume_init();
                // the mode: in place (reads back the RAM it wrote) or a cache copy
                let flags = if sel & 0x10 != 0 {
                    PAGEWIRE_DECODE_IN_PLACE
                } else {
                    0
                };
                let mut need = 0usize;
                let sized = pagewire_config_decoder_storage(&cfg, flags, &mut need) == ok;
                assert!(sized && need <= sizes.decoder_storage);
                if need <= 32 << 20 && cfg.page_size as usize * RAM_PAGES as usize <= 4 << 20 {
                    // storage: right-sized, or cut short by the selector
                    let len = need.saturating_sub(usize::from(sel & 0x3) * 4096);
                    let mut storage = vec![0u8; len + 7];
                    let base = storage.as_mut_ptr().add(usize::from(sel >> 5));
                    let mut dec = ptr::null_mut();
                    let mut used = 0usize;
                    if pagewire_decoder_open(
                        input.as_ptr(),
                        input.len(),
                        base.cast::<c_void>(),
                        len,
                        flags,
                        &mut dec,
                        &mut used,
                    ) == ok
                    {
                        let page_size = cfg.page_size as usize;
                        let mut ram = vec![0u8; page_size * RAM_PAGES as usize];
                        let region = pagewire_ram_region {
                            first_pfn: 0,
                            page_count: RAM_PAGES,
                            host: ram.as_mut_ptr(),
                        };
                        // a page table with every other page mapped
                        let table: Vec<*mut u8> = (0..RAM_PAGES as usize)
                            .map(|i| {
                                if i % 2 == 0 {
                                    region.host.add(i * page_size)
                                } else {
                                    ptr::null_mut()
                                }
                            })
                            .collect();
                        let mut checksum = 0u8;
                        let mut dest = pagewire_destination {
                            kind: PAGEWIRE_TO_RAM_REGIONS as u32,
                            reserved: 0,
                            regions: &region,
                            region_count: 1,
                            page_table: ptr::null(),
                            page_table_len: 0,
                            events: pagewire_sink {
                                user: (&raw mut checksum).cast(),
                                page: None,
                                iteration_end: None,
                                blob: None,
                                end_of_stream: None,
                            },
                        };
                        match (sel >> 2) % 3 {
                            0 => {}
                            1 => {
                                dest.kind = PAGEWIRE_TO_PAGE_TABLE as u32;
                                (dest.regions, dest.region_count) = (ptr::null(), 0);
                                (dest.page_table, dest.page_table_len) =
                                    (table.as_ptr(), table.len());
                            }
                            _ => {
                                dest.kind = PAGEWIRE_TO_CALLBACKS as u32;
                                (dest.regions, dest.region_count) = (ptr::null(), 0);
                                dest.events.page = Some(on_page);
                            }
                        }
                        let rest = &input[used..];
                        let mut frame = 0usize;
                        let short = rest.len().min(usize::from(sel & 0x1f));
                        let _ = pagewire_decoder_frame_len(dec, rest.as_ptr(), short, &mut frame);
                        let (mut consumed, mut pages) = (0usize, 0usize);
                        let _ = pagewire_decoder_decode(
                            dec,
                            rest.as_ptr(),
                            rest.len(),
                            &dest,
                            &mut consumed,
                            &mut pages,
                        );
                        assert!(consumed <= rest.len());
                        let _ = pagewire_decoder_check_complete(dec);
                        assert_eq!(pagewire_decoder_close(dec), ok);
                    }
                }
            }
        }

        // the encoder with an output buffer of any size and pages of any length
        let mut cfg = MaybeUninit::<pagewire_config>::uninit();
        assert_eq!(pagewire_config_default(cfg.as_mut_ptr()), ok);
        let mut cfg = cfg.assume_init();
        cfg.cache_pages = 4;
        cfg.frame_bytes = 8192;
        let mut sizes = MaybeUninit::<pagewire_sizes>::uninit();
        assert_eq!(pagewire_config_sizes(&cfg, sizes.as_mut_ptr()), ok);
        let sizes = sizes.assume_init();
        let mut storage = vec![0u8; sizes.encoder_storage];
        let mut enc = ptr::null_mut();
        assert_eq!(
            pagewire_encoder_init(&cfg, storage.as_mut_ptr().cast(), storage.len(), &mut enc),
            ok
        );
        let out_len = usize::from(sel) * 64;
        let mut out = vec![0u8; out_len];
        let mut written = 0usize;
        for chunk in input.chunks(4096).take(4) {
            let mut page = vec![0u8; 4096];
            page[..chunk.len()].copy_from_slice(chunk);
            let page_len = if sel & 0x80 != 0 { chunk.len() } else { 4096 };
            let r = pagewire_encoder_encode_page(
                enc,
                1,
                page.as_ptr(),
                page_len,
                out.as_mut_ptr(),
                out_len,
                &mut written,
            );
            if r == ok {
                assert!(written <= out_len);
            }
        }
    }
});
