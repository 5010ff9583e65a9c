//! The guest program: x86-64 user-mode machine code, generated with [`super::asm`].
//!
//! One program serves every workload; a descriptor in the vCPU's state page (written by the
//! VMM at boot) says which pages it writes, how and how fast.
//!
//! What it does, per vCPU:
//!
//! * at first start, computes a checksum over its data slice (`XOR` over every 8-byte word
//!   of `h(address, value)`);
//! * then runs *rounds*: each round performs a number of *operations* on pages picked by a
//!   xorshift64* PRNG (from the hot set or the whole slice): fill a page with text-like
//!   words (sometimes only its first part, the rest zero), fill it with pointer-like structs,
//!   zero it, or edit a few words in place. Every word store goes through one routine that
//!   reads the old value and keeps the checksum up to date, so the checksum always equals
//!   the hash of the slice's contents;
//! * after each round, `out` of the round counter to [`PORT_HEARTBEAT`], then `in` from
//!   [`PORT_TICK`], where the VMM paces the guest (the answer arrives at the next tick) and
//!   may ask for a self-check;
//! * a self-check recomputes the checksum over the whole slice and compares it with both
//!   the copy in a register and the copy in the state page, then reports
//!   [`CHECK_OK`] or [`CHECK_BAD`] through [`PORT_CHECK`]. After a migration this catches a
//!   page that arrived stale or damaged, and state (registers or state page) out of step
//!   with memory.

use super::asm::{Alu, Asm, Cond, Label, Reg::*, Shift};

/// `out`: a round finished; the value is the low 32 bits of the round counter.
pub const PORT_HEARTBEAT: u16 = 0x10;
/// `in`: wait for the next tick; bit 0 of the answer asks for a self-check.
pub const PORT_TICK: u16 = 0x11;
/// `out`: self-check result ([`CHECK_OK`] or [`CHECK_BAD`]).
pub const PORT_CHECK: u16 = 0x12;
/// `out`: the first checksum pass is done; the value is the vCPU index.
pub const PORT_BOOTED: u16 = 0x13;

/// Self-check passed.
pub const CHECK_OK: u32 = 0x600d_600d;
/// Self-check found memory or state that does not match the checksum.
pub const CHECK_BAD: u32 = 0xbad0_bad0;

/// Answer bit of [`PORT_TICK`] asking for a self-check.
pub const TICK_SELF_CHECK: u32 = 1;

/// Offsets in the state page. Descriptor fields (written by the VMM) first.
pub mod off {
    /// First byte of this vCPU's data slice.
    pub const DATA_BASE: i32 = 0x00;
    /// Pages in the slice.
    pub const DATA_PAGES: i32 = 0x08;
    /// Pages of the hot set (the first pages of the slice; at least 1).
    pub const HOT_PAGES: i32 = 0x10;
    /// Chance out of 65536 that an operation targets the hot set.
    pub const HOT_THRESH: i32 = 0x18;
    /// Busy-phase operation mix: ops per round, then cumulative thresholds (out of 65536)
    /// for text fill, pointer fill and zeroing; the rest are in-place edits.
    pub const BUSY: i32 = 0x20;
    /// Quiet-phase mix, same layout as [`BUSY`].
    pub const QUIET: i32 = 0x40;
    /// Rounds of the busy phase, then of the quiet phase (0 and 0: always busy).
    pub const BUSY_ROUNDS: i32 = 0x60;
    /// Rounds of the quiet phase.
    pub const QUIET_ROUNDS: i32 = 0x68;
    /// Guest address of the 256-entry text chunk table.
    pub const WORDS: i32 = 0x70;
    /// vCPU index.
    pub const INDEX: i32 = 0x78;
    /// Four pointer bases for pointer-like words.
    pub const BASES: i32 = 0x80;
    /// Guest-owned from here: PRNG state (the VMM seeds it).
    pub const RNG: i32 = 0x100;
    /// Rounds completed.
    pub const ROUND: i32 = 0x108;
    /// Operations completed.
    pub const OPS: i32 = 0x110;
    /// Checksum of the data slice.
    pub const CHECKSUM: i32 = 0x118;
    /// Non-zero once the first checksum pass ran.
    pub const BOOTED: i32 = 0x120;
    /// Self-checks passed.
    pub const CHECKS_OK: i32 = 0x128;
    /// The current phase's mix (address of BUSY or QUIET).
    pub const PHASE: i32 = 0x130;
}

