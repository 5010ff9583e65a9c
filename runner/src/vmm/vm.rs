//! A KVM virtual machine: guest memory with dirty logging, vCPUs that start in 64-bit user
//! mode, start/pause/resume, dirty log, state save/restore.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::boot::{self, GuestSpec};
use super::layout;
use super::memory::{GuestMemory, PAGE_SIZE};
use super::program;
use super::state::VcpuState;
use super::vcpu::{Monitor, RunningVcpu};

/// Why KVM cannot be used here, or `Ok` when it can (tests print the reason and skip).
pub fn kvm_available() -> std::result::Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    kvm.create_vm()
        .map_err(|e| format!("/dev/kvm cannot create a VM: {e}"))?;
    Ok(())
}

enum Slot {
    Parked(VcpuFd),
    Running(RunningVcpu),
    Lost,
}

/// A VM and its memory. Field order matters for drop: vCPUs, then the VM, then memory.
pub struct Vm {
    vcpus: Vec<Slot>,
    vm: VmFd,
    _kvm: Kvm,
    mem: Arc<GuestMemory>,
    monitor: Arc<Monitor>,
}

impl Vm {
    /// Creates a VM with `mem_bytes` of memory (dirty logging on) and `vcpus` vCPUs that have
    /// not run yet.
    pub fn new(mem_bytes: usize, vcpus: usize) -> Result<Self> {
        if vcpus == 0 || vcpus > layout::MAX_VCPUS {
            bail!("vCPUs must be from 1 to {}", layout::MAX_VCPUS);
        }
        if mem_bytes as u64 > layout::MAX_MEM {
            bail!("guest memory is limited to {} GiB", layout::MAX_MEM >> 30);
        }
        if mem_bytes < (8 << 20) {
            bail!("guest memory must be at least 8 MiB");
        }
        let kvm = Kvm::new().context("cannot open /dev/kvm")?;
        let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
        let mem = Arc::new(GuestMemory::new(mem_bytes)?);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr: 0,
            memory_size: mem.len() as u64,
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: the region is the mapping owned by `mem`, which outlives the VM fd
        // (`Vm` drops `vm` before `mem`, and holds an Arc to it).
        unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .context("KVM_GET_SUPPORTED_CPUID")?;
        let mut slots = Vec::with_capacity(vcpus);
        for i in 0..vcpus {
            let fd = vm
                .create_vcpu(i as u64)
                .with_context(|| format!("KVM_CREATE_VCPU {i}"))?;
            fd.set_cpuid2(&cpuid).context("KVM_SET_CPUID2")?;
            slots.push(Slot::Parked(fd));
        }
        Ok(Vm {
            vcpus: slots,
            vm,
            _kvm: kvm,
            mem,
            monitor: Arc::new(Monitor::new(vcpus)),
        })
    }

