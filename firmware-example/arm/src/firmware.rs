//! Entry point, static buffers and output of the Arm image.

use core::sync::atomic::AtomicU32;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use pagewire_fw_core::selftest::{self, CONFIG, REGION_WORDS};

/// Encoder storage for the self-test configuration: the 256 KiB cache and its indexes, the
/// 8 KiB frame body and two pages of scratch.
const STORAGE_LEN: usize = CONFIG.encoder_storage_len();
/// The device's copy of the page being encoded.
const PAGE_LEN: usize = CONFIG.page_size as usize;
/// The encoder's output buffer: one worst-case chunk.
const OUT_LEN: usize = CONFIG.max_output_len();

static mut STORAGE: [u8; STORAGE_LEN] = [0; STORAGE_LEN];
static mut PAGE: [u8; PAGE_LEN] = [0; PAGE_LEN];
static mut OUT: [u8; OUT_LEN] = [0; OUT_LEN];
/// The shared region. On a NIC it is host memory behind the bus; here it is our own RAM and
/// the self-test plays the host.
static REGION: [AtomicU32; REGION_WORDS] = [const { AtomicU32::new(0) }; REGION_WORDS];
/// The self-test's (host side) page buffer.
static mut SCRATCH: [u8; PAGE_LEN] = [0; PAGE_LEN];

#[entry]
fn main() -> ! {
    crate::stack::paint();
    // SAFETY: `main` runs once, on the only core, with interrupts unused; these are the only
    // references to the four buffers for the life of the program.
    let (storage, page, out, scratch) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(STORAGE),
            &mut *core::ptr::addr_of_mut!(PAGE),
            &mut *core::ptr::addr_of_mut!(OUT),
            &mut *core::ptr::addr_of_mut!(SCRATCH),
        )
    };
    let result = selftest::run(&REGION, storage, page, out, scratch);
    let stack = crate::stack::max_used();
    match result {
        Ok(d) => {
            hprintln!(
                "pagewire-fw-arm: digest crc32c={:08x} bytes={} pages={} frames={}",
                d.crc32c,
                d.bytes,
                d.pages,
                d.frames
            );
            hprintln!("pagewire-fw-arm: stack_max_bytes={}", stack);
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(e) => {
            hprintln!("pagewire-fw-arm: self-test failed: {}", e);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("pagewire-fw-arm: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
