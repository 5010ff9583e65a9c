//! A tiny x86-64 assembler: just the instructions the guest programs use, always in their
//! 64-bit register / `[base + disp32]` forms, with labels for jumps and calls. Writing the
//! guest as Rust calls keeps it readable and needs no external assembler at build time.

/// General-purpose registers, numbered as in the instruction encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Reg {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Reg {
    fn low(self) -> u8 {
        self as u8 & 7
    }
    fn high(self) -> u8 {
        (self as u8 >> 3) & 1
    }
}

/// Two-operand ALU operations: (opcode of `op r/m64, r64`, `/digit` of `op r/m64, imm32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Alu {
    Add,
    Or,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu {
    fn codes(self) -> (u8, u8) {
        match self {
            Alu::Add => (0x01, 0),
            Alu::Or => (0x09, 1),
            Alu::And => (0x21, 4),
            Alu::Sub => (0x29, 5),
            Alu::Xor => (0x31, 6),
            Alu::Cmp => (0x39, 7),
        }
    }
}

/// Shifts and rotates by an immediate count (`/digit` of `C1 /digit ib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Shift {
    Rol = 0,
    Shl = 4,
    Shr = 5,
}

/// Conditions for `jcc` (the low nibble of `0F 8x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cond {
    /// Unsigned below.
    B = 0x2,
    /// Unsigned above or equal.
    Ae = 0x3,
    E = 0x4,
    Ne = 0x5,
    /// Unsigned below or equal.
    Be = 0x6,
    /// Unsigned above.
    A = 0x7,
}

/// A jump target, bound to a position with [`Asm::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Machine code under construction.
#[derive(Debug, Default)]
pub struct Asm {
    code: Vec<u8>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes emitted so far.
    pub fn len(&self) -> usize {
        self.code.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the current position.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    /// Resolves every jump; fails on a label that was used but never bound.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        for &(at, l) in &self.fixups {
            let target = self.labels[l.0].ok_or_else(|| format!("label {} never bound", l.0))?;
            let rel = target as i64 - (at as i64 + 4);
            let rel = i32::try_from(rel).map_err(|_| "jump out of range".to_string())?;
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        Ok(self.code)
    }

    fn rex_w(&mut self, reg: u8, rm: u8) {
        self.code.push(0x48 | (reg << 2) | rm);
    }

    fn modrm_rr(&mut self, reg: u8, rm: u8) {
        self.code.push(0xc0 | (reg << 3) | rm);
    }

    /// ModRM (+SIB for rsp/r12 bases) for `[base + disp32]`.
    fn modrm_mem(&mut self, reg: u8, base: Reg, disp: i32) {
        self.code.push(0x80 | (reg << 3) | base.low());
        if base.low() == 4 {
            self.code.push(0x24);
        }
        self.code.extend_from_slice(&disp.to_le_bytes());
    }

    fn rel32(&mut self, l: Label) {
        self.fixups.push((self.code.len(), l));
        self.code.extend_from_slice(&[0; 4]);
    }

    /// `mov dst, imm64`
    pub fn mov_imm(&mut self, dst: Reg, imm: u64) {
        self.rex_w(0, dst.high());
        self.code.push(0xb8 + dst.low());
        self.code.extend_from_slice(&imm.to_le_bytes());
    }

