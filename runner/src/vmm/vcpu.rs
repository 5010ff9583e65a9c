//! Running a vCPU on its own thread, pacing the guest, hearing its ports, and stopping it
//! precisely: the stop flag, `immediate_exit` in the shared `kvm_run` page and a signal
//! together make `KVM_RUN` return wherever the vCPU is, and a last `KVM_RUN` with
//! `immediate_exit` set completes a half-done port read so the saved state is consistent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::program::{
    CHECK_BAD, CHECK_OK, PORT_BOOTED, PORT_CHECK, PORT_HEARTBEAT, PORT_TICK, TICK_SELF_CHECK,
};

/// Rounds per second the VMM lets each vCPU run.
pub const TICK_HZ: u64 = 100;

/// What the VMM heard from the guest, per vCPU, readable from any thread.
#[derive(Debug, Default)]
pub struct VcpuCounters {
    /// Low 32 bits of the round counter in the latest heartbeat.
    pub last_heartbeat: AtomicU64,
    /// Heartbeats heard by this VMM.
    pub heartbeats: AtomicU64,
    /// Self-checks that passed.
    pub checks_ok: AtomicU64,
    /// Self-checks that found a mismatch.
    pub checks_bad: AtomicU64,
    /// The guest finished its first checksum pass.
    pub booted: AtomicBool,
    /// A self-check was asked for and not yet handed to the guest.
    pub check_requested: AtomicBool,
}

/// Shared between the VMM and its vCPU threads.
#[derive(Debug)]
pub struct Monitor {
    /// One entry per vCPU.
    pub vcpus: Vec<VcpuCounters>,
    /// When a vCPU of this VM first entered `KVM_RUN` (for downtime: the first instruction
    /// at the destination).
    pub first_run: Mutex<Option<Instant>>,
    /// The first fatal vCPU error (unexpected exit, failed ioctl).
    pub error: Mutex<Option<String>>,
}

impl Monitor {
    /// Counters for `n` vCPUs.
    pub fn new(n: usize) -> Self {
        Monitor {
            vcpus: (0..n).map(|_| VcpuCounters::default()).collect(),
            first_run: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    /// Total heartbeats over all vCPUs.
    pub fn heartbeats(&self) -> u64 {
        self.vcpus
            .iter()
            .map(|v| v.heartbeats.load(Ordering::Relaxed))
            .sum()
    }

    /// The first fatal error, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn fail(&self, msg: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(msg);
        }
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process; its only job is to make `KVM_RUN`
/// return `EINTR`.
fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut r = Ok(());
    ONCE.call_once(|| {
        r = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| anyhow!("installing the vCPU kick signal handler: {e}"));
    });
    r
}

/// The stop request shared with one vCPU thread.
struct Control {
    stop: AtomicBool,
    /// The vCPU's `kvm_run` page, to set `immediate_exit` from the controlling thread.
    run: *mut kvm_bindings::kvm_run,
}

// SAFETY: `run` points into the vCPU's mmap'd `kvm_run` page, which lives as long as the
// `VcpuFd` that the thread owns; the controller touches only the `immediate_exit` byte, and
// only before joining that thread (see `RunningVcpu::stop`), as the KVM API intends.
unsafe impl Send for Control {}
// SAFETY: as above.
unsafe impl Sync for Control {}

/// A vCPU running on its own thread.
pub struct RunningVcpu {
    ctl: Arc<Control>,
    /// The thread hands the fd back even on error, so the `kvm_run` page stays mapped
    /// until it is joined.
    thread: JoinHandle<(VcpuFd, Result<()>)>,
}

impl RunningVcpu {
    /// Starts vCPU `idx` on a new thread.
    pub fn start(mut fd: VcpuFd, idx: usize, mon: Arc<Monitor>) -> Result<Self> {
        install_kick_handler()?;
        fd.set_kvm_immediate_exit(0);
        let ctl = Arc::new(Control {
            stop: AtomicBool::new(false),
            run: fd.get_kvm_run() as *mut _,
        });
        let c = ctl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{idx}"))
            .spawn(move || run_loop(fd, idx, &c, &mon))?;
        Ok(RunningVcpu { ctl, thread })
    }