/// Multiplier of the checksum's word hash.
pub const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;
/// xorshift64* output multiplier.
const RNG_MUL: u64 = 0x2545_f491_4f6c_dd1d;

/// The checksum's hash of one word, exactly as the guest computes it.
pub fn word_hash(addr: u64, value: u64) -> u64 {
    let t = (value ^ addr).wrapping_mul(HASH_K);
    t ^ (t >> 29)
}

/// The checksum over `words` (8-byte little-endian words) starting at guest address `base`.
pub fn checksum(base: u64, bytes: &[u8]) -> u64 {
    bytes.chunks_exact(8).enumerate().fold(0, |acc, (i, w)| {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        acc ^ word_hash(base + i as u64 * 8, v)
    })
}

/// Emits `rcx = h(rbx, rcx)` using rdx as scratch (r14 holds `HASH_K`).
fn emit_hash(a: &mut Asm) {
    a.alu(Alu::Xor, Rcx, Rbx);
    a.imul(Rcx, R14);
    a.mov(Rdx, Rcx);
    a.shift(Shift::Shr, Rdx, 29);
    a.alu(Alu::Xor, Rcx, Rdx);
}

/// Emits `mov edx, port`.
fn emit_port(a: &mut Asm, port: u16) {
    a.mov_imm(Rdx, u64::from(port));
}

/// The labels of the program's parts, which the other parts call or jump to.
struct Parts {
    rng: Label,
    store: Label,
    full_checksum: Label,
    self_check: Label,
    op_text: Label,
    op_ptr: Label,
    op_zero: Label,
    op_edit: Label,
    round: Label,
    booted: Label,
}

/// Assembles the guest program; its entry point is offset 0.
///
/// Register use: rdi = state page, r12 = operations left in the round, r13 = PRNG state,
/// r14 = `HASH_K`, r15 = running checksum. Subroutines may clobber rax, rbx, rcx, rdx, rsi,
/// rbp and r8-r11.
pub fn assemble() -> Vec<u8> {
    let mut a = Asm::new();
    let p = Parts {
        rng: a.label(),
        store: a.label(),
        full_checksum: a.label(),
        self_check: a.label(),
        op_text: a.label(),
        op_ptr: a.label(),
        op_zero: a.label(),
        op_edit: a.label(),
        round: a.label(),
        booted: a.label(),
    };
    emit_entry(&mut a, &p);
    emit_round(&mut a, &p);
    emit_rng(&mut a, &p);
    emit_store(&mut a, &p);
    emit_full_checksum(&mut a, &p);
    emit_self_check(&mut a, &p);
    // Page operations: r8 = page address; r9 = word index; r10 = words to fill.
    emit_op_text(&mut a, &p);
    emit_op_ptr(&mut a, &p);
    emit_op_zero(&mut a, &p);
    emit_op_edit(&mut a, &p);
    a.finish().expect("guest program labels are all bound")
}

/// Entry: the first start computes the checksum and says booted; a resumed vCPU (after a
/// migration) takes the checksum from its state page.
fn emit_entry(a: &mut Asm, p: &Parts) {
    a.mov_imm(R14, HASH_K);
    a.load(R13, Rdi, off::RNG);
    a.load(Rax, Rdi, off::BOOTED);
    a.alu_imm(Alu::Cmp, Rax, 0);
    a.jcc(Cond::Ne, p.booted);
    a.call(p.full_checksum);
    a.mov(R15, Rax);
    a.store(Rdi, off::CHECKSUM, R15);
    a.mov_imm(Rax, 1);
    a.store(Rdi, off::BOOTED, Rax);
    a.load(Rax, Rdi, off::INDEX);
    emit_port(a, PORT_BOOTED);
    a.out_dx_eax();
    a.jmp(p.round);
    a.bind(p.booted);
    a.load(R15, Rdi, off::CHECKSUM);
}

