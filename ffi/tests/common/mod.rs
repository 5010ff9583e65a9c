//! Shared by the C-side tests: installing the library into a prefix with `install.sh`,
//! and compiling and running C programs against it with the system compiler.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The crate directory (`ffi/`).
pub fn ffi_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory this test was built in.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_path_buf()
}

/// Runs `ffi/install.sh` into `prefix` with the given cargo profile and no features.
pub fn install(prefix: &Path, profile: &str) {
    install_with(prefix, profile, "")
}

/// Runs `ffi/install.sh` into `prefix` with the given cargo profile and features.
pub fn install_with(prefix: &Path, profile: &str, features: &str) {
    let out = Command::new("bash")
        .arg(ffi_dir().join("install.sh"))
        .arg(prefix)
        .env("PAGEWIRE_PROFILE", profile)
        .env("PAGEWIRE_FEATURES", features)
        .env("CARGO", env!("CARGO"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run install.sh");
    assert!(
        out.status.success(),
        "install.sh failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The library built with the dev profile (overflow checks on) and every feature (so the C
/// tests cover the zstd stage too), installed into a prefix under the target directory,
/// once per test binary. The release installs of the other tests build it without
/// features, as a user's plain `install.sh` does.
pub fn dev_prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pagewire-ffi-dev-prefix");
        install_with(&prefix, "dev", "zstd");
        prefix
    })
}

/// The C compiler: `$CC`, else gcc.
pub fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "gcc".into())
}

/// Whether `program` runs at all (`program --version`).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Link flags for the static library, from the `Libs.private` line of pagewire.pc.in
/// (so the .pc file and the tests cannot disagree).
pub fn static_link_flags() -> Vec<String> {
    let pc = std::fs::read_to_string(ffi_dir().join("pagewire.pc.in")).unwrap();
    pc.lines()
        .find_map(|l| l.strip_prefix("Libs.private:"))
        .expect("Libs.private in pagewire.pc.in")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Strict warnings every C file of ours must compile without.
pub const WARNINGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"];

/// How to link against the installed library.
#[derive(Clone, Copy, Debug)]
pub enum Link {
    Static,
    Shared,
}

/// Compiles `sources` into `exe` against the library in `prefix`, with `extra` flags.
pub fn compile(prefix: &Path, sources: &[&Path], exe: &Path, link: Link, extra: &[&str]) {
    let mut cmd = Command::new(cc());
    cmd.args(WARNINGS).args(extra);
    cmd.arg(format!("-I{}", prefix.join("include").display()));
    cmd.args(feature_cflags(prefix));
    cmd.args(sources).arg("-o").arg(exe);
    let lib = prefix.join("lib");
    match link {
        Link::Static => {
            cmd.arg(lib.join("libpagewire.a")).args(static_link_flags());
        }
        Link::Shared => {
            cmd.arg(format!("-L{}", lib.display()))
                .arg("-lpagewire")
                .arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    cmd.arg("-pthread");
    checked(&mut cmd, "compile");
}

/// The feature defines (`-DPAGEWIRE_ZSTD`) on the Cflags line of the prefix's pagewire.pc.
pub fn feature_cflags(prefix: &Path) -> Vec<String> {
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/pagewire.pc")).unwrap();
    pc.lines()
        .find_map(|l| l.strip_prefix("Cflags:"))
        .expect("Cflags in pagewire.pc")
        .split_whitespace()
        .filter(|f| f.starts_with("-D"))
        .map(String::from)
        .collect()
}

/// Runs `cmd`, failing the test with its output if it does not succeed.
pub fn checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A fresh scratch directory under the target directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pagewire-ffi")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The sanitizer flags of CI, or why they cannot be used here.
pub fn sanitizer_support() -> Result<Vec<&'static str>, String> {
    let flags = vec![
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-g",
    ];
    let dir = scratch("sanitizer-probe");
    let src = dir.join("probe.c");
    std::fs::write(&src, "#include <stdlib.h>\nint main(void){char*p=malloc(4);p[0]=1;int r=p[0]-1;free(p);return r;}\n").unwrap();
    let exe = dir.join("probe");
    let out = Command::new(cc())
        .args(&flags)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cc()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot build with -fsanitize=address,undefined: {}",
            cc(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    let run = Command::new(&exe)
        .envs(sanitizer_env())
        .output()
        .map_err(|e| e.to_string())?;
    if !run.status.success() {
        return Err(format!(
            "a trivial ASan program fails to run here: {}",
            String::from_utf8_lossy(&run.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    Ok(flags)
}

/// Runtime options for sanitized programs. Leak checking needs ptrace, which sandboxes
/// often forbid; it stays on where a probe shows it works.
pub fn sanitizer_env() -> Vec<(&'static str, &'static str)> {
    static LEAKS: OnceLock<bool> = OnceLock::new();
    let leaks_work = *LEAKS.get_or_init(|| {
        let dir = scratch("lsan-probe");
        let src = dir.join("p.c");
        std::fs::write(&src, "int main(void){return 0;}\n").unwrap();
        let exe = dir.join("p");
        Command::new(cc())
            .args(["-fsanitize=address", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .is_ok_and(|o| o.status.success())
            && Command::new(&exe)
                .env("ASAN_OPTIONS", "detect_leaks=1")
                .output()
                .is_ok_and(|o| o.status.success())
    });
    vec![
        (
            "ASAN_OPTIONS",
            if leaks_work {
                "detect_leaks=1:abort_on_error=0"
            } else {
                "detect_leaks=0:abort_on_error=0"
            },
        ),
        ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
    ]
}