    /// Lays out a fresh guest (page tables, GDT/TSS, program, descriptors, initial memory
    /// image) and points every vCPU at the program's entry in 64-bit user mode.
    pub fn boot(&mut self, spec: &GuestSpec) -> Result<()> {
        let mem = &self.mem;
        layout::write_page_tables(mem);
        layout::write_gdt(mem);
        let code = program::assemble();
        mem.write(layout::CODE, &code);
        mem.write(layout::WORDS, &boot::text_chunks(spec.seed));
        boot::prefill(mem, spec.seed)?;
        let n = self.vcpus.len();
        for i in 0..n {
            boot::write_descriptor(mem, spec, n, i);
        }
        for (i, slot) in self.vcpus.iter().enumerate() {
            let Slot::Parked(fd) = slot else {
                bail!("boot needs parked vCPUs");
            };
            let sregs = layout::user_mode_sregs(fd.get_sregs().context("KVM_GET_SREGS")?);
            fd.set_sregs(&sregs).context("KVM_SET_SREGS")?;
            fd.set_regs(&layout::entry_regs(i, layout::CODE))
                .context("KVM_SET_REGS")?;
        }
        Ok(())
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Guest memory as one slice, while no vCPU runs and nothing else holds the memory
    /// (a destination VM being filled); else `None`.
    pub fn memory_mut(&mut self) -> Option<&mut [u8]> {
        if !self.vcpus.iter().all(|s| matches!(s, Slot::Parked(_))) {
            return None;
        }
        let mem = Arc::get_mut(&mut self.mem)?;
        // SAFETY: every vCPU is parked and stays so while `&mut self` is borrowed: only
        // `start` (which takes `&mut self`) runs them.
        Some(unsafe { mem.as_mut_slice() })
    }

    /// What the guest reported.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// Number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// True while every vCPU thread runs.
    pub fn is_running(&self) -> bool {
        self.vcpus
            .iter()
            .all(|s| matches!(s, Slot::Running(r) if r.is_running()))
    }

    /// Starts (or resumes) every parked vCPU.
    pub fn start(&mut self) -> Result<()> {
        for (i, slot) in self.vcpus.iter_mut().enumerate() {
            if let Slot::Parked(_) = slot {
                let Slot::Parked(fd) = std::mem::replace(slot, Slot::Lost) else {
                    unreachable!()
                };
                *slot = Slot::Running(RunningVcpu::start(fd, i, self.monitor.clone())?);
            }
        }
        Ok(())
    }

    /// Stops every vCPU (immediate_exit + signal) and parks it with a consistent state.
    pub fn pause(&mut self) -> Result<()> {
        let mut first_err = None;
        for slot in &mut self.vcpus {
            if let Slot::Running(_) = slot {
                let Slot::Running(r) = std::mem::replace(slot, Slot::Lost) else {
                    unreachable!()
                };
                match r.stop() {
                    Ok(fd) => *slot = Slot::Parked(fd),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e.context("stopping a vCPU")),
            None => Ok(()),
        }
    }

    fn parked(&self) -> Result<impl Iterator<Item = &VcpuFd>> {
        if !self.vcpus.iter().all(|s| matches!(s, Slot::Parked(_))) {
            bail!("every vCPU must be paused first");
        }
        Ok(self.vcpus.iter().filter_map(|s| match s {
            Slot::Parked(fd) => Some(fd),
            _ => None,
        }))
    }

    /// The state of every (paused) vCPU.
    pub fn save_state(&self) -> Result<Vec<VcpuState>> {
        self.parked()?.map(VcpuState::save).collect()
    }

    /// Loads saved state into every (not yet started) vCPU.
    pub fn restore_state(&self, states: &[VcpuState]) -> Result<()> {
        if states.len() != self.vcpus.len() {
            bail!(
                "state for {} vCPUs, VM has {}",
                states.len(),
                self.vcpus.len()
            );
        }
        for (fd, s) in self.parked()?.zip(states) {
            s.restore(fd)?;
        }
        Ok(())
    }

    /// Pages written since the last call (KVM's dirty log, read and cleared), ascending.
    pub fn take_dirty(&self) -> Result<Vec<u64>> {
        let bitmap = self
            .vm
            .get_dirty_log(0, self.mem.len())
            .context("KVM_GET_DIRTY_LOG")?;
        let mut pfns = Vec::new();
        for (w, &bits) in bitmap.iter().enumerate() {
            let mut b = bits;
            while b != 0 {
                let t = b.trailing_zeros() as u64;
                pfns.push(w as u64 * 64 + t);
                b &= b - 1;
            }
        }
        let pages = (self.mem.len() / PAGE_SIZE) as u64;
        pfns.retain(|&p| p < pages);
        Ok(pfns)
    }

    /// Asks every vCPU to verify its memory against its checksum at its next tick.
    pub fn request_self_check(&self) {
        for v in &self.monitor.vcpus {
            v.check_requested.store(true, Ordering::SeqCst);
        }
    }

    /// Waits until `pred` holds on the monitor, polling; fails on a vCPU error or timeout.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Monitor) -> bool,
    ) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(e) = self.monitor.error() {
                bail!("while waiting for {what}: {e}");
            }
            if pred(&self.monitor) {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Requests a self-check and waits for every vCPU's answer; `Ok(true)` when all passed.
    pub fn self_check(&self, timeout: Duration) -> Result<bool> {
        let before: Vec<(u64, u64)> = self
            .monitor
            .vcpus
            .iter()
            .map(|v| {
                (
                    v.checks_ok.load(Ordering::SeqCst),
                    v.checks_bad.load(Ordering::SeqCst),
                )
            })
            .collect();
        self.request_self_check();
        self.wait_for(timeout, "the guest's self-check", |m| {
            m.vcpus.iter().zip(&before).all(|(v, &(ok, bad))| {
                v.checks_ok.load(Ordering::SeqCst) + v.checks_bad.load(Ordering::SeqCst) > ok + bad
            })
        })?;
        Ok(self
            .monitor
            .vcpus
            .iter()
            .zip(&before)
            .all(|(v, &(_, bad))| v.checks_bad.load(Ordering::SeqCst) == bad))
    }

    /// Reads a u64 from vCPU `i`'s state page (counters the guest keeps).
    pub fn guest_counter(&self, i: usize, offset: i32) -> u64 {
        self.mem.read_u64(layout::state_page(i) + offset as u64)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.pause();
    }
}