/// One round: pick the phase's mix, run its operations, count the round, report a
/// heartbeat, wait for the tick, and run a self-check when the VMM asks for one.
fn emit_round(a: &mut Asm, p: &Parts) {
    a.bind(p.round);
    // phase = round % (busy + quiet) < busy ? BUSY : QUIET
    let busy = a.label();
    let phase_set = a.label();
    a.load(Rcx, Rdi, off::BUSY_ROUNDS);
    a.load(Rax, Rdi, off::QUIET_ROUNDS);
    a.alu_imm(Alu::Cmp, Rax, 0);
    a.jcc(Cond::E, busy);
    a.alu(Alu::Add, Rcx, Rax);
    a.load(Rax, Rdi, off::ROUND);
    a.mov_imm(Rdx, 0);
    a.div(Rcx);
    a.load(Rcx, Rdi, off::BUSY_ROUNDS);
    a.alu(Alu::Cmp, Rdx, Rcx);
    a.jcc(Cond::B, busy);
    a.mov(Rax, Rdi);
    a.alu_imm(Alu::Add, Rax, off::QUIET);
    a.jmp(phase_set);
    a.bind(busy);
    a.mov(Rax, Rdi);
    a.alu_imm(Alu::Add, Rax, off::BUSY);
    a.bind(phase_set);
    a.store(Rdi, off::PHASE, Rax);
    a.load(R12, Rax, 0);

    let op_loop = a.label();
    let op_done = a.label();
    let round_end = a.label();
    a.alu_imm(Alu::Cmp, R12, 0);
    a.jcc(Cond::E, round_end);
    a.bind(op_loop);
    emit_pick_page(a, p);
    emit_operation(a, p, op_done);
    a.bind(op_done);
    a.store(Rdi, off::CHECKSUM, R15);
    a.load(Rax, Rdi, off::OPS);
    a.alu_imm(Alu::Add, Rax, 1);
    a.store(Rdi, off::OPS, Rax);
    a.alu_imm(Alu::Sub, R12, 1);
    a.jcc(Cond::Ne, op_loop);

    a.bind(round_end);
    a.store(Rdi, off::RNG, R13);
    a.load(Rax, Rdi, off::ROUND);
    a.alu_imm(Alu::Add, Rax, 1);
    a.store(Rdi, off::ROUND, Rax);
    emit_port(a, PORT_HEARTBEAT);
    a.out_dx_eax();
    emit_port(a, PORT_TICK);
    a.in_eax_dx();
    a.alu_imm(Alu::And, Rax, TICK_SELF_CHECK as i32);
    a.jcc(Cond::E, p.round);
    a.call(p.self_check);
    a.jmp(p.round);
}

/// The target page of an operation, into r8: the hot set with probability
/// `HOT_THRESH`/65536, else the whole slice.
fn emit_pick_page(a: &mut Asm, p: &Parts) {
    let pick_all = a.label();
    let picked = a.label();
    a.call(p.rng);
    a.mov(Rcx, Rax);
    a.alu_imm(Alu::And, Rcx, 0xffff);
    a.load(Rdx, Rdi, off::HOT_THRESH);
    a.alu(Alu::Cmp, Rcx, Rdx);
    a.jcc(Cond::Ae, pick_all);
    a.load(Rcx, Rdi, off::HOT_PAGES);
    a.jmp(picked);
    a.bind(pick_all);
    a.load(Rcx, Rdi, off::DATA_PAGES);
    a.bind(picked);
    a.shift(Shift::Shr, Rax, 32);
    a.imul(Rax, Rcx);
    a.shift(Shift::Shr, Rax, 32);
    a.shift(Shift::Shl, Rax, 12);
    a.load(R8, Rdi, off::DATA_BASE);
    a.alu(Alu::Add, R8, Rax);
}

