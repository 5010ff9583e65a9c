//! A vCPU's architectural state as a byte blob: saved at the pause, carried in the
//! migration stream, restored into a vCPU of the destination VM.
//!
//! Layout: `PWVS`, a version byte, then sections of `(id: u8, len: u32 LE, bytes)`. Each
//! section holds one KVM structure in its kernel layout. Sections the host could not read
//! (older kernels, or a virtualizer without XSAVE) are simply absent, and the destination
//! restores what is there.

use anyhow::{bail, ensure, Context, Result};
use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::VcpuFd;
use zerocopy::{FromBytes, IntoBytes};

const MAGIC: &[u8; 4] = b"PWVS";
const VERSION: u8 = 1;

const S_REGS: u8 = 1;
const S_SREGS: u8 = 2;
const S_FPU: u8 = 3;
const S_XSAVE: u8 = 4;
const S_XCRS: u8 = 5;
const S_EVENTS: u8 = 6;
const S_MP: u8 = 7;
const S_DEBUG: u8 = 8;

/// Everything a paused vCPU needs to continue elsewhere.
#[derive(Default)]
pub struct VcpuState {
    /// General registers, rip and rflags.
    pub regs: kvm_regs,
    /// Segments, control registers, EFER, descriptor tables.
    pub sregs: kvm_sregs,
    /// x87/SSE state.
    pub fpu: kvm_fpu,
    /// Extended state (AVX and beyond), where the host supports it.
    pub xsave: Option<Box<kvm_xsave>>,
    /// Extended control registers (XCR0).
    pub xcrs: Option<kvm_xcrs>,
    /// Pending exceptions, interrupts, NMI state.
    pub events: Option<kvm_vcpu_events>,
    /// Runnable / halted.
    pub mp_state: Option<kvm_mp_state>,
    /// Debug registers.
    pub debugregs: Option<kvm_debugregs>,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("rsp", &format_args!("{:#x}", self.regs.rsp))
            .field("xsave", &self.xsave.is_some())
            .finish_non_exhaustive()
    }
}

fn fpu_bytes(f: &kvm_fpu) -> Vec<u8> {
    let mut b = Vec::with_capacity(416);
    for r in &f.fpr {
        b.extend_from_slice(r);
    }
    b.extend_from_slice(&f.fcw.to_le_bytes());
    b.extend_from_slice(&f.fsw.to_le_bytes());
    b.push(f.ftwx);
    b.push(0);
    b.extend_from_slice(&f.last_opcode.to_le_bytes());
    b.extend_from_slice(&f.last_ip.to_le_bytes());
    b.extend_from_slice(&f.last_dp.to_le_bytes());
    for r in &f.xmm {
        b.extend_from_slice(r);
    }
    b.extend_from_slice(&f.mxcsr.to_le_bytes());
    b
}

fn fpu_from(b: &[u8]) -> Result<kvm_fpu> {
    ensure!(
        b.len() == 412,
        "FPU section has {} bytes, want 412",
        b.len()
    );
    let mut f = kvm_fpu::default();
    let mut p = 0;
    let mut take = |n: usize| {
        let s = &b[p..p + n];
        p += n;
        s
    };
    for r in &mut f.fpr {
        r.copy_from_slice(take(16));
    }
    f.fcw = u16::from_le_bytes(take(2).try_into()?);
    f.fsw = u16::from_le_bytes(take(2).try_into()?);
    f.ftwx = take(2)[0];
    f.last_opcode = u16::from_le_bytes(take(2).try_into()?);
    f.last_ip = u64::from_le_bytes(take(8).try_into()?);
    f.last_dp = u64::from_le_bytes(take(8).try_into()?);
    for r in &mut f.xmm {
        r.copy_from_slice(take(16));
    }
    f.mxcsr = u32::from_le_bytes(take(4).try_into()?);
    Ok(f)
}

