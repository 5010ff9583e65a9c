//! Where everything lives in guest physical memory, and the x86-64 structures the VMM writes
//! so that a vCPU starts directly in 64-bit user mode (CPL 3, IOPL 3): identity-mapped page
//! tables with user pages, a GDT with user segments and a TSS, and the matching special
//! registers. Kernel-mode guest code is emulated ~1000x slower on this host, user-mode code
//! runs natively, so the guest never enters ring 0.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use super::memory::GuestMemory;

/// PML4 (one page).
pub const PML4: u64 = 0x1000;
/// The one page-directory-pointer table (covers 512 GiB).
pub const PDPT: u64 = 0x2000;
/// Page directories, one per GiB of guest memory, each mapping 2 MiB pages.
pub const PD_BASE: u64 = 0x3000;
/// Largest guest memory the page directory area holds.
pub const MAX_MEM: u64 = 64 << 30;
/// GDT (one page).
pub const GDT: u64 = 0x50000;
/// IDT (one zeroed page: the guest never takes an interrupt or exception it could handle).
pub const IDT: u64 = 0x51000;
/// TSS, followed by its I/O permission bitmap (three pages in all).
pub const TSS: u64 = 0x52000;
/// Offset of the I/O permission bitmap in the TSS.
const IOMAP: u64 = 0x68;
/// TSS limit: the bitmap (one bit per port, all clear = all allowed) and its 0xff end byte.
pub const TSS_LIMIT: u64 = IOMAP + 8192;
/// Guest program code.
pub const CODE: u64 = 0x60000;
/// Largest guest program.
pub const CODE_MAX: usize = 0x10000;
/// Table of 8-byte text chunks the guest writes text pages from.
pub const WORDS: u64 = 0x70000;
/// Per-vCPU area: a state page and a stack page each.
pub const VCPU_AREA: u64 = 0x80000;
/// Bytes of per-vCPU area.
pub const VCPU_STRIDE: u64 = 0x2000;
/// Most vCPUs the layout holds.
pub const MAX_VCPUS: usize = 64;
/// Start of the workload's data; everything below is the "kernel" part of the image.
pub const DATA_BASE: u64 = 2 << 20;

/// User data segment selector (GDT entry 3, RPL 3).
pub const USER_DS: u16 = 0x1b;
/// User 64-bit code segment selector (GDT entry 4, RPL 3).
pub const USER_CS: u16 = 0x23;
/// TSS selector (GDT entries 5 and 6).
pub const TSS_SEL: u16 = 0x28;

/// The state page of vCPU `i`.
pub const fn state_page(i: usize) -> u64 {
    VCPU_AREA + i as u64 * VCPU_STRIDE
}

/// The top of vCPU `i`'s stack (it grows down into the page after its state page).
pub const fn stack_top(i: usize) -> u64 {
    state_page(i) + VCPU_STRIDE
}

// The fixed areas do not overlap.
const _: () = assert!(PD_BASE + (MAX_MEM >> 30) * 0x1000 <= GDT);
const _: () = assert!(TSS + TSS_LIMIT < CODE);
const _: () = assert!(CODE + CODE_MAX as u64 <= WORDS);
const _: () = assert!(state_page(MAX_VCPUS) <= DATA_BASE);

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_PS: u64 = 0x80;

/// Writes page tables that identity-map all of `mem` with 2 MiB user pages.
pub fn write_page_tables(mem: &GuestMemory) {
    let len = mem.len() as u64;
    assert!(len <= MAX_MEM, "guest memory above {MAX_MEM} bytes");
    let gib = len.div_ceil(1 << 30);
    mem.write_u64(PML4, PDPT | PTE_P | PTE_RW | PTE_US);
    for g in 0..gib {
        let pd = PD_BASE + g * 0x1000;
        mem.write_u64(PDPT + g * 8, pd | PTE_P | PTE_RW | PTE_US);
        for e in 0..512u64 {
            let addr = (g << 30) + (e << 21);
            if addr >= len {
                break;
            }
            mem.write_u64(pd + e * 8, addr | PTE_P | PTE_RW | PTE_US | PTE_PS);
        }
    }
}

