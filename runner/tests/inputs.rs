//! Hostile and careless input to the `pagewire` binary (issue #15, "no input panics, aborts
//! or runs forever"): each case runs the built binary and checks that it ends quickly with
//! exit status 1 and a message naming what to change, never a panic (101), an abort
//! (SIGABRT), an OOM kill or a run without end. `docs/HARDENING.md` lists the cases.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a refusal may take: they are all argument checks, made before any real work.
const QUICK: Duration = Duration::from_secs(30);

/// What a finished run said.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `pagewire args...` (set up further by `setup`), killing it if it outlives `QUICK`.
fn run_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pagewire"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut cmd);
    let mut child = cmd.spawn().expect("run the pagewire binary");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > QUICK {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`pagewire {}` still ran after {QUICK:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Outcome {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Checks that `pagewire args...` is refused with exit status 1 and a message with `want`.
fn refused(args: &[&str], want: &str) -> String {
    refused_with(args, want, |_| {})
}

fn refused_with(args: &[&str], want: &str, setup: impl FnOnce(&mut Command)) -> String {
    let o = run_with(args, setup);
    let line = args.join(" ");
    assert!(
        !o.stderr.contains("panicked"),
        "`pagewire {line}` panicked:\n{}",
        o.stderr
    );
    assert_eq!(
        o.code,
        Some(1),
        "`pagewire {line}`: want exit status 1 (refused), got {:?}\nstdout: {}\nstderr: {}",
        o.code,
        o.stdout,
        o.stderr
    );
    assert!(
        o.stderr.starts_with("error: ") && o.stderr.contains(want),
        "`pagewire {line}`: want an error naming {want:?}, got:\n{}",
        o.stderr
    );
    o.stderr
}

const HUGE: &str = "1e300";
const HUGE_DELAY: &str = "100000000000000000000000000000s";

#[test]
fn huge_durations_are_refused_in_every_command() {
    let send = ["send", "--to", "127.0.0.1:9", "--keys", "/nonexistent"];
    let receive = [
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--keys",
        "/nonexistent",
    ];
    let firmware = ["--encoder", "firmware", "--firmware-timeout", HUGE];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        ([&send[..], &["--warmup", HUGE]].concat(), "--warmup"),
        ([&send[..], &["--delay", HUGE_DELAY]].concat(), "--delay"),
        ([&send[..], &firmware[..]].concat(), "--firmware-timeout"),
        ([&receive[..], &["--run", HUGE]].concat(), "--run"),
        (vec!["demo", "--warmup", HUGE], "--warmup"),
        (vec!["demo", "--delay", HUGE_DELAY], "--delay"),
        (
            [&["demo"][..], &firmware[..]].concat(),
            "--firmware-timeout",
        ),
        (
            [&["replay"][..], &firmware[..]].concat(),
            "--firmware-timeout",
        ),
        (vec!["demo", "--warmup", "inf"], "--warmup"),
        (vec!["demo", "--warmup=-1"], "--warmup"),
    ];
    for (args, want) in cases {
        refused(&args, want);
    }
}

/// A downtime limit of 0 while the policy waits would send QEMU from its first pass straight
/// to stop-and-copy: refused before any QEMU starts.
#[test]
fn a_zero_floor_is_refused_before_any_qemu_starts() {
    let e = refused(&["tunnel", "demo", "--floor-ms", "0"], "--floor-ms 0");
    assert!(!e.contains("booting"), "{e}");
}

/// Runs the binary under an address-space limit (`ulimit -v`) of `bytes`: a real limit any
/// process may set, which `host_memory::headroom` reads like a cgroup's.
fn address_space_limit(bytes: u64) -> impl FnOnce(&mut Command) {
    move |cmd: &mut Command| {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent; it runs
        // in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

const GIB: u64 = 1 << 30;

#[test]
fn replay_checks_its_whole_memory_budget_up_front() {
    // allocations that aborted (SIGABRT) before
    refused(
        &["replay", "--synthetic-mib", "100000000"],
        "lower --synthetic-mib or --cache-mib",
    );
    refused(
        &["replay", "--snapshots", "100000000000"],
        "--snapshots must be 1 to",
    );
    refused(
        &["replay", "--synthetic-mib", "18446744073709551615"],
        "--synthetic-mib is too large",
    );
    // 16000 MiB was OOM-killed on this 24 GiB host: four images of it never fit in 24 GiB
    let e = refused_with(
        &["replay", "--synthetic-mib", "16000"],
        "lower --synthetic-mib or --cache-mib",
        address_space_limit(24 * GIB),
    );
    assert!(e.contains("the destination image 16000 MiB"), "{e}");
    // a limit that leaves room lets a small replay run
    let o = run_with(
        &[
            "replay",
            "--synthetic-mib",
            "16",
            "--snapshots",
            "2",
            "--cache-mib",
            "8",
        ],
        address_space_limit(GIB),
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("verified"), "{}", o.stdout);
}

/// Writes a series of `count` snapshots of `mem_bytes` each as sparse files (no disk used).
fn sparse_series(dir: &std::path::Path, mem_bytes: u64, count: usize) {
    let names: Vec<String> = (0..count).map(|i| format!("snap-{i}.raw")).collect();
    for n in &names {
        std::fs::File::create(dir.join(n))
            .unwrap()
            .set_len(mem_bytes)
            .unwrap();
    }
    let manifest = serde_json::json!({
        "page_size": 4096, "mem_bytes": mem_bytes, "interval_ms": 1000, "snapshots": names,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn a_4_gib_series_under_a_6_gib_limit_is_refused_before_reading() {
    let t = tempfile::tempdir().unwrap();
    sparse_series(t.path(), 4 * GIB, 2);
    let dir = t.path().to_str().unwrap();
    let e = refused_with(
        &["replay", dir],
        "lower --cache-mib, or replay a series of less memory",
        address_space_limit(6 * GIB),
    );
    assert!(e.contains("the current snapshot 4096 MiB"), "{e}");
    assert!(
        e.contains("bound by the address-space limit (ulimit -v: 6144 MiB)"),
        "{e}"
    );
}

#[test]
fn simulate_refuses_what_would_abort_or_never_end() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let sim = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["simulate", "--workload", "idle", "--out", out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if !extra.contains(&"--mem-mib") {
            v.extend(["--mem-mib".into(), "16".into()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (extra, want) in [
        // aborted in the allocator before
        (&["--mem-mib", "100000000"][..], "lower --mem-mib"),
        (
            &["--mem-mib", "18446744073709551615"],
            "--mem-mib is too large",
        ),
        // ran without end before: simulated time grew without bound
        (
            &["--bandwidth", "0.000000000000000000000000000001bit"],
            "below 1kbit",
        ),
        (
            &["--bandwidth", "2kbit"],
            "raise --bandwidth or --window-mib",
        ),
        (
            &["--rtt", "1000000000000000000000000000000s"],
            "--rtt 1000000000000000000000000000000 is too long",
        ),
        (
            &["--window-mib", "1e-300"],
            "raise --bandwidth or --window-mib",
        ),
        (
            &["--window-mib", "inf"],
            "--window-mib must be a positive number",
        ),
        // silently clamped before
        (&["--smart-window", "0"], "--smart-window must be 1 to 16"),
        (
            &["--smart-window", "1000000"],
            "--smart-window must be 1 to 16",
        ),
    ] {
        let args = sim(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, want);
    }
}

#[test]
fn a_fifo_or_a_device_as_manifest_is_refused_without_waiting() {
    let t = tempfile::tempdir().unwrap();
    let manifest = t.path().join("manifest.json");
    let dir = t.path().to_str().unwrap();
    let fifo = std::ffi::CString::new(manifest.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    refused(&["replay", dir], "is not a regular file");
    refused(&["simulate", dir], "is not a regular file");
    // a device would be read without end
    std::fs::remove_file(&manifest).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &manifest).unwrap();
    refused(&["replay", dir], "is not a regular file");
}

/// Runs the binary with umask 000.
fn umask_000(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe and affects the child alone.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

const KEY_FILES: [&str; 5] = [
    "ca.pem",
    "receiver.pem",
    "receiver.key",
    "sender.pem",
    "sender.key",
];

fn keygen(dir: &std::path::Path, force: bool) -> Outcome {
    let mut args = vec!["keygen", dir.to_str().unwrap()];
    if force {
        args.push("--force");
    }
    run_with(&args, umask_000)
}

#[test]
fn keygen_sets_modes_whatever_the_umask_and_never_overwrites_unasked() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    let o = keygen(&dir, false);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(mode(&dir), 0o700);
    for f in KEY_FILES {
        let want = if f.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir.join(f)), want, "{f} under umask 000");
    }
    // a second run would stop the handed-out certificates working: refused, nothing changed
    let before: Vec<Vec<u8>> = KEY_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let e = refused(
        &["keygen", dir.to_str().unwrap()],
        "use --force to replace it",
    );
    assert!(
        e.contains("ca.pem, receiver.pem, receiver.key, sender.pem, sender.key"),
        "{e}"
    );
    for (f, old) in KEY_FILES.iter().zip(&before) {
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), old, "{f} changed");
    }
    // --force replaces every file, with its own mode, not the looser one it finds
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("sender.key"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let o = keygen(&dir, true);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    for (f, old) in KEY_FILES.iter().zip(&before) {
        assert_ne!(
            &std::fs::read(dir.join(f)).unwrap(),
            old,
            "{f} not replaced"
        );
    }
    assert_eq!(mode(&dir.join("sender.key")), 0o600);
}

#[test]
fn keygen_never_writes_through_a_planted_symlink() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("sender.key")).unwrap();
    // a dangling one counts too
    std::os::unix::fs::symlink(t.path().join("nowhere"), dir.join("ca.pem")).unwrap();
    let e = refused(&["keygen", dir.to_str().unwrap()], "use --force");
    assert!(e.contains("ca.pem, sender.key"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let o = keygen(&dir, true);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!t.path().join("nowhere").exists());
    for f in KEY_FILES {
        let m = std::fs::symlink_metadata(dir.join(f)).unwrap();
        assert!(m.file_type().is_file(), "{f} is not a regular file");
    }
    assert_eq!(mode(&dir.join("sender.key")), 0o600);
}

#[test]
fn keygen_writes_each_peers_role_so_neither_can_stand_in_for_the_other() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use std::sync::Arc;

    let t = tempfile::tempdir().unwrap();
    pagewire_runner::net::tls::keygen(t.path()).unwrap();
    let cert = |f: &str| CertificateDer::from_pem_file(t.path().join(f)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert("ca.pem")).unwrap();
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let now = UnixTime::now();

    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    as_client
        .verify_client_cert(&cert("sender.pem"), &[], now)
        .expect("the sender's certificate is a client certificate");
    let e = as_client
        .verify_client_cert(&cert("receiver.pem"), &[], now)
        .unwrap_err();
    assert!(format!("{e:?}").contains("Purpose"), "{e:?}");

    let as_server = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .unwrap();
    let name = |n: &'static str| ServerName::try_from(n).unwrap();
    as_server
        .verify_server_cert(
            &cert("receiver.pem"),
            &[],
            &name("pagewire-receiver"),
            &[],
            now,
        )
        .expect("the receiver's certificate is a server certificate");
    let e = as_server
        .verify_server_cert(&cert("sender.pem"), &[], &name("pagewire-sender"), &[], now)
        .unwrap_err();
    assert!(format!("{e:?}").contains("Purpose"), "{e:?}");
}

#[test]
fn receive_refuses_a_limit_this_host_cannot_hold() {
    let t = tempfile::tempdir().unwrap();
    pagewire_runner::net::tls::keygen(t.path()).unwrap();
    let keys = t.path().to_str().unwrap();
    let receive = ["receive", "--listen", "127.0.0.1:0", "--keys", keys];
    let e = refused_with(
        &[&receive[..], &["--max-mem-mib", "16384"]].concat(),
        "lower --max-mem-mib",
        address_space_limit(8 * GIB),
    );
    assert!(e.contains("need 32768 MiB"), "{e}");
    assert!(e.contains("ulimit -v: 8192 MiB"), "{e}");
    refused_with(
        &receive,
        "not enough for a 16 MiB guest and the 1024 MiB decoder cache",
        address_space_limit(GIB),
    );
}

#[test]
fn receive_defaults_its_limit_to_the_host_and_refuses_more_before_building_a_vm() {
    use pagewire_runner::migrate::session::{self, DestMessage, Hello};
    use pagewire_runner::net::tls;
    use std::io::{BufRead, BufReader};

    let t = tempfile::tempdir().unwrap();
    tls::keygen(t.path()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pagewire"));
    cmd.args(["receive", "--listen", "127.0.0.1:0", "--keys"])
        .arg(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    address_space_limit(4 * GIB)(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("receive ended before listening")
            .unwrap();
        said += &line;
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.split(',').next().unwrap().to_owned();
        }
    };
    // 4 GiB of address space hold a guest and its largest cache (1 GiB or the guest's size)
    let limit_mib: u64 = said
        .split("accepting guests of up to ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit announced: {said}"));
    assert!(
        (1024..2048).contains(&limit_mib),
        "a 4 GiB address space holds a guest of at most 2 GiB: {said}"
    );
    // a peer with a valid sender certificate announces more than that
    let tcp = std::net::TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(QUICK)).unwrap();
    let mut link = tls::connect(tcp, tls::client_config(t.path()).unwrap()).unwrap();
    let hello = Hello {
        stream_compression: None,
        lanes: 1,
        mem_bytes: 3 << 30,
        vcpus: 1,
        page_size: 4096,
        label: "too big".into(),
        migration_id: 1,
    };
    session::write_hello(&mut link, &hello).unwrap();
    let reply: DestMessage = session::read_message(&mut link).unwrap();
    child.kill().ok();
    child.wait().unwrap();
    let DestMessage::Reply(r) = reply else {
        panic!("want a refusal, got {reply:?}")
    };
    let e = r.error.unwrap_or_default();
    assert!(!r.ok, "{e}");
    // checked against the host when the hello arrives, naming the bound
    assert!(
        e.contains("3072 MiB of memory and may ask for a 3072 MiB decoder cache"),
        "{e}"
    );
    assert!(e.contains("ulimit -v: 4096 MiB"), "{e}");
}