    /// True while the thread runs.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Stops the vCPU wherever it is and hands its file descriptor back with a consistent
    /// state (any half-done port access completed).
    pub fn stop(self) -> Result<VcpuFd> {
        self.ctl.stop.store(true, Ordering::SeqCst);
        // SAFETY: the thread owns the VcpuFd and is not joined yet, so the kvm_run page is
        // mapped; writing immediate_exit concurrently with KVM_RUN is what the API is for.
        unsafe {
            std::ptr::write_volatile(&mut (*self.ctl.run).immediate_exit, 1);
        }
        self.thread.thread().unpark();
        // Kick until the thread is out of KVM_RUN (one signal may land just before it
        // enters; immediate_exit covers that, the repeat is belt and braces).
        while !self.thread.is_finished() {
            let _ = self.thread.kill(kick_signal());
            self.thread.thread().unpark();
            std::thread::sleep(Duration::from_micros(200));
        }
        let (fd, r) = self
            .thread
            .join()
            .map_err(|_| anyhow!("vCPU thread panicked"))?;
        r.map(|()| fd)
    }
}

fn is_eintr(e: &vmm_sys_util::errno::Error) -> bool {
    e.errno() == libc::EINTR || e.errno() == libc::EAGAIN
}

fn run_loop(mut fd: VcpuFd, idx: usize, ctl: &Control, mon: &Monitor) -> (VcpuFd, Result<()>) {
    let r = run_until_stopped(&mut fd, idx, ctl, mon);
    (fd, r)
}

fn run_until_stopped(fd: &mut VcpuFd, idx: usize, ctl: &Control, mon: &Monitor) -> Result<()> {
    let me = &mon.vcpus[idx];
    let tick = Duration::from_nanos(1_000_000_000 / TICK_HZ);
    let mut next_due = Instant::now();
    if let Ok(mut f) = mon.first_run.lock() {
        f.get_or_insert_with(Instant::now);
    }
    loop {
        if ctl.stop.load(Ordering::SeqCst) {
            fd.set_kvm_immediate_exit(1);
            let r = fd.run().map(|_| ());
            fd.set_kvm_immediate_exit(0);
            return match r {
                Err(e) if !is_eintr(&e) => Err(anyhow!("completing the last exit: {e}")),
                _ => Ok(()),
            };
        }
        let result = match fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let v = data
                    .iter()
                    .take(4)
                    .enumerate()
                    .fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)));
                match port {
                    PORT_HEARTBEAT => {
                        me.last_heartbeat.store(v, Ordering::SeqCst);
                        me.heartbeats.fetch_add(1, Ordering::SeqCst);
                    }
                    PORT_CHECK if v == u64::from(CHECK_OK) => {
                        me.checks_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    PORT_CHECK if v == u64::from(CHECK_BAD) => {
                        me.checks_bad.fetch_add(1, Ordering::SeqCst);
                    }
                    PORT_BOOTED => me.booted.store(true, Ordering::SeqCst),
                    _ => {}
                }
                Ok(())
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                let mut answer = 0u32;
                if port == PORT_TICK {
                    next_due += tick;
                    let now = Instant::now();
                    if now > next_due + tick * 10 {
                        next_due = now; // far behind (the host was busy): do not catch up
                    }
                    while !ctl.stop.load(Ordering::SeqCst) {
                        let now = Instant::now();
                        if now >= next_due {
                            break;
                        }
                        std::thread::park_timeout(next_due - now);
                    }
                    if !ctl.stop.load(Ordering::SeqCst)
                        && me.check_requested.swap(false, Ordering::SeqCst)
                    {
                        answer |= TICK_SELF_CHECK;
                    }
                }
                for (i, b) in data.iter_mut().enumerate() {
                    *b = answer.to_le_bytes().get(i).copied().unwrap_or(0);
                }
                Ok(())
            }
            Ok(other) => {
                let what = format!("{other:?}");
                let rip = fd
                    .get_regs()
                    .map(|r| format!("{:#x} (rflags {:#x})", r.rip, r.rflags));
                Err(format!(
                    "vCPU {idx}: unexpected exit {what} at rip {}",
                    rip.unwrap_or_else(|e| e.to_string())
                ))
            }
            Err(e) if is_eintr(&e) => Ok(()),
            Err(e) => Err(format!("vCPU {idx}: KVM_RUN failed: {e}")),
        };
        if let Err(msg) = result {
            mon.fail(msg.clone());
            return Err(anyhow!(msg));
        }
    }
}
