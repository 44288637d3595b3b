//! The third-party test program of `third_party_boot.rs`, built here so that other tests can
//! run it too (`guest_hv.rs` runs it as guest-hv's guest): a multiboot1 ELF32 image shaped like
//! kvm-unit-tests' x86 binaries (`x86/flat.lds`, `x86/cstart64.S`, `lib/x86/setup.c`,
//! `lib/x86/fwcfg.c`), linked at 4 MiB and entered in 32-bit protected mode, printing on the
//! 16550 at 0x3F8, reading the CPU count and RAM size from fw_cfg (ports 0x510/0x511) and from
//! `NR_CPUS=`/`MEMSIZE=` lines of its first module, taking its arguments from the multiboot
//! command line, whose first word is the program name, and ending through the debug-exit port
//! 0xF4 with a value computed from what it read. The image is built from its ELF header to its
//! machine code by a small assembler (every instruction form with its opcode bytes, checked
//! against iced-x86's decoder in `third_party_boot.rs`). A test crate includes this file with
//! `#[path = "support/third_party.rs"] mod third_party;`.

use std::path::{Path, PathBuf};

// ----- a small 32-bit assembler ---------------------------------------------------------------

/// 32-bit general registers, numbered as in ModRM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum R {
    Eax = 0,
    Ecx = 1,
    Edx = 2,
    Ebx = 3,
    Esp = 4,
    Esi = 6,
    Edi = 7,
}

impl R {
    fn n(self) -> u8 {
        self as u8
    }
}

/// Jcc condition codes (the low nibble of 0F 8x).
#[derive(Clone, Copy)]
pub enum Cc {
    B = 0x2,
    Ae = 0x3,
    E = 0x4,
    Ne = 0x5,
    A = 0x7,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Machine code for a flat 32-bit address space, with labels and absolute/relative fixups.
pub struct Asm {
    org: u32,
    code: Vec<u8>,
    labels: Vec<Option<u32>>,
    /// (offset of a 4-byte field, label, relative to the end of the field).
    fixups: Vec<(usize, Label, bool)>,
}

impl Asm {
    pub fn new(org: u32) -> Self {
        Self {
            org,
            code: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.here());
    }

    pub fn here(&self) -> u32 {
        self.org + self.code.len() as u32
    }