/// Calls one operation, its kind drawn against the phase's thresholds; continues at `done`.
fn emit_operation(a: &mut Asm, p: &Parts, done: Label) {
    a.call(p.rng);
    a.alu_imm(Alu::And, Rax, 0xffff);
    a.load(Rsi, Rdi, off::PHASE);
    let try_ptr = a.label();
    let try_zero = a.label();
    let do_edit = a.label();
    a.load(Rcx, Rsi, 8);
    a.alu(Alu::Cmp, Rax, Rcx);
    a.jcc(Cond::Ae, try_ptr);
    a.call(p.op_text);
    a.jmp(done);
    a.bind(try_ptr);
    a.load(Rcx, Rsi, 16);
    a.alu(Alu::Cmp, Rax, Rcx);
    a.jcc(Cond::Ae, try_zero);
    a.call(p.op_ptr);
    a.jmp(done);
    a.bind(try_zero);
    a.load(Rcx, Rsi, 24);
    a.alu(Alu::Cmp, Rax, Rcx);
    a.jcc(Cond::Ae, do_edit);
    a.call(p.op_zero);
    a.jmp(done);
    a.bind(do_edit);
    a.call(p.op_edit);
}

/// `rng`: rax = next xorshift64* output; clobbers rcx.
fn emit_rng(a: &mut Asm, p: &Parts) {
    a.bind(p.rng);
    a.mov(Rcx, R13);
    a.shift(Shift::Shr, Rcx, 12);
    a.alu(Alu::Xor, R13, Rcx);
    a.mov(Rcx, R13);
    a.shift(Shift::Shl, Rcx, 25);
    a.alu(Alu::Xor, R13, Rcx);
    a.mov(Rcx, R13);
    a.shift(Shift::Shr, Rcx, 27);
    a.alu(Alu::Xor, R13, Rcx);
    a.mov_imm(Rax, RNG_MUL);
    a.imul(Rax, R13);
    a.ret();
}

/// `store`: [rbx] = rax, keeping r15 = checksum; clobbers rcx, rdx.
fn emit_store(a: &mut Asm, p: &Parts) {
    a.bind(p.store);
    a.load(Rcx, Rbx, 0);
    emit_hash(a);
    a.alu(Alu::Xor, R15, Rcx);
    a.mov(Rcx, Rax);
    emit_hash(a);
    a.alu(Alu::Xor, R15, Rcx);
    a.store(Rbx, 0, Rax);
    a.ret();
}

/// `full_checksum`: rax = checksum of the slice; clobbers rbx, rcx, rdx, rbp.
fn emit_full_checksum(a: &mut Asm, p: &Parts) {
    a.bind(p.full_checksum);
    let lp = a.label();
    a.mov_imm(Rax, 0);
    a.load(Rbx, Rdi, off::DATA_BASE);
    a.load(Rbp, Rdi, off::DATA_PAGES);
    a.shift(Shift::Shl, Rbp, 9);
    a.bind(lp);
    a.load(Rcx, Rbx, 0);
    emit_hash(a);
    a.alu(Alu::Xor, Rax, Rcx);
    a.alu_imm(Alu::Add, Rbx, 8);
    a.alu_imm(Alu::Sub, Rbp, 1);
    a.jcc(Cond::Ne, lp);
    a.ret();
}

/// `self_check`: compares a fresh checksum with r15 and the state page; reports.
fn emit_self_check(a: &mut Asm, p: &Parts) {
    a.bind(p.self_check);
    let bad = a.label();
    let report = a.label();
    a.call(p.full_checksum);
    a.alu(Alu::Cmp, Rax, R15);
    a.jcc(Cond::Ne, bad);
    a.load(Rcx, Rdi, off::CHECKSUM);
    a.alu(Alu::Cmp, Rax, Rcx);
    a.jcc(Cond::Ne, bad);
    a.load(Rax, Rdi, off::CHECKS_OK);
    a.alu_imm(Alu::Add, Rax, 1);
    a.store(Rdi, off::CHECKS_OK, Rax);
    a.mov_imm(Rax, u64::from(CHECK_OK));
    a.jmp(report);
    a.bind(bad);
    a.mov_imm(Rax, u64::from(CHECK_BAD));
    a.bind(report);
    emit_port(a, PORT_CHECK);
    a.out_dx_eax();
    a.ret();
}

