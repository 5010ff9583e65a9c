//! The built-in page set: the self-test through the rings, the Arm image under QEMU and the
//! in-process encoder of the host library must all produce the same stream.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use pagewire::Encoder;
use pagewire_fw_core::pageset::{self, Op};
use pagewire_fw_core::selftest::{self, CONFIG, REGION_WORDS};

/// The stream the host library's encoder writes for the page set, in one process, and the
/// encoder's counters.
fn in_process() -> (Vec<u8>, pagewire::EncoderStats) {
    let mut mem = vec![0u8; CONFIG.encoder_storage_len()];
    let mut out = vec![0u8; CONFIG.max_output_len()];
    let mut enc = Encoder::new(CONFIG, &mut mem).unwrap();
    let mut page = vec![0u8; pageset::PAGE_SIZE];
    let mut wire = Vec::new();
    let mut i = 0;
    while let Some(op) = pageset::op(i) {
        let n = match op {
            Op::Page { pfn, pass } => {
                pageset::fill_page(pfn, pass, &mut page);
                enc.encode_page(pfn, &page, &mut out)
            }
            Op::Blob => {
                pageset::fill_blob(&mut page);
                enc.append_blob(pageset::BLOB_TAG, &page[..pageset::BLOB_LEN], &mut out)
            }
            Op::EndIteration => enc.end_iteration(&mut out),
            Op::Finish => enc.finish(&mut out),
        }
        .unwrap();
        wire.extend_from_slice(&out[..n]);
        i += 1;
    }
    (wire, *enc.stats())
}

/// The line the Arm image prints, computed by the host library.
fn expected_line() -> String {
    let (wire, stats) = in_process();
    format!(
        "digest crc32c={:08x} bytes={} pages={} frames={}",
        pagewire::crc32c(&wire),
        wire.len(),
        stats.pages(),
        stats.frames
    )
}

#[test]
fn the_page_set_exercises_every_record_kind() {
    let (wire, s) = in_process();
    for (what, n) in [
        ("zero", s.zero.pages),
        ("dup", s.dup.pages),
        ("raw", s.raw.pages),
        ("delta", s.delta.pages),
        ("blocks", s.blocks.pages),
        ("block refs", s.block_ref),
        ("LZ4 frames", s.frames_lz4),
        ("blobs", s.blobs),
    ] {
        assert!(n > 0, "no {what}: {s:?}");
    }
    assert_eq!(s.iterations, pageset::PASSES);
    assert_eq!(s.bytes_out, wire.len() as u64);
}

#[test]
fn selftest_through_the_rings_matches_the_in_process_encoder() {
    let words: Vec<AtomicU32> = (0..REGION_WORDS).map(|_| AtomicU32::new(0)).collect();
    let mut storage = vec![0u8; CONFIG.encoder_storage_len()];
    let mut page = vec![0u8; CONFIG.page_size as usize];
    let mut out = vec![0u8; CONFIG.max_output_len()];
    let mut scratch = vec![0u8; CONFIG.page_size as usize];
    let d = selftest::run(&words, &mut storage, &mut page, &mut out, &mut scratch).unwrap();
    let line = format!(
        "digest crc32c={:08x} bytes={} pages={} frames={}",
        d.crc32c, d.bytes, d.pages, d.frames
    );
    assert_eq!(line, expected_line());
}

/// The Arm image: `PAGEWIRE_FW_ARM_IMAGE`, or built here into its own target folder.
fn arm_image() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PAGEWIRE_FW_ARM_IMAGE") {
        return Ok(PathBuf::from(p));
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = ws.join("target").join("digest-test");
    let out = Command::new(env!("CARGO"))
        .current_dir(&ws)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--profile",
            "arm",
            "-p",
            "pagewire-fw-arm",
            "--target",
            "thumbv7em-none-eabihf",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "the thumbv7em-none-eabihf image does not build here (is the target installed? `rustup target add thumbv7em-none-eabihf`): {last}"
        ));
    }
    Ok(target_dir.join("thumbv7em-none-eabihf/arm/pagewire-fw-arm"))
}

#[test]
fn arm_image_under_qemu_prints_the_host_digest() {
    if Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: qemu-system-arm is not installed (Debian package qemu-system-arm)");
        return;
    }
    let image = match arm_image() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let mut child = Command::new("qemu-system-arm")
        .args([
            "-M",
            "mps2-an386",
            "-nographic",
            "-monitor",
            "none",
            "-serial",
            "none",
        ])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    // bounded: the image takes well under a second; a hung image must not hang the test
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Arm image did not finish within 120 s under QEMU");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "QEMU run failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pagewire-fw-arm: digest "))
        .map(|rest| format!("digest {rest}"))
        .unwrap_or_else(|| panic!("no digest line in: {stdout}"));
    assert_eq!(line, expected_line());
    eprintln!("Arm image under QEMU: {line} (equals the host library's)");
    if let Some(stack) = stdout.lines().find(|l| l.contains("stack_max_bytes")) {
        eprintln!("{stack}");
    }
}
