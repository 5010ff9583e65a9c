//! The C side, driven from `cargo test`: the C tests against the static and the shared
//! library (plain and under ASan/UBSan), the ABI layout seen from C, the header in C++,
//! the example program, and `install.sh` into a fresh prefix.

mod common;

use std::collections::BTreeSet;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use common::*;
use pagewire_ffi::defines::PAGEWIRE_ABI_VERSION;
use pagewire_ffi::*;

/// Compiles `c/test_pagewire.c` against `prefix`, runs it, and checks its closing line.
fn run_c_tests(prefix: &Path, link: Link, extra: &[&str], env: &[(&str, &str)], tag: &str) {
    let dir = scratch(&format!("c-tests-{tag}"));
    let exe = dir.join("test_pagewire");
    compile(
        prefix,
        &[&ffi_dir().join("c/test_pagewire.c")],
        &exe,
        link,
        extra,
    );
    if matches!(link, Link::Shared) {
        assert_needs_soname(&exe);
    }
    let out = checked(Command::new(&exe).envs(env.iter().copied()), tag);
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    let last = stdout.lines().last().unwrap_or("");
    let (passed, failed) = last
        .split_once(" passed, ")
        .and_then(|(p, f)| Some((p.parse::<u32>().ok()?, f.strip_suffix(" failed")?)))
        .unwrap_or_else(|| panic!("no closing line in:\n{stdout}"));
    assert_eq!(failed, "0", "{tag}: {last}");
    assert!(passed >= 10, "{tag}: only {passed} C tests ran");
    assert!(
        out.stderr.is_empty(),
        "{tag}: the C tests wrote to stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A program linked against the shared library records the versioned SONAME.
fn assert_needs_soname(exe: &Path) {
    if !have("readelf") {
        println!("SKIPPED: SONAME check: readelf not found");
        return;
    }
    let out = checked(Command::new("readelf").arg("-d").arg(exe), "readelf");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let want = format!("[libpagewire.so.{PAGEWIRE_ABI_VERSION}]");
    assert!(
        dynamic
            .lines()
            .any(|l| l.contains("NEEDED") && l.contains(&want)),
        "{} does not need {want}:\n{dynamic}",
        exe.display()
    );
}

#[test]
fn c_tests_against_the_static_library() {
    run_c_tests(dev_prefix(), Link::Static, &[], &[], "static");
}

#[test]
fn c_tests_against_the_shared_library() {
    run_c_tests(dev_prefix(), Link::Shared, &[], &[], "shared");
}

#[test]
fn c_tests_under_address_and_undefined_behavior_sanitizers() {
    let flags = match sanitizer_support() {
        Ok(flags) => flags,
        Err(why) => {
            println!("SKIPPED: C tests under ASan/UBSan: {why}");
            return;
        }
    };
    let env = sanitizer_env();
    println!("sanitizer options: {env:?}");
    run_c_tests(dev_prefix(), Link::Static, &flags, &env, "asan-static");
    run_c_tests(dev_prefix(), Link::Shared, &flags, &env, "asan-shared");
}

macro_rules! ty {
    ($v:ident, $t:ty) => {
        $v.push(format!(
            "{} {} {}",
            stringify!($t),
            size_of::<$t>(),
            align_of::<$t>()
        ))
    };
}

macro_rules! field {
    ($v:ident, $t:ident, $($f:ident),+) => {
        $( $v.push(format!("{}.{} {}", stringify!($t), stringify!($f), offset_of!($t, $f))); )+
    };
}

/// Rust's view of every public type, and the Rust spelling of the header's `_BOUND`
/// macros, in the format of `c/abi_layout.c`.
fn rust_layout() -> Vec<String> {
    let mut v = Vec::new();
    ty!(v, pagewire_result);
    ty!(v, pagewire_decision);
    ty!(v, pagewire_group_decision);
    ty!(v, pagewire_destination_kind);
    ty!(v, pagewire_config);
    field!(
        v,
        pagewire_config,
        page_size,
        cache_pages,
        delta_threshold,
        frame_bytes,
        stream_id,
        blocks_per_page,
        lz4,
        reserved
    );
    ty!(v, pagewire_sizes);
    field!(
        v,
        pagewire_sizes,
        encoder_storage,
        decoder_storage,
        max_output,
        max_frame,
        max_blob
    );
    ty!(v, pagewire_page_in);
    field!(v, pagewire_page_in, pfn, data);
    ty!(v, pagewire_sink);
    field!(
        v,
        pagewire_sink,
        user,
        page,
        iteration_end,
        blob,
        end_of_stream
    );
    ty!(v, pagewire_ram_region);
    field!(v, pagewire_ram_region, first_pfn, page_count, host);
    ty!(v, pagewire_destination);
    field!(
        v,
        pagewire_destination,
        kind,
        reserved,
        regions,
        region_count,
        page_table,
        page_table_len,
        events
    );
    ty!(v, pagewire_kind_stats);
    field!(v, pagewire_kind_stats, pages, bytes);
    ty!(v, pagewire_encoder_stats);
    field!(
        v,
        pagewire_encoder_stats,
        zero,
        dup,
        raw,
        delta,
        blocks,
        block_zero,
        block_ref,
        block_literal,
        block_delta,
        cache_hits,
        delta_uses,
        bytes_in,
        bytes_out,
        frames,
        frames_lz4,
        blobs,
        blob_bytes,
        iterations,
        pages
    );
    ty!(v, pagewire_decoder_stats);
    field!(
        v,
        pagewire_decoder_stats,
        pages,
        frames,
        bytes_in,
        blobs,
        iterations
    );
    ty!(v, pagewire_iteration_report);
    field!(
        v,
        pagewire_iteration_report,
        iteration,
        reserved,
        pages_sent,
        pages_dirtied,
        pages_remaining,
        bytes_sent,
        elapsed_us,
        bandwidth_bytes_per_s
    );
    ty!(v, pagewire_policy);
    ty!(v, pagewire_group);
    for [ps, bpp, cp, fb] in [
        [4096, 1, 1, 4128],
        [4096, 4, 16384, 65536],
        [8192, 2, 1000, 40000],
        [16384, 8, 99999, 16416],
        [65536, 8, 1 << 26, 1 << 24],
    ] {
        v.push(format!(
            "bounds {ps} {bpp} {cp} {fb}: {} {} {} {}",
            sizes::encoder_storage_bound(ps, bpp, cp, fb),
            sizes::decoder_storage_bound(ps, cp, fb),
            sizes::decoder_in_place_storage_bound(ps, cp, fb),
            sizes::max_output_bound(fb)
        ));
    }
    v
}

#[test]
fn abi_layout_seen_from_c_matches_rust() {
    let dir = scratch("abi");
    let exe = dir.join("abi_layout");
    compile(
        dev_prefix(),
        &[&ffi_dir().join("c/abi_layout.c")],
        &exe,
        Link::Static,
        &[],
    );
    let out = checked(&mut Command::new(&exe), "abi_layout");
    let c: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let rust = rust_layout();
    assert_eq!(
        c, rust,
        "sizes/alignments/offsets or the storage bounds differ between C and Rust"
    );
    assert_eq!(
        c.iter().collect::<BTreeSet<_>>().len(),
        c.len(),
        "duplicate lines"
    );
}

#[test]
fn public_structs_have_the_documented_sizes() {
    // The sizes the header states; changing one is an ABI break (bump PAGEWIRE_ABI_VERSION).
    assert_eq!(size_of::<pagewire_result>(), 4);
    assert_eq!(size_of::<pagewire_config>(), 24);
    assert_eq!(size_of::<pagewire_sizes>(), 5 * size_of::<usize>());
    assert_eq!(size_of::<pagewire_page_in>(), 8 + size_of::<usize>());
    assert_eq!(size_of::<pagewire_sink>(), 5 * size_of::<usize>());
    assert_eq!(size_of::<pagewire_ram_region>(), 16 + size_of::<usize>());
    assert_eq!(size_of::<pagewire_destination_kind>(), 4);
    assert_eq!(
        size_of::<pagewire_destination>(),
        8 + 9 * size_of::<usize>()
    );
    assert_eq!(size_of::<pagewire_kind_stats>(), 16);
    assert_eq!(size_of::<pagewire_encoder_stats>(), 192);
    assert_eq!(size_of::<pagewire_decoder_stats>(), 40);
    assert_eq!(size_of::<pagewire_iteration_report>(), 56);
    assert_eq!(size_of::<pagewire_policy>(), 256);
    assert_eq!(size_of::<pagewire_group>(), 512);
}

#[test]
fn header_compiles_and_links_as_cxx() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if !have(&cxx) {
        println!("SKIPPED: C++ check of pagewire.h: {cxx} not found");
        return;
    }
    let dir = scratch("cxx");
    let src = dir.join("main.cpp");
    std::fs::write(
        &src,
        "#include <pagewire.h>\n#include <cstring>\n\
         int main() {\n  pagewire_config c;\n  if (pagewire_config_default(&c) != PAGEWIRE_OK) return 1;\n\
         pagewire_result r = PAGEWIRE_CRC_MISMATCH;\n\
         return std::strcmp(pagewire_result_name(r), \"PAGEWIRE_CRC_MISMATCH\") != 0;\n}\n",
    )
    .unwrap();
    let exe = dir.join("main");
    let prefix = dev_prefix();
    checked(
        Command::new(&cxx)
            .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(prefix.join("lib/libpagewire.a"))
            .args(static_link_flags()),
        "c++ build",
    );
    checked(&mut Command::new(&exe), "c++ program");
}

/// Compile flags for the installed library: from pkg-config where it exists (the way the
/// README shows), else spelled out.
fn example_flags(prefix: &Path) -> Vec<String> {
    let lib = prefix.join("lib");
    let mut flags = if have("pkg-config") {
        let out = checked(
            Command::new("pkg-config")
                .args(["--cflags", "--libs", "pagewire"])
                .env("PKG_CONFIG_PATH", lib.join("pkgconfig")),
            "pkg-config",
        );
        let flags: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        println!("pkg-config --cflags --libs pagewire: {}", flags.join(" "));
        assert!(flags.contains(&format!("-I{}", prefix.join("include").display())));
        assert!(flags.contains(&format!("-L{}", lib.display())));
        assert!(flags.contains(&"-lpagewire".to_string()));
        flags
    } else {
        println!("SKIPPED: pkg-config not found; building the example with explicit flags");
        let mut flags = vec![
            format!("-I{}", prefix.join("include").display()),
            format!("-L{}", lib.display()),
            "-lpagewire".into(),
        ];
        flags.extend(feature_cflags(prefix));
        flags
    };
    flags.push(format!("-Wl,-rpath,{}", lib.display()));
    flags
}

fn build_and_run_example(prefix: &Path, tag: &str) {
    let dir = scratch(tag);
    let exe = dir.join("migrate");
    checked(
        Command::new(cc())
            .args(WARNINGS)
            .arg(ffi_dir().join("examples/migrate.c"))
            .arg("-o")
            .arg(&exe)
            .args(example_flags(prefix)),
        "build examples/migrate.c",
    );
    assert_needs_soname(&exe);
    for policy in ["smart-stop", "xen-classic", "xen-today", "downtime"] {
        let out = checked(Command::new(&exe).args(["8", policy]), "examples/migrate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(stdout.contains("destination: RAM equals source RAM (2048 pages)"));
        assert!(stdout.contains("vCPU state received"));
        assert!(stdout.contains("stop and copy"));
        assert!(stdout.trim_end().ends_with("migration verified"));
    }
    // through zstd where the library has it; a clear refusal where it has not
    let with_zstd = feature_cflags(prefix)
        .iter()
        .any(|f| f == "-DPAGEWIRE_ZSTD");
    for level in ["zstd", "zstd:-1"] {
        let out = Command::new(&exe)
            .args(["8", "smart-stop", level])
            .output()
            .expect("run examples/migrate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if with_zstd {
            assert!(out.status.success(), "{level}: {stdout}{stderr}");
            assert!(stdout.contains("destination: RAM equals source RAM (2048 pages)"));
            assert!(stdout.contains("bytes on the link (zstd)"), "{stdout}");
            assert_eq!(stdout.matches("libpagewire ").count(), 1, "{stdout}");
            assert!(stdout.trim_end().ends_with("migration verified"));
        } else {
            assert_eq!(out.status.code(), Some(2), "{level}: {stdout}{stderr}");
            assert!(stderr.contains("built without zstd"), "{stderr}");
        }
    }
}

#[test]
fn example_migration_builds_and_verifies() {
    build_and_run_example(dev_prefix(), "example-dev");
}

#[test]
fn install_sh_installs_lib_header_and_pkg_config_into_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    install(&prefix, "release");
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let abi = PAGEWIRE_ABI_VERSION;
    for f in [
        "lib/libpagewire.a",
        "include/pagewire.h",
        "lib/pkgconfig/pagewire.pc",
    ] {
        assert!(prefix.join(f).is_file(), "{f} missing");
    }
    let real = format!("libpagewire.so.{version}");
    assert!(lib.join(&real).is_file());
    let link = |name: &str| std::fs::read_link(lib.join(name)).unwrap();
    assert_eq!(link(&format!("libpagewire.so.{abi}")), Path::new(&real));
    assert_eq!(
        link("libpagewire.so"),
        Path::new(&format!("libpagewire.so.{abi}"))
    );
    assert_eq!(
        std::fs::read(prefix.join("include/pagewire.h")).unwrap(),
        std::fs::read(ffi_dir().join("include/pagewire.h")).unwrap()
    );
    let pc = std::fs::read_to_string(lib.join("pkgconfig/pagewire.pc")).unwrap();
    assert!(
        pc.contains(&format!("prefix={}\n", prefix.display())),
        "{pc}"
    );
    assert!(pc.contains(&format!("Version: {version}\n")), "{pc}");
    if have("readelf") {
        let out = checked(
            Command::new("readelf").arg("-d").arg(lib.join(&real)),
            "readelf",
        );
        let dynamic = String::from_utf8_lossy(&out.stdout);
        assert!(
            dynamic.contains(&format!("Library soname: [libpagewire.so.{abi}]")),
            "{dynamic}"
        );
    } else {
        println!("SKIPPED: SONAME check: readelf not found");
    }
    // the installed library, through pkg-config where it exists
    build_and_run_example(&prefix, "example-release");

    // a staged install: files under DESTDIR, paths in pagewire.pc without it
    let stage = tmp.path().join("stage");
    checked(
        Command::new("bash")
            .arg(ffi_dir().join("install.sh"))
            .arg("/opt/pagewire")
            .env("DESTDIR", &stage)
            .env("PAGEWIRE_PROFILE", "release")
            .env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", target_dir()),
        "install.sh with DESTDIR",
    );
    let staged = stage.join("opt/pagewire");
    assert!(staged.join("lib/libpagewire.a").is_file());
    assert!(staged.join("include/pagewire.h").is_file());
    let pc = std::fs::read_to_string(staged.join("lib/pkgconfig/pagewire.pc")).unwrap();
    assert!(pc.starts_with("prefix=/opt/pagewire\n"), "{pc}");
}

/// The functions `pagewire.h` declares.
fn header_functions() -> BTreeSet<String> {
    let header = std::fs::read_to_string(ffi_dir().join("include/pagewire.h")).unwrap();
    header
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("typedef") && !l.starts_with('*') && !l.starts_with('/'))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let before = &l[..l.find('(')?];
            let name = before.split_whitespace().last()?.trim_start_matches('*');
            name.starts_with("pagewire_").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn shared_library_exports_exactly_the_header_functions() {
    if !have("nm") {
        println!("SKIPPED: export check: nm not found");
        return;
    }
    let so = dev_prefix().join(format!("lib/libpagewire.so.{}", env!("CARGO_PKG_VERSION")));
    let out = checked(
        Command::new("nm").args(["-D", "--defined-only"]).arg(&so),
        "nm",
    );
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    let declared = header_functions();
    assert!(declared.len() >= 40, "parsed only {declared:?}");
    assert_eq!(
        exported, declared,
        "the shared library must export exactly the functions of pagewire.h"
    );
}