/// A segment descriptor for the GDT (flat, 4 GiB limit, granularity 4 KiB).
fn descriptor(access: u8, flags: u8) -> u64 {
    let limit = 0xfffffu64;
    (limit & 0xffff)
        | (u64::from(access) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (u64::from(flags) << 52)
}

/// Writes the GDT (null, kernel code/data, user data, user code, TSS) and the TSS.
pub fn write_gdt(mem: &GuestMemory) {
    let entries = [
        0,
        descriptor(0x9b, 0xa), // kernel code: present, DPL 0, code, L
        descriptor(0x93, 0xc), // kernel data
        descriptor(0xf3, 0xc), // user data: DPL 3
        descriptor(0xfb, 0xa), // user code: DPL 3, L
    ];
    for (i, e) in entries.iter().enumerate() {
        mem.write_u64(GDT + i as u64 * 8, *e);
    }
    // 64-bit TSS descriptor (16 bytes): type 0xb (busy), present.
    let lo = (TSS_LIMIT & 0xffff)
        | ((TSS & 0xff_ffff) << 16)
        | (0x8bu64 << 40)
        | (((TSS >> 24) & 0xff) << 56);
    mem.write_u64(GDT + 5 * 8, lo);
    mem.write_u64(GDT + 6 * 8, TSS >> 32);
    // TSS: rsp0 (used only if the guest ever entered ring 0) and an I/O bitmap that allows
    // every port. IOPL 3 alone should do, but this host's virtualizer drops IOPL from
    // RFLAGS when it runs user code natively; the bitmap is what lets `in`/`out` through.
    mem.write_u64(TSS + 4, stack_top(0));
    mem.write(TSS + 0x66, &(IOMAP as u16).to_le_bytes());
    mem.write(TSS + TSS_LIMIT, &[0xff]);
}

fn segment(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 2;
const CR0_ET: u64 = 0x10;
const CR0_NE: u64 = 0x20;
const CR0_WP: u64 = 0x1_0000;
const CR0_PG: u64 = 0x8000_0000;
const CR4_PAE: u64 = 0x20;
const CR4_OSFXSR: u64 = 0x200;
const CR4_OSXMMEXCPT: u64 = 0x400;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Special registers for 64-bit user mode on the tables above (starting from what KVM
/// reports, so fields we do not name keep their defaults).
pub fn user_mode_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let data = segment(USER_DS, 3, 0, 1);
    s.cs = segment(USER_CS, 0xb, 1, 0);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: TSS,
        limit: TSS_LIMIT as u32,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.ldt = kvm_segment {
        selector: 0,
        type_: 2,
        present: 0,
        unusable: 1,
        ..s.tr
    };
    s.gdt.base = GDT;
    s.gdt.limit = 7 * 8 - 1;
    s.idt.base = IDT;
    s.idt.limit = 0xfff;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = PML4;
    s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    s.efer = EFER_LME | EFER_LMA;
    s
}

/// IOPL 3 (so `in`/`out` work at CPL 3) plus the always-one bit; interrupts off.
pub const RFLAGS_USER: u64 = 0x3002;

/// Registers at the guest's entry: `rdi` points to the vCPU's state page.
pub fn entry_regs(vcpu: usize, entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_top(vcpu),
        rdi: state_page(vcpu),
        rflags: RFLAGS_USER,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_map_every_2mib_page_for_user_mode() {
        let m = GuestMemory::new(6 << 20).unwrap();
        write_page_tables(&m);
        assert_eq!(m.read_u64(PML4), PDPT | 7);
        assert_eq!(m.read_u64(PDPT), PD_BASE | 7);
        for e in 0..3 {
            assert_eq!(m.read_u64(PD_BASE + e * 8), (e << 21) | 0x87);
        }
        assert_eq!(m.read_u64(PD_BASE + 3 * 8), 0);
    }

    #[test]
    fn gdt_user_segments_have_dpl3() {
        let m = GuestMemory::new(2 << 20).unwrap();
        write_gdt(&m);
        let cs = m.read_u64(GDT + 4 * 8);
        assert_eq!((cs >> 45) & 3, 3); // DPL
        assert_eq!((cs >> 53) & 1, 1); // L
        let s = user_mode_sregs(kvm_sregs::default());
        assert_eq!(s.cs.selector & 3, 3);
        assert_eq!(s.cs.dpl, 3);
    }
}