/// `op_text`: text chunks from the table, sometimes only the first part of the page.
fn emit_op_text(a: &mut Asm, p: &Parts) {
    a.bind(p.op_text);
    let lp = a.label();
    let zero_word = a.label();
    let write = a.label();
    let full = a.label();
    a.mov_imm(R10, 512);
    a.call(p.rng);
    a.mov(Rcx, Rax);
    a.alu_imm(Alu::And, Rcx, 3);
    a.jcc(Cond::Ne, full);
    // partial: 128 + (rax >> 8) % 256 words
    a.mov(R10, Rax);
    a.shift(Shift::Shr, R10, 8);
    a.alu_imm(Alu::And, R10, 255);
    a.alu_imm(Alu::Add, R10, 128);
    a.bind(full);
    a.mov_imm(R9, 0);
    a.load(R11, Rdi, off::WORDS);
    a.bind(lp);
    a.alu(Alu::Cmp, R9, R10);
    a.jcc(Cond::Ae, zero_word);
    a.call(p.rng);
    a.shift(Shift::Shr, Rax, 40);
    a.alu_imm(Alu::And, Rax, 255);
    a.shift(Shift::Shl, Rax, 3);
    a.alu(Alu::Add, Rax, R11);
    a.load(Rax, Rax, 0);
    a.jmp(write);
    a.bind(zero_word);
    a.mov_imm(Rax, 0);
    a.bind(write);
    a.mov(Rbx, R9);
    a.shift(Shift::Shl, Rbx, 3);
    a.alu(Alu::Add, Rbx, R8);
    a.call(p.store);
    a.alu_imm(Alu::Add, R9, 1);
    a.alu_imm(Alu::Cmp, R9, 512);
    a.jcc(Cond::B, lp);
    a.ret();
}

/// `op_ptr`: 64-byte structs: pointers near one base, small ints, a zero, flags.
fn emit_op_ptr(a: &mut Asm, p: &Parts) {
    a.bind(p.op_ptr);
    let lp = a.label();
    let small = a.label();
    let zero = a.label();
    let flags = a.label();
    let write = a.label();
    a.call(p.rng);
    // r10 = base, r11 = spread mask (4 KiB .. 8 MiB, 8-aligned), rbp = flags
    a.mov(Rcx, Rax);
    a.alu_imm(Alu::And, Rcx, 3);
    a.shift(Shift::Shl, Rcx, 3);
    a.alu(Alu::Add, Rcx, Rdi);
    a.load(R10, Rcx, off::BASES);
    a.mov(Rcx, Rax);
    a.shift(Shift::Shr, Rcx, 2);
    a.alu_imm(Alu::And, Rcx, 7);
    a.mov_imm(R11, 0xfff8);
    // widen the mask by (rcx) nibbles: r11 = (r11 << 4*rcx) | 0xf...8, done as a loop
    {
        let widen = a.label();
        let widened = a.label();
        a.bind(widen);
        a.alu_imm(Alu::Cmp, Rcx, 0);
        a.jcc(Cond::E, widened);
        a.shift(Shift::Shl, R11, 1);
        a.alu_imm(Alu::Or, R11, 8);
        a.alu_imm(Alu::Sub, Rcx, 1);
        a.jmp(widen);
        a.bind(widened);
    }
    a.mov(Rbp, Rax);
    a.shift(Shift::Shr, Rbp, 40);
    a.mov_imm(R9, 0);
    a.bind(lp);
    a.mov(Rsi, R9);
    a.alu_imm(Alu::And, Rsi, 7);
    a.alu_imm(Alu::Cmp, Rsi, 3);
    a.jcc(Cond::E, small);
    a.alu_imm(Alu::Cmp, Rsi, 7);
    a.jcc(Cond::E, small);
    a.alu_imm(Alu::Cmp, Rsi, 5);
    a.jcc(Cond::E, zero);
    a.alu_imm(Alu::Cmp, Rsi, 6);
    a.jcc(Cond::E, flags);
    a.call(p.rng);
    a.alu(Alu::And, Rax, R11);
    a.alu(Alu::Add, Rax, R10);
    a.jmp(write);
    a.bind(small);
    a.call(p.rng);
    a.shift(Shift::Shr, Rax, 50);
    a.jmp(write);
    a.bind(zero);
    a.mov_imm(Rax, 0);
    a.jmp(write);
    a.bind(flags);
    a.mov(Rax, Rbp);
    a.bind(write);
    a.mov(Rbx, R9);
    a.shift(Shift::Shl, Rbx, 3);
    a.alu(Alu::Add, Rbx, R8);
    a.call(p.store);
    a.alu_imm(Alu::Add, R9, 1);
    a.alu_imm(Alu::Cmp, R9, 512);
    a.jcc(Cond::B, lp);
    a.ret();
}