fn section(out: &mut Vec<u8>, id: u8, bytes: &[u8]) {
    out.push(id);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn read_exact<T: FromBytes>(id: u8, b: &[u8]) -> Result<T> {
    T::read_from_bytes(b).map_err(|_| {
        anyhow::anyhow!(
            "vCPU state section {id} has {} bytes, want {}",
            b.len(),
            std::mem::size_of::<T>()
        )
    })
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running. Registers, special registers and FPU
    /// are required; the rest is taken where the host supports it.
    pub fn save(fd: &VcpuFd) -> Result<Self> {
        Ok(VcpuState {
            regs: fd.get_regs().context("KVM_GET_REGS")?,
            sregs: fd.get_sregs().context("KVM_GET_SREGS")?,
            fpu: fd.get_fpu().context("KVM_GET_FPU")?,
            xsave: fd.get_xsave().ok().map(Box::new),
            xcrs: fd.get_xcrs().ok(),
            events: fd.get_vcpu_events().ok(),
            mp_state: fd.get_mp_state().ok(),
            debugregs: fd.get_debug_regs().ok(),
        })
    }

    /// Writes the state into a vCPU that has not run yet (or is stopped).
    pub fn restore(&self, fd: &VcpuFd) -> Result<()> {
        fd.set_sregs(&self.sregs).context("KVM_SET_SREGS")?;
        fd.set_regs(&self.regs).context("KVM_SET_REGS")?;
        fd.set_fpu(&self.fpu).context("KVM_SET_FPU")?;
        if let Some(x) = &self.xcrs {
            fd.set_xcrs(x).context("KVM_SET_XCRS")?;
        }
        if let Some(x) = &self.xsave {
            // SAFETY: `x` is a whole `kvm_xsave` (4 KiB region) as KVM_GET_XSAVE returned it
            // on the source; KVM_SET_XSAVE reads exactly that structure.
            unsafe { fd.set_xsave(x) }.context("KVM_SET_XSAVE")?;
        }
        if let Some(e) = &self.events {
            fd.set_vcpu_events(e).context("KVM_SET_VCPU_EVENTS")?;
        }
        if let Some(m) = self.mp_state {
            fd.set_mp_state(m).context("KVM_SET_MP_STATE")?;
        }
        if let Some(d) = &self.debugregs {
            fd.set_debug_regs(d).context("KVM_SET_DEBUGREGS")?;
        }
        Ok(())
    }

    /// The blob carried in the migration stream.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 * 1024);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        section(&mut out, S_REGS, self.regs.as_bytes());
        section(&mut out, S_SREGS, self.sregs.as_bytes());
        section(&mut out, S_FPU, &fpu_bytes(&self.fpu));
        if let Some(x) = &self.xsave {
            section(&mut out, S_XSAVE, x.as_bytes());
        }
        if let Some(x) = &self.xcrs {
            section(&mut out, S_XCRS, x.as_bytes());
        }
        if let Some(x) = &self.events {
            section(&mut out, S_EVENTS, x.as_bytes());
        }
        if let Some(x) = &self.mp_state {
            section(&mut out, S_MP, x.as_bytes());
        }
        if let Some(x) = &self.debugregs {
            section(&mut out, S_DEBUG, x.as_bytes());
        }
        out
    }

    /// Parses a blob; every length is checked, unknown sections are refused.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        ensure!(b.len() >= 5 && &b[..4] == MAGIC, "not a vCPU state blob");
        ensure!(b[4] == VERSION, "vCPU state version {} unsupported", b[4]);
        let mut s = VcpuState::default();
        let (mut regs, mut sregs, mut fpu) = (false, false, false);
        let mut p = 5;
        while p < b.len() {
            ensure!(b.len() - p >= 5, "vCPU state truncated");
            let id = b[p];
            let len = u32::from_le_bytes(b[p + 1..p + 5].try_into()?) as usize;
            p += 5;
            ensure!(b.len() - p >= len, "vCPU state section {id} truncated");
            let data = &b[p..p + len];
            p += len;
            match id {
                S_REGS => (s.regs, regs) = (read_exact(id, data)?, true),
                S_SREGS => (s.sregs, sregs) = (read_exact(id, data)?, true),
                S_FPU => (s.fpu, fpu) = (fpu_from(data)?, true),
                S_XSAVE => s.xsave = Some(Box::new(read_exact(id, data)?)),
                S_XCRS => s.xcrs = Some(read_exact(id, data)?),
                S_EVENTS => s.events = Some(read_exact(id, data)?),
                S_MP => s.mp_state = Some(read_exact(id, data)?),
                S_DEBUG => s.debugregs = Some(read_exact(id, data)?),
                other => bail!("unknown vCPU state section {other}"),
            }
        }
        ensure!(
            regs && sregs && fpu,
            "vCPU state lacks registers, special registers or FPU"
        );
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trips_and_rejects_damage() {
        let mut s = VcpuState::default();
        s.regs.rip = 0x60000;
        s.regs.r15 = 42;
        s.sregs.cr3 = 0x1000;
        s.fpu.mxcsr = 0x1f80;
        s.fpu.xmm[3][7] = 9;
        s.mp_state = Some(kvm_mp_state { mp_state: 0 });
        let b = s.to_bytes();
        let t = VcpuState::from_bytes(&b).unwrap();
        assert_eq!(t.regs, s.regs);
        assert_eq!(t.sregs, s.sregs);
        assert_eq!(t.fpu, s.fpu);
        assert_eq!(t.mp_state, s.mp_state);
        assert!(t.xsave.is_none());
        assert!(VcpuState::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(VcpuState::from_bytes(&b[..20]).is_err());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(VcpuState::from_bytes(&bad).is_err());
    }
}