    /// `mov dst, src`
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.rex_w(src.high(), dst.high());
        self.code.push(0x89);
        self.modrm_rr(src.low(), dst.low());
    }

    /// `mov dst, [base + disp]`
    pub fn load(&mut self, dst: Reg, base: Reg, disp: i32) {
        self.rex_w(dst.high(), base.high());
        self.code.push(0x8b);
        self.modrm_mem(dst.low(), base, disp);
    }

    /// `mov [base + disp], src`
    pub fn store(&mut self, base: Reg, disp: i32, src: Reg) {
        self.rex_w(src.high(), base.high());
        self.code.push(0x89);
        self.modrm_mem(src.low(), base, disp);
    }

    /// `op dst, src`
    pub fn alu(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.rex_w(src.high(), dst.high());
        self.code.push(op.codes().0);
        self.modrm_rr(src.low(), dst.low());
    }

    /// `op dst, imm32` (sign-extended to 64 bits)
    pub fn alu_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.rex_w(0, dst.high());
        self.code.push(0x81);
        self.modrm_rr(op.codes().1, dst.low());
        self.code.extend_from_slice(&imm.to_le_bytes());
    }

    /// `imul dst, src` (low 64 bits of the product)
    pub fn imul(&mut self, dst: Reg, src: Reg) {
        self.rex_w(dst.high(), src.high());
        self.code.extend_from_slice(&[0x0f, 0xaf]);
        self.modrm_rr(dst.low(), src.low());
    }

    /// `div src`: unsigned `rdx:rax / src`, quotient in rax, remainder in rdx.
    pub fn div(&mut self, src: Reg) {
        self.rex_w(0, src.high());
        self.code.push(0xf7);
        self.modrm_rr(6, src.low());
    }

    /// `shl/shr/rol r, count`
    pub fn shift(&mut self, kind: Shift, r: Reg, count: u8) {
        self.rex_w(0, r.high());
        self.code.push(0xc1);
        self.modrm_rr(kind as u8, r.low());
        self.code.push(count);
    }

    /// `jmp l`
    pub fn jmp(&mut self, l: Label) {
        self.code.push(0xe9);
        self.rel32(l);
    }

    /// `jcc l`
    pub fn jcc(&mut self, c: Cond, l: Label) {
        self.code.extend_from_slice(&[0x0f, 0x80 | c as u8]);
        self.rel32(l);
    }

    /// `call l`
    pub fn call(&mut self, l: Label) {
        self.code.push(0xe8);
        self.rel32(l);
    }

    /// `ret`
    pub fn ret(&mut self) {
        self.code.push(0xc3);
    }

    /// `out dx, eax`: 32-bit port write (needs IOPL 3 at CPL 3).
    pub fn out_dx_eax(&mut self) {
        self.code.push(0xef);
    }

    /// `in eax, dx`: 32-bit port read (zero-extends into rax).
    pub fn in_eax_dx(&mut self) {
        self.code.push(0xed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reg::*;

    /// Encodings checked once against GNU objdump.
    #[test]
    fn encodings_match_objdump() {
        let mut a = Asm::new();
        a.mov_imm(R13, 0x1122_3344_5566_7788); // 49 bd 88 77 66 55 44 33 22 11
        a.mov(Rbx, R8); // 4c 89 c3
        a.load(Rax, Rdi, 0x100); // 48 8b 87 00 01 00 00
        a.load(R9, R12, 8); // 4d 8b 8c 24 08 00 00 00
        a.store(Rsp, -8, R15); // 4c 89 bc 24 f8 ff ff ff
        a.alu(Alu::Xor, R15, Rcx); // 49 31 cf
        a.alu_imm(Alu::And, Rax, 0xffff); // 48 81 e0 ff ff 00 00
        a.alu_imm(Alu::Cmp, R12, 3); // 49 81 fc 03 00 00 00
        a.imul(Rcx, R14); // 49 0f af ce
        a.div(Rcx); // 48 f7 f1
        a.shift(Shift::Shr, Rdx, 29); // 48 c1 ea 1d
        a.shift(Shift::Shl, R11, 3); // 49 c1 e3 03
        a.out_dx_eax(); // ef
        a.in_eax_dx(); // ed
        a.ret(); // c3
        let code = a.finish().unwrap();
        let want: Vec<u8> = [
            &[0x49, 0xbd, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11][..],
            &[0x4c, 0x89, 0xc3],
            &[0x48, 0x8b, 0x87, 0x00, 0x01, 0x00, 0x00],
            &[0x4d, 0x8b, 0x8c, 0x24, 0x08, 0x00, 0x00, 0x00],
            &[0x4c, 0x89, 0xbc, 0x24, 0xf8, 0xff, 0xff, 0xff],
            &[0x49, 0x31, 0xcf],
            &[0x48, 0x81, 0xe0, 0xff, 0xff, 0x00, 0x00],
            &[0x49, 0x81, 0xfc, 0x03, 0x00, 0x00, 0x00],
            &[0x49, 0x0f, 0xaf, 0xce],
            &[0x48, 0xf7, 0xf1],
            &[0x48, 0xc1, 0xea, 0x1d],
            &[0x49, 0xc1, 0xe3, 0x03],
            &[0xef, 0xed, 0xc3],
        ]
        .concat();
        assert_eq!(code, want);
    }

    #[test]
    fn jumps_resolve_relative_to_the_next_instruction() {
        let mut a = Asm::new();
        let top = a.label();
        let end = a.label();
        a.bind(top);
        a.jcc(Cond::Ne, end); // 0f 85 rel32 (6 bytes)
        a.jmp(top); // e9 rel32 at 6
        a.bind(end);
        a.call(top);
        let code = a.finish().unwrap();
        assert_eq!(&code[0..6], &[0x0f, 0x85, 5, 0, 0, 0]);
        assert_eq!(&code[6..11], &[0xe9, 0xf5, 0xff, 0xff, 0xff]); // -11
        assert_eq!(&code[11..16], &[0xe8, 0xf0, 0xff, 0xff, 0xff]); // -16

        let mut b = Asm::new();
        let nowhere = b.label();
        b.jmp(nowhere);
        assert!(b.finish().is_err());
    }
}