/// `op_zero`: the page is freed.
fn emit_op_zero(a: &mut Asm, p: &Parts) {
    a.bind(p.op_zero);
    let lp = a.label();
    a.mov(Rbx, R8);
    a.mov_imm(R9, 512);
    a.bind(lp);
    a.mov_imm(Rax, 0);
    a.call(p.store);
    a.alu_imm(Alu::Add, Rbx, 8);
    a.alu_imm(Alu::Sub, R9, 1);
    a.jcc(Cond::Ne, lp);
    a.ret();
}

/// `op_edit`: 1-4 words: a counter incremented, or a pointer field rewritten.
fn emit_op_edit(a: &mut Asm, p: &Parts) {
    a.bind(p.op_edit);
    let lp = a.label();
    let pointer = a.label();
    let write = a.label();
    a.call(p.rng);
    a.mov(R9, Rax);
    a.alu_imm(Alu::And, R9, 3);
    a.alu_imm(Alu::Add, R9, 1);
    a.bind(lp);
    a.call(p.rng);
    a.mov(Rbx, Rax);
    a.shift(Shift::Shr, Rbx, 20);
    a.alu_imm(Alu::And, Rbx, 511);
    a.shift(Shift::Shl, Rbx, 3);
    a.alu(Alu::Add, Rbx, R8);
    a.mov(Rcx, Rax);
    a.alu_imm(Alu::And, Rcx, 0x100);
    a.jcc(Cond::Ne, pointer);
    a.load(Rax, Rbx, 0);
    a.alu_imm(Alu::Add, Rax, 1);
    a.jmp(write);
    a.bind(pointer);
    a.shift(Shift::Shr, Rax, 44);
    a.alu_imm(Alu::And, Rax, 0xfff8);
    a.load(Rcx, Rdi, off::BASES);
    a.alu(Alu::Add, Rax, Rcx);
    a.bind(write);
    a.call(p.store);
    a.alu_imm(Alu::Sub, R9, 1);
    a.jcc(Cond::Ne, lp);
    a.ret();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_assembles_and_fits() {
        let code = assemble();
        assert!(!code.is_empty());
        assert!(code.len() <= crate::vmm::layout::CODE_MAX);
    }

    #[test]
    fn checksum_is_an_xor_of_word_hashes() {
        let mut page = vec![0u8; 64];
        page[8] = 5;
        let c = checksum(0x1000, &page);
        let mut expect = 0;
        for i in 0..8u64 {
            expect ^= word_hash(0x1000 + i * 8, if i == 1 { 5 } else { 0 });
        }
        assert_eq!(c, expect);
        page[8] = 6;
        assert_ne!(checksum(0x1000, &page), c);
    }
}
