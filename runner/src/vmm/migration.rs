//! The VM as the migration engine's guest: [`Vm`] at the source and at the destination,
//! [`Vmm`] building empty VMs for arriving migrations. The state that is not memory is
//! one [`VcpuState`] blob per vCPU.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::memory::{GuestMemory, PAGE_SIZE};
use super::state::VcpuState;
use super::vm::Vm;
use crate::migrate::guest::PageRead;
use crate::migrate::guest::{DestGuest, GuestBuilder, SourceGuest};

impl SourceGuest for Vm {
    fn mem_bytes(&self) -> u64 {
        self.memory().len() as u64
    }

    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn vcpus(&self) -> u32 {
        self.vcpu_count() as u32
    }

    fn is_running(&self) -> bool {
        Vm::is_running(self)
    }

    fn read_page(&mut self, pfn: u64, out: &mut [u8]) -> Result<()> {
        self.memory().read_page(pfn, out);
        Ok(())
    }

    fn page_reader(&self) -> Option<Arc<dyn PageRead>> {
        Some(self.memory().clone())
    }

    fn take_dirty(&mut self) -> Result<Vec<u64>> {
        Vm::take_dirty(self)
    }

    fn pause(&mut self) -> Result<()> {
        Vm::pause(self)
    }

    fn resume(&mut self) -> Result<()> {
        self.start()
    }

    fn save_state(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(Vm::save_state(self)?
            .iter()
            .map(VcpuState::to_bytes)
            .collect())
    }

    fn memory_digest(&mut self) -> Result<u128> {
        Ok(self.memory().digest())
    }
}

/// Lanes read guest memory from their own threads: raw copies, as `read_page`.
impl PageRead for GuestMemory {
    fn read_page(&self, pfn: u64, out: &mut [u8]) -> Result<()> {
        anyhow::ensure!(
            (pfn as usize) < self.pages(),
            "page {pfn} is beyond the guest's memory"
        );
        GuestMemory::read_page(self, pfn, out);
        Ok(())
    }
}

/// Our KVM VMM as the destination's [`GuestBuilder`]: an empty [`Vm`] of the announced
/// size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vmm;

impl GuestBuilder for Vmm {
    type Guest = Vm;

    fn page_size(&self) -> usize {
        PAGE_SIZE
    }

    fn build(&self, mem_bytes: u64, vcpus: u32) -> Result<Vm> {
        let vm = Vm::new(mem_bytes as usize, vcpus as usize)?;
        // the digest on the downtime path then reads never-written memory without faults;
        // in the background, so that the stream is read at once
        vm.memory().prefault_read_in_background();
        Ok(vm)
    }
}

impl DestGuest for Vm {
    fn write_page(&mut self, pfn: u64, data: &[u8]) -> Result<()> {
        self.memory().write(pfn * PAGE_SIZE as u64, data);
        Ok(())
    }

    fn memory_mut(&mut self) -> Option<&mut [u8]> {
        Vm::memory_mut(self)
    }

    fn restore_state(&mut self, blobs: &[Vec<u8>]) -> Result<()> {
        let states = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| VcpuState::from_bytes(b).with_context(|| format!("vCPU {i} state")))
            .collect::<Result<Vec<_>>>()?;
        Vm::restore_state(self, &states)
    }

    fn memory_digest(&mut self) -> Result<u128> {
        Ok(self.memory().digest())
    }

    fn start(&mut self) -> Result<()> {
        Vm::start(self)
    }
}