    pub fn b(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    pub fn d(&mut self, v: u32) {
        self.b(&v.to_le_bytes());
    }

    pub fn fixup(&mut self, l: Label, relative: bool) {
        self.fixups.push((self.code.len(), l, relative));
        self.d(0);
    }

    /// ModRM mod=00 r/m=101: a 32-bit absolute address follows.
    pub fn abs(&mut self, op: &[u8], reg: u8, addr: u32) {
        self.b(op);
        self.b(&[(reg << 3) | 0b101]);
        self.d(addr);
    }

    /// ModRM mod=00 with a base register (not ESP, which needs a SIB, nor EBP).
    pub fn based(&mut self, op: &[u8], reg: u8, base: R) {
        assert!(base != R::Esp, "[esp] needs a SIB byte");
        self.b(op);
        self.b(&[(reg << 3) | base.n()]);
    }

    pub fn mov_ri(&mut self, r: R, imm: u32) {
        self.b(&[0xb8 + r.n()]); // B8+r id: mov r32, imm32
        self.d(imm);
    }
    pub fn mov_r_label(&mut self, r: R, l: Label) {
        self.b(&[0xb8 + r.n()]); // B8+r id: mov r32, imm32 (a label's address)
        self.fixup(l, false);
    }
    pub fn mov_r_abs(&mut self, r: R, addr: u32) {
        self.abs(&[0x8b], r.n(), addr); // 8B /r: mov r32, [disp32]
    }
    pub fn mov_abs_r(&mut self, addr: u32, r: R) {
        self.abs(&[0x89], r.n(), addr); // 89 /r: mov [disp32], r32
    }
    pub fn mov_abs_al(&mut self, addr: u32) {
        self.b(&[0xa2]); // A2 disp32: mov [moffs32], al
        self.d(addr);
    }
    pub fn mov_r_disp8(&mut self, r: R, base: R, disp: u8) {
        assert!(base != R::Esp);
        self.b(&[0x8b, 0x40 | (r.n() << 3) | base.n(), disp]); // 8B /r mod=01: mov r32, [base+disp8]
    }
    pub fn mov_al_mem(&mut self, base: R) {
        self.based(&[0x8a], 0, base); // 8A /r: mov al, [base]
    }
    pub fn mov_al_imm(&mut self, imm: u8) {
        self.b(&[0xb0, imm]); // B0 ib: mov al, imm8
    }
    pub fn movzx_r_mem8(&mut self, r: R, base: R) {
        self.based(&[0x0f, 0xb6], r.n(), base); // 0F B6 /r: movzx r32, byte [base]
    }
    pub fn movzx_r_al(&mut self, r: R) {
        self.b(&[0x0f, 0xb6, 0xc0 | (r.n() << 3)]); // 0F B6 /r mod=11: movzx r32, al
    }
    pub fn mov_rr(&mut self, dst: R, src: R) {
        self.b(&[0x89, 0xc0 | (src.n() << 3) | dst.n()]); // 89 /r mod=11: mov r32, r32
    }
    pub fn cmp_abs_imm(&mut self, addr: u32, imm: u32) {
        self.abs(&[0x81], 7, addr); // 81 /7 id: cmp dword [disp32], imm32
        self.d(imm);
    }
    pub fn cmp_ri(&mut self, r: R, imm: u32) {
        self.b(&[0x81, 0xf8 | r.n()]); // 81 /7 id mod=11: cmp r32, imm32
        self.d(imm);
    }
    pub fn cmp_r_abs(&mut self, r: R, addr: u32) {
        self.abs(&[0x3b], r.n(), addr); // 3B /r: cmp r32, [disp32]
    }
    pub fn cmp_mem8_imm(&mut self, base: R, imm: u8) {
        self.based(&[0x80], 7, base); // 80 /7 ib: cmp byte [base], imm8
        self.b(&[imm]);
    }
    pub fn cmp_al_mem(&mut self, base: R) {
        self.based(&[0x3a], 0, base); // 3A /r: cmp al, [base]
    }
    pub fn cmp_al_imm(&mut self, imm: u8) {
        self.b(&[0x3c, imm]); // 3C ib: cmp al, imm8
    }
    pub fn test_al_imm(&mut self, imm: u8) {
        self.b(&[0xa8, imm]); // A8 ib: test al, imm8
    }
    pub fn test_abs_imm(&mut self, addr: u32, imm: u32) {
        self.abs(&[0xf7], 0, addr); // F7 /0 id: test dword [disp32], imm32
        self.d(imm);
    }
    pub fn test_rr(&mut self, a: R, b: R) {
        self.b(&[0x85, 0xc0 | (b.n() << 3) | a.n()]); // 85 /r mod=11: test r32, r32
    }
    pub fn inc_abs(&mut self, addr: u32) {
        self.abs(&[0xff], 0, addr); // FF /0: inc dword [disp32]
    }
    pub fn inc_r(&mut self, r: R) {
        self.b(&[0x40 + r.n()]); // 40+r: inc r32 (32-bit mode)
    }
    pub fn dec_r(&mut self, r: R) {
        self.b(&[0x48 + r.n()]); // 48+r: dec r32 (32-bit mode)
    }
    pub fn add_ri(&mut self, r: R, imm: u32) {
        self.b(&[0x81, 0xc0 | r.n()]); // 81 /0 id mod=11: add r32, imm32
        self.d(imm);
    }
    pub fn add_rr(&mut self, dst: R, src: R) {
        self.b(&[0x01, 0xc0 | (src.n() << 3) | dst.n()]); // 01 /r mod=11: add r32, r32
    }
    pub fn add_r_abs(&mut self, r: R, addr: u32) {
        self.abs(&[0x03], r.n(), addr); // 03 /r: add r32, [disp32]
    }
    pub fn add_al_imm(&mut self, imm: u8) {
        self.b(&[0x04, imm]); // 04 ib: add al, imm8
    }
    pub fn sub_ri(&mut self, r: R, imm: u32) {
        self.b(&[0x81, 0xe8 | r.n()]); // 81 /5 id mod=11: sub r32, imm32
        self.d(imm);
    }
    pub fn and_ri(&mut self, r: R, imm: u32) {
        self.b(&[0x81, 0xe0 | r.n()]); // 81 /4 id mod=11: and r32, imm32
        self.d(imm);
    }
    pub fn or_rr(&mut self, dst: R, src: R) {
        self.b(&[0x09, 0xc0 | (src.n() << 3) | dst.n()]); // 09 /r mod=11: or r32, r32
    }
    pub fn shl_ri(&mut self, r: R, n: u8) {
        self.b(&[0xc1, 0xe0 | r.n(), n]); // C1 /4 ib: shl r32, imm8
    }
    pub fn shr_ri(&mut self, r: R, n: u8) {
        self.b(&[0xc1, 0xe8 | r.n(), n]); // C1 /5 ib: shr r32, imm8
    }
    pub fn shr_r_cl(&mut self, r: R) {
        self.b(&[0xd3, 0xe8 | r.n()]); // D3 /5: shr r32, cl
    }
    pub fn imul_rri8(&mut self, r: R, imm: u8) {
        self.b(&[0x6b, 0xc0 | (r.n() << 3) | r.n(), imm]); // 6B /r ib: imul r32, r32, imm8
    }
    pub fn push(&mut self, r: R) {
        self.b(&[0x50 + r.n()]); // 50+r: push r32
    }
    pub fn pop(&mut self, r: R) {
        self.b(&[0x58 + r.n()]); // 58+r: pop r32
    }
    pub fn jcc(&mut self, cc: Cc, l: Label) {
        self.b(&[0x0f, 0x80 | cc as u8]); // 0F 8x cd: jcc rel32
        self.fixup(l, true);
    }
    pub fn jmp(&mut self, l: Label) {
        self.b(&[0xe9]); // E9 cd: jmp rel32
        self.fixup(l, true);
    }
    pub fn call(&mut self, l: Label) {
        self.b(&[0xe8]); // E8 cd: call rel32
        self.fixup(l, true);
    }
    pub fn ret(&mut self) {
        self.b(&[0xc3]); // C3: ret
    }
    pub fn in_al_dx(&mut self) {
        self.b(&[0xec]); // EC: in al, dx
    }
    pub fn out_dx_al(&mut self) {
        self.b(&[0xee]); // EE: out dx, al
    }
    pub fn out_dx_ax(&mut self) {
        self.b(&[0x66, 0xef]); // 66 EF: out dx, ax
    }
    pub fn out_dx_eax(&mut self) {
        self.b(&[0xef]); // EF: out dx, eax
    }
    pub fn cpuid(&mut self) {
        self.b(&[0x0f, 0xa2]); // 0F A2: cpuid
    }
    pub fn cli(&mut self) {
        self.b(&[0xfa]); // FA: cli
    }
    pub fn hlt(&mut self) {
        self.b(&[0xf4]); // F4: hlt
    }

    /// Resolves the fixups and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for &(at, l, relative) in &self.fixups {
            let target = self.labels[l.0].expect("unbound label");
            let v = if relative {
                target.wrapping_sub(self.org + at as u32 + 4)
            } else {
                target
            };
            self.code[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        self.code
    }
}

// ----- the program ----------------------------------------------------------------------------

/// Link address of the text segment (kvm-unit-tests' `flat.lds`: `. = 4M + SIZEOF_HEADERS`).
pub const TEXT: u32 = 0x40_0000;
/// The data segment: initialized words, then bss (variables and the stack).
const DATA: u32 = 0x41_0000;
const DATA_MEMSZ: u32 = 0x3000;
/// An initialized word of the data segment, checked by the program.
const DATA_MARK: u32 = DATA;
const DATA_MARK_VALUE: u32 = 0x5afe_c0de;
/// fw_cfg signature bytes and a NUL (initialized zeros, in the file).
const SIG: u32 = DATA + 4;
const DATA_FILESZ: u32 = 12;
// Variables, in bss.
const MBI: u32 = DATA + 0x100;
const MAGIC: u32 = DATA + 0x104;
const FLAGS: u32 = DATA + 0x108;
const FAILS: u32 = DATA + 0x10c;
const WORDS: u32 = DATA + 0x110;
const MOD_START: u32 = DATA + 0x114;
const MOD_END: u32 = DATA + 0x118;
const ENV_CPUS: u32 = DATA + 0x11c;
const ENV_MEM: u32 = DATA + 0x120;
const CPUS: u32 = DATA + 0x124;
const RAM_LO: u32 = DATA + 0x128;
const RAM_HI: u32 = DATA + 0x12c;
const EXITV: u32 = DATA + 0x130;
/// Never written: zero if the loader cleared bss.
const BSS_PROBE: u32 = DATA + 0x134;
const STACK_TOP: u32 = DATA + DATA_MEMSZ;

/// ELF header (52 bytes) and two program headers (32 each): the multiboot header follows.
const HEADERS: usize = 52 + 2 * 32;

/// Subroutines shared by the main program.
struct Lib {
    putc: Label,
    puts: Label,
    puthex: Label,
    putword: Label,
    putline: Label,
    prefix: Label,
    parse_dec: Label,
}

/// Strings are emitted after the code; each use records its label.
struct Strings(Vec<(Label, Vec<u8>)>);

impl Strings {
    fn get(&mut self, a: &mut Asm, s: &str) -> Label {
        let l = a.label();
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.0.push((l, bytes));
        l
    }
}

fn lib(a: &mut Asm) -> Lib {
    // putc: writes AL to COM1 once the transmitter holding register is empty (LSR bit 5).
    // Preserves every register.
    let putc = a.label();
    a.bind(putc);
    a.push(R::Edx);
    a.push(R::Eax);
    a.mov_ri(R::Edx, 0x3fd);
    let wait = a.label();
    a.bind(wait);
    a.in_al_dx();
    a.test_al_imm(0x20);
    a.jcc(Cc::E, wait);
    a.pop(R::Eax);
    a.mov_ri(R::Edx, 0x3f8);
    a.out_dx_al();
    a.pop(R::Edx);
    a.ret();

    // puts: prints the NUL-terminated string at ESI. Preserves every register.
    let puts = a.label();
    a.bind(puts);
    a.push(R::Eax);
    a.push(R::Esi);
    let (l, done) = (a.label(), a.label());
    a.bind(l);
    a.movzx_r_mem8(R::Eax, R::Esi);
    a.test_rr(R::Eax, R::Eax);
    a.jcc(Cc::E, done);
    a.call(putc);
    a.inc_r(R::Esi);
    a.jmp(l);
    a.bind(done);
    a.pop(R::Esi);
    a.pop(R::Eax);
    a.ret();

    // puthex: prints the low ECX (1..8) hex digits of EAX, most significant first.
    // Preserves every register.
    let puthex = a.label();
    a.bind(puthex);
    a.push(R::Eax);
    a.push(R::Ebx);
    a.push(R::Ecx);
    a.mov_rr(R::Ebx, R::Eax);
    let (l, digit, out) = (a.label(), a.label(), a.label());
    a.bind(l);
    a.mov_rr(R::Eax, R::Ebx);
    a.push(R::Ecx);
    a.dec_r(R::Ecx);
    a.shl_ri(R::Ecx, 2);
    a.shr_r_cl(R::Eax);
    a.pop(R::Ecx);
    a.and_ri(R::Eax, 0xf);
    a.cmp_al_imm(10);
    a.jcc(Cc::B, digit);
    a.add_al_imm(b'a' - 10);
    a.jmp(out);
    a.bind(digit);
    a.add_al_imm(b'0');
    a.bind(out);
    a.call(putc);
    a.dec_r(R::Ecx);
    a.jcc(Cc::Ne, l);
    a.pop(R::Ecx);
    a.pop(R::Ebx);
    a.pop(R::Eax);
    a.ret();

    // putword: prints from ESI up to a space or NUL; ESI ends on the delimiter. Clobbers EAX.
    let putword = a.label();
    a.bind(putword);
    let (l, done) = (a.label(), a.label());
    a.bind(l);
    a.movzx_r_mem8(R::Eax, R::Esi);
    a.test_rr(R::Eax, R::Eax);
    a.jcc(Cc::E, done);
    a.cmp_al_imm(b' ');
    a.jcc(Cc::E, done);
    a.call(putc);
    a.inc_r(R::Esi);
    a.jmp(l);
    a.bind(done);
    a.ret();

    // putline: prints from ESI up to a newline or the end of the module ([MOD_END]).
    // Preserves every register.
    let putline = a.label();
    a.bind(putline);
    a.push(R::Eax);
    a.push(R::Esi);
    let (l, done) = (a.label(), a.label());
    a.bind(l);
    a.cmp_r_abs(R::Esi, MOD_END);
    a.jcc(Cc::Ae, done);
    a.movzx_r_mem8(R::Eax, R::Esi);
    a.cmp_al_imm(b'\n');
    a.jcc(Cc::E, done);
    a.call(putc);
    a.inc_r(R::Esi);
    a.jmp(l);
    a.bind(done);
    a.pop(R::Esi);
    a.pop(R::Eax);
    a.ret();

    // prefix: EAX = 1 if the string at ESI starts with the NUL-terminated string at EDI,
    // else 0. Preserves ESI and EDI.
    let prefix = a.label();
    a.bind(prefix);
    a.push(R::Esi);
    a.push(R::Edi);
    let (l, yes, no, ret) = (a.label(), a.label(), a.label(), a.label());
    a.bind(l);
    a.mov_al_mem(R::Edi);
    a.test_al_imm(0xff);
    a.jcc(Cc::E, yes);
    a.cmp_al_mem(R::Esi);
    a.jcc(Cc::Ne, no);
    a.inc_r(R::Esi);
    a.inc_r(R::Edi);
    a.jmp(l);
    a.bind(yes);
    a.mov_ri(R::Eax, 1);
    a.jmp(ret);
    a.bind(no);
    a.mov_ri(R::Eax, 0);
    a.bind(ret);
    a.pop(R::Edi);
    a.pop(R::Esi);
    a.ret();

    // parse_dec: EAX = the decimal number at ESI (up to a non-digit or [MOD_END]); ESI ends
    // after it. Clobbers ECX.
    let parse_dec = a.label();
    a.bind(parse_dec);
    a.mov_ri(R::Eax, 0);
    let (l, done) = (a.label(), a.label());
    a.bind(l);
    a.cmp_r_abs(R::Esi, MOD_END);
    a.jcc(Cc::Ae, done);
    a.movzx_r_mem8(R::Ecx, R::Esi);
    a.sub_ri(R::Ecx, u32::from(b'0'));
    a.cmp_ri(R::Ecx, 9);
    a.jcc(Cc::A, done); // unsigned: below '0' wraps high
    a.imul_rri8(R::Eax, 10);
    a.add_rr(R::Eax, R::Ecx);
    a.inc_r(R::Esi);
    a.jmp(l);
    a.bind(done);
    a.ret();

    Lib {
        putc,
        puts,
        puthex,
        putword,
        putline,
        prefix,
        parse_dec,
    }
}

/// The text segment (headers, multiboot header, code, strings) and the entry point.
fn program() -> (Vec<u8>, u32) {
    let mut a = Asm::new(TEXT);
    a.b(&[0; HEADERS]); // the ELF and program headers, written by `elf32`
    // Multiboot header (§3.1.1), flags 0 as kvm-unit-tests' cstart64.S: an ELF image.
    let magic = 0x1bad_b002u32;
    a.d(magic);
    a.d(0);
    a.d(0u32.wrapping_sub(magic));
    let start = a.label();
    let main_ = a.label();
    a.jmp(main_);
    let lib = lib(&mut a);
    let mut s = Strings(Vec::new());

    let puts = |a: &mut Asm, s: &mut Strings, text: &str| {
        let l = s.get(a, text);
        a.mov_r_label(R::Esi, l);
        a.call(lib.puts);
    };
    let newline = |a: &mut Asm| {
        a.mov_al_imm(b'\n');
        a.call(lib.putc);
    };
    let hex = |a: &mut Asm, addr: u32, digits: u32| {
        a.mov_r_abs(R::Eax, addr);
        a.mov_ri(R::Ecx, digits);
        a.call(lib.puthex);
    };

    a.bind(main_);
    a.bind(start);
    a.mov_ri(R::Esp, STACK_TOP);
    a.mov_abs_r(MAGIC, R::Eax);
    a.mov_abs_r(MBI, R::Ebx);
    // COM1: 115200 baud (divisor 1), 8N1, as lib/x86/io.c's serial_init does.
    for (port, value) in [(0x3fb, 0x80), (0x3f8, 1), (0x3f9, 0), (0x3fb, 3)] {
        a.mov_ri(R::Edx, port);
        a.mov_al_imm(value);
        a.out_dx_al();
    }
    puts(&mut a, &mut s, "third-party: start\n");

    // EAX = 0x2BADB002 (§3.2).
    puts(&mut a, &mut s, "magic=");
    hex(&mut a, MAGIC, 8);
    newline(&mut a);
    let ok = a.label();
    a.cmp_abs_imm(MAGIC, 0x2bad_b002);
    a.jcc(Cc::E, ok);
    a.inc_abs(FAILS);
    a.bind(ok);

    // Both PT_LOAD segments loaded, bss cleared.
    let (bad, done) = (a.label(), a.label());
    a.cmp_abs_imm(DATA_MARK, DATA_MARK_VALUE);
    a.jcc(Cc::Ne, bad);
    a.cmp_abs_imm(BSS_PROBE, 0);
    a.jcc(Cc::Ne, bad);
    puts(&mut a, &mut s, "segments=loaded\n");
    a.jmp(done);
    a.bind(bad);
    a.inc_abs(FAILS);
    puts(&mut a, &mut s, "segments=bad\n");
    a.bind(done);

    // Where the information structure is: QEMU puts it in conventional memory (0x9500),
    // out of the way of a kernel that takes everything above its image for its allocator.
    let (high, done) = (a.label(), a.label());
    puts(&mut a, &mut s, "mbi=");
    a.cmp_abs_imm(MBI, 0xa_0000);
    a.jcc(Cc::Ae, high);
    puts(&mut a, &mut s, "below-640k\n");
    a.jmp(done);
    a.bind(high);
    puts(&mut a, &mut s, "above-640k\n");
    a.bind(done);

    // The information flags kvm-unit-tests relies on (§3.3): mem_*, cmdline, mods, mmap.
    a.mov_r_abs(R::Ebx, MBI);
    a.mov_r_disp8(R::Eax, R::Ebx, 0);
    a.mov_abs_r(FLAGS, R::Eax);
    puts(&mut a, &mut s, "flags:");
    for (bit, name) in [(0, " mem"), (2, " cmdline"), (3, " mods"), (6, " mmap")] {
        let skip = a.label();
        a.test_abs_imm(FLAGS, 1 << bit);
        a.jcc(Cc::E, skip);
        puts(&mut a, &mut s, name);
        a.bind(skip);
    }
    newline(&mut a);
    let ok = a.label();
    a.mov_r_abs(R::Eax, FLAGS);
    a.and_ri(R::Eax, 0x4d);
    a.cmp_ri(R::Eax, 0x4d);
    a.jcc(Cc::E, ok);
    a.inc_abs(FAILS);
    a.bind(ok);

    // The command line, split at spaces: argv[0] is the program name.
    a.mov_r_abs(R::Ebx, MBI);
    a.mov_r_disp8(R::Esi, R::Ebx, 16);
    let (word, nonspace, words_done) = (a.label(), a.label(), a.label());
    a.bind(word);
    a.cmp_mem8_imm(R::Esi, b' ');
    a.jcc(Cc::Ne, nonspace);
    a.inc_r(R::Esi);
    a.jmp(word);
    a.bind(nonspace);
    a.cmp_mem8_imm(R::Esi, 0);
    a.jcc(Cc::E, words_done);
    a.push(R::Esi);
    puts(&mut a, &mut s, "argv");
    hex(&mut a, WORDS, 1);
    puts(&mut a, &mut s, "=");
    a.pop(R::Esi);
    a.call(lib.putword);
    newline(&mut a);
    a.inc_abs(WORDS);
    a.jmp(word);
    a.bind(words_done);
    puts(&mut a, &mut s, "argc=");
    hex(&mut a, WORDS, 1);
    newline(&mut a);

    // The module: its command line, then its NR_CPUS= and MEMSIZE= lines (lib/x86/fwcfg.c's
    // read_cfg_override reads the same variables).
    a.mov_r_abs(R::Ebx, MBI);
    puts(&mut a, &mut s, "mods=");
    a.mov_r_disp8(R::Eax, R::Ebx, 20);
    a.mov_ri(R::Ecx, 1);
    a.call(lib.puthex);
    newline(&mut a);
    let (no_mods, env_done) = (a.label(), a.label());
    a.mov_r_disp8(R::Eax, R::Ebx, 20);
    a.cmp_ri(R::Eax, 1);
    a.jcc(Cc::B, no_mods);
    a.mov_r_disp8(R::Edi, R::Ebx, 24);
    a.mov_r_disp8(R::Eax, R::Edi, 0);
    a.mov_abs_r(MOD_START, R::Eax);
    a.mov_r_disp8(R::Eax, R::Edi, 4);
    a.mov_abs_r(MOD_END, R::Eax);
    puts(&mut a, &mut s, "module=");
    a.mov_r_disp8(R::Esi, R::Edi, 8);
    a.call(lib.puts);
    newline(&mut a);
    a.mov_r_abs(R::Esi, MOD_START);
    let (line, try_mem, next) = (a.label(), a.label(), a.label());
    a.bind(line);
    a.cmp_r_abs(R::Esi, MOD_END);
    a.jcc(Cc::Ae, env_done);
    for (name, var, miss) in [("NR_CPUS=", ENV_CPUS, try_mem), ("MEMSIZE=", ENV_MEM, next)] {
        let l = s.get(&mut a, name);
        a.mov_r_label(R::Edi, l);
        a.call(lib.prefix);
        a.test_rr(R::Eax, R::Eax);
        a.jcc(Cc::E, miss);
        a.call(lib.putline);
        newline(&mut a);
        a.add_ri(R::Esi, name.len() as u32);
        a.call(lib.parse_dec);
        a.mov_abs_r(var, R::Eax);
        a.jmp(next);
        if name == "NR_CPUS=" {
            a.bind(try_mem);
        }
    }
    // Skip to the next line.
    a.bind(next);
    a.cmp_r_abs(R::Esi, MOD_END);
    a.jcc(Cc::Ae, env_done);
    a.movzx_r_mem8(R::Eax, R::Esi);
    a.inc_r(R::Esi);
    a.cmp_al_imm(b'\n');
    a.jcc(Cc::Ne, next);
    a.jmp(line);
    a.bind(no_mods);
    a.inc_abs(FAILS);
    a.bind(env_done);

    // fw_cfg (QEMU docs/specs/fw_cfg.rst): a 16-bit selector write to 0x510, byte reads
    // from 0x511, as lib/x86/fwcfg.c's fwcfg_get_u does.
    let select = |a: &mut Asm, key: u32| {
        a.mov_ri(R::Edx, 0x510);
        a.mov_ri(R::Eax, key);
        a.out_dx_ax();
        a.mov_ri(R::Edx, 0x511);
    };
    select(&mut a, 0x00); // FW_CFG_SIGNATURE
    for i in 0..4 {
        a.in_al_dx();
        a.mov_abs_al(SIG + i);
    }
    puts(&mut a, &mut s, "fw_cfg signature=");
    a.mov_ri(R::Esi, SIG);
    a.call(lib.puts);
    newline(&mut a);
    let ok = a.label();
    a.cmp_abs_imm(SIG, u32::from_le_bytes(*b"QEMU"));
    a.jcc(Cc::E, ok);
    a.inc_abs(FAILS);
    a.bind(ok);
    select(&mut a, 0x05); // FW_CFG_NB_CPUS, u16
    a.in_al_dx();
    a.movzx_r_al(R::Ecx);
    a.in_al_dx();
    a.movzx_r_al(R::Eax);
    a.shl_ri(R::Eax, 8);
    a.or_rr(R::Eax, R::Ecx);
    a.mov_abs_r(CPUS, R::Eax);
    puts(&mut a, &mut s, "fw_cfg nb_cpus=");
    hex(&mut a, CPUS, 4);
    newline(&mut a);
    select(&mut a, 0x03); // FW_CFG_RAM_SIZE, u64
    for i in 0..8 {
        a.in_al_dx();
        a.mov_abs_al(RAM_LO + i);
    }
    puts(&mut a, &mut s, "fw_cfg ram_size=");
    hex(&mut a, RAM_HI, 8);
    hex(&mut a, RAM_LO, 8);
    newline(&mut a);

    // The module's values (MEMSIZE in MiB) must agree with fw_cfg's.
    let (mismatch, done) = (a.label(), a.label());
    puts(&mut a, &mut s, "env-vs-fw_cfg=");
    a.mov_r_abs(R::Eax, ENV_CPUS);
    a.cmp_r_abs(R::Eax, CPUS);
    a.jcc(Cc::Ne, mismatch);
    a.mov_r_abs(R::Eax, ENV_MEM);
    a.shl_ri(R::Eax, 20);
    a.cmp_r_abs(R::Eax, RAM_LO);
    a.jcc(Cc::Ne, mismatch);
    a.cmp_abs_imm(RAM_HI, 0);
    a.jcc(Cc::Ne, mismatch);
    puts(&mut a, &mut s, "match\n");
    a.jmp(done);
    a.bind(mismatch);
    a.inc_abs(FAILS);
    puts(&mut a, &mut s, "mismatch\n");
    a.bind(done);

    // Exit value: RAM MiB + CPUs + argc + 16 * failures, 7 bits (the status keeps 8 bits of
    // (value << 1) | 1).
    a.mov_r_abs(R::Eax, RAM_LO);
    a.shr_ri(R::Eax, 20);
    a.add_r_abs(R::Eax, CPUS);
    a.add_r_abs(R::Eax, WORDS);
    a.mov_r_abs(R::Ecx, FAILS);
    a.shl_ri(R::Ecx, 4);
    a.add_rr(R::Eax, R::Ecx);
    a.and_ri(R::Eax, 0x7f);
    a.mov_abs_r(EXITV, R::Eax);
    puts(&mut a, &mut s, "failures=");
    hex(&mut a, FAILS, 2);
    newline(&mut a);
    puts(&mut a, &mut s, "exit=");
    hex(&mut a, EXITV, 2);
    newline(&mut a);

    // Last line: CPUID.1:ECX[5], VMX (none under QEMU's TCG).
    a.mov_ri(R::Eax, 1);
    a.cpuid();
    a.shr_ri(R::Ecx, 5);
    a.and_ri(R::Ecx, 1);
    puts(&mut a, &mut s, "vmx=");
    a.mov_rr(R::Eax, R::Ecx);
    a.mov_ri(R::Ecx, 1);
    a.call(lib.puthex);
    newline(&mut a);

    // isa-debug-exit: a 32-bit write, as lib/x86/io.c's exit() does.
    a.mov_r_abs(R::Eax, EXITV);
    a.mov_ri(R::Edx, 0xf4);
    a.out_dx_eax();
    let halt = a.label();
    a.bind(halt);
    a.cli();
    a.hlt();
    a.jmp(halt);

    // Strings after the code.
    for (l, bytes) in std::mem::take(&mut s.0) {
        a.bind(l);
        a.b(&bytes);
    }
    let entry = a.labels[start.0].unwrap();
    (a.finish(), entry)
}

/// A multiboot1 ELF32 executable: `text` (whose first [`HEADERS`] bytes are replaced by the
/// ELF header and the program headers) at [`TEXT`], R+X; `data` at [`DATA`], R+W, with
/// [`DATA_MEMSZ`] bytes in memory (the rest is bss).
fn elf32(mut text: Vec<u8>, entry: u32, data: &[u8]) -> Vec<u8> {
    assert!(text.len() < (DATA - TEXT) as usize, "text overlaps data");
    let data_offset = text.len().next_multiple_of(0x1000) as u32;
    let mut h = Vec::with_capacity(HEADERS);
    h.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0"); // ELFCLASS32, LSB, v1
    h.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    h.extend_from_slice(&3u16.to_le_bytes()); // e_machine: EM_386
    h.extend_from_slice(&1u32.to_le_bytes()); // e_version
    h.extend_from_slice(&entry.to_le_bytes()); // e_entry
    h.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [52u16, 32, 2, 40, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        h.extend_from_slice(&v.to_le_bytes());
    }
    let text_len = text.len() as u32;
    for phdr in [
        // p_type PT_LOAD, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
        [1, 0, TEXT, TEXT, text_len, text_len, 5, 0x1000],
        [
            1,
            data_offset,
            DATA,
            DATA,
            data.len() as u32,
            DATA_MEMSZ,
            6,
            0x1000,
        ],
    ] {
        for v in phdr {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    assert_eq!(h.len(), HEADERS);
    text[..HEADERS].copy_from_slice(&h);
    let mut file = text;
    file.resize(data_offset as usize, 0);
    file.extend_from_slice(data);
    file
}

/// The image file: the program with its data segment (the mark, the signature buffer).
pub fn build_image() -> Vec<u8> {
    let (text, entry) = program();
    let mut data = vec![0u8; DATA_FILESZ as usize];
    data[..4].copy_from_slice(&DATA_MARK_VALUE.to_le_bytes());
    elf32(text, entry, &data)
}

pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("third-party-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every line the program prints, VMX line excluded, for RAM `mem_mib` MiB, a module holding
/// `env_mem` as MEMSIZE, and `failures` failed checks.
pub fn expected(image: &Path, env: &Path, mem_mib: u32, env_mem: u32, failures: u32) -> String {
    let exit = (mem_mib + 1 + 4 + 16 * failures) & 0x7f;
    let verdict = if mem_mib == env_mem {
        "match"
    } else {
        "mismatch"
    };
    format!(
        "third-party: start\n\
         magic=2badb002\n\
         segments=loaded\n\
         mbi=below-640k\n\
         flags: mem cmdline mods mmap\n\
         argv0={}\n\
         argv1=prog\n\
         argv2=arg1\n\
         argv3=arg2\n\
         argc=4\n\
         mods=1\n\
         module={}\n\
         NR_CPUS=1\n\
         MEMSIZE={env_mem}\n\
         fw_cfg signature=QEMU\n\
         fw_cfg nb_cpus=0001\n\
         fw_cfg ram_size={:016x}\n\
         env-vs-fw_cfg={verdict}\n\
         failures={failures:02x}\n\
         exit={exit:02x}\n",
        image.display(),
        env.display(),
        u64::from(mem_mib) << 20,
    )
}

/// Splits the output into everything before the last line and the last line.
pub fn split_last(out: &str) -> (&str, &str) {
    let body = out.strip_suffix('\n').unwrap_or(out);
    match body.rfind('\n') {
        Some(i) => (&out[..=i], &body[i + 1..]),
        None => ("", body),
    }
}

pub fn status(exit: u32) -> Option<i32> {
    Some((((exit << 1) | 1) & 0xff) as i32)
}

pub const APPEND: &str = "prog arg1 arg2";
