//! cpu-paging-legacy: the two paging modes of 32-bit protected mode, 32-bit paging (SDM Vol. 3A
//! §5.3) and PAE paging (§5.4), with access rights (§5.6), page-fault error codes (§5.7), the
//! accessed and dirty flags (§5.8) and the TLB (§5.10.4.1 INVLPG and MOV to CR3). Sections and
//! tables are numbered as in the SDM since 2023, as in cpu-paging (paging was chapter 4 before).
//!
//! The program leaves long mode for 32-bit protected mode (`asm.rs`, §10.8.5.4) once per case,
//! enables one of the two modes with its own page tables, runs the case's accesses there as a
//! list of ops (read, write, call, INVLPG, MOV to CR0/CR3), recording each value read and each
//! exception (vector, error code, CR2), and comes back to long mode to check and print them.
//! Both modes identity-map the image with 4-KiB pages; the test pages live at 1 GiB and above,
//! each case under its own PDE.
//!
//! - 4-KiB pages and large pages (4 MiB with CR4.PSE under 32-bit paging, 2 MiB under PAE)
//!   read the frames they name; after a read the leaf has A = 1 and D = 0 and the PDE above a
//!   4-KiB page A = 1; after a write the leaf has D = 1 and the PDE no D (the entries are read
//!   by the 32-bit code itself, through the identity mapping). PAE PDPTEs have no A flag.
//! - #PF error codes and CR2: a read through a not-present PTE (0x0), a write through a
//!   not-present PDE (0x2), a ring-0 write to a read-only page with CR0.WP = 1 (0x3; with
//!   CR0.WP = 0 it succeeds), a fetch from a not-present page (0x0 under 32-bit paging even
//!   with IA32_EFER.NXE = 1, which reports I/D only with PAE; 0x10 under PAE with NXE), a
//!   fetch from an XD page under PAE with NXE (0x11), and under PAE a PTE with bit 62 set, a
//!   reserved bit in PAE entries (bits 62:MAXPHYADDR, Table 5-11) but not in 4-level ones
//!   (RSVD; QEMU 7.2 TCG reports it without P, so P is masked out unless `strict=1`).
//! - TLB: INVLPG makes a rewritten PTE visible, and so does a CR3 load for a non-global one
//!   (CR4.PGE = 1). Under PAE the PDPTEs are registers loaded by MOV to CR3 (§5.4.1): a
//!   rewritten PDPTE is used after the next CR3 load.
//! - Two hierarchies loaded in turn into CR3 each give their own translation of one address.
//! - `strict=1` adds checks QEMU 7.2 TCG fails or need not pass: the old translation stays in
//!   use after a PTE is rewritten until INVLPG or the CR3 load (what hardware does; the SDM
//!   lets a processor drop a cached translation at any time, §5.10.1); under PAE a rewritten
//!   PDPTE is not used after an INVLPG of its address, only after the CR3 load (the PDPTE
//!   registers, which QEMU does not model: it reads PDPTEs from memory on every walk); and P
//!   with RSVD in the error code.

#![no_std]
#![no_main]

mod asm;

use asm::{Context, Op, Pseudo};
use core::cell::UnsafeCell;
use core::fmt;
use cputests::out;
use cputests::paging::{self, A, D, P, PS, RW, SIZE_2M, SIZE_4K, XD, phys, virt};
use cputests::report::{EXIT_USAGE, Report};
use cputests::trap;
use rt::BootInfo;
use rt::arch::{rdmsr, read_cr0, read_cr3, read_cr4};

const SIZE_4M: u64 = 4 << 20;

/// The test pages, each case under its own PDE (4 MiB apart: one PDE in both modes). Under PAE
/// all but the last are under PDPTE 1.
const SMALL_PAGE: u32 = 0x4000_0000;
const LARGE_PAGE: u32 = 0x4040_0000;
/// A page whose PTE is 0 (its page table exists).
const NOT_PRESENT: u32 = 0x4080_0000;
const READ_ONLY: u32 = 0x4080_1000;
/// A page holding RET, executable.
const RET_PAGE: u32 = 0x4080_2000;
/// A page holding RET with XD set (PAE).
const XD_PAGE: u32 = 0x4080_3000;
/// A page whose PTE has bit 62 set (PAE).
const RESERVED: u32 = 0x4080_4000;
/// Under a PDE that is 0.
const NO_PDE: u32 = 0x40C0_0000;
const INVLPG_PAGE: u32 = 0x4100_0000;
const RELOAD_PAGE: u32 = 0x4140_0000;
const SWITCH_PAGE: u32 = 0x4180_0000;
/// Under PDPTE 2 (PAE).
const PDPTE_PAGE: u32 = 0x8000_0000;

/// CR0.WP: supervisor writes honour read-only pages.
const CR0_WP: u32 = 1 << 16;
/// CR4.PSE: 4-MiB pages under 32-bit paging.
const CR4_PSE: u32 = 1 << 4;
/// CR4.PAE: PAE paging.
const CR4_PAE: u32 = 1 << 5;
/// CR4.PGE: global pages.
const CR4_PGE: u32 = 1 << 7;
const IA32_EFER: u32 = 0xC000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// A bit reserved in PAE paging-structure entries (bits 62:MAXPHYADDR, SDM Vol. 3A Table
/// 4-11) and ignored in 4-level ones.
const PAE_RESERVED_BIT: u64 = 1 << 62;

/// #PF error-code bits (§5.7).
const PF_P: u32 = 1 << 0;
const PF_W: u32 = 1 << 1;
const PF_RSVD: u32 = 1 << 3;
const PF_ID: u32 = 1 << 4;
/// RET.
const RET: u32 = 0xC3;

/// A 32-bit flat code segment, DPL 0 (D = 1, L = 0): compatibility mode in IA-32e mode,
/// 32-bit code in protected mode.
const CODE32_DESCRIPTOR: u64 = 0x00CF_9A00_0000_FFFF;
/// A 32-bit interrupt gate, present, DPL 0 (SDM Vol. 3A Figure 7-2): type byte 0x8E.
const GATE32_INTERRUPT: u64 = 0x8E00;

/// Ops per case, the END op included (at most 32: [`Session::faulting`] is a `u32` mask).
const MAX_OPS: usize = 24;
const _: () = assert!(MAX_OPS <= 32);
const STACK_SIZE: usize = 4096;

/// Where the 32-bit code finds its tables, ops and stack: one block in the image, which both
/// paging modes identity-map.
#[repr(C, align(4096))]
struct Area {
    context: Context,
    gdt: [u64; 4],
    idt: [u64; 32],
    ops: [Op; MAX_OPS],
    stack: [u8; STACK_SIZE],
}

struct Shared(UnsafeCell<Area>);

// SAFETY: one CPU; the 32-bit code runs only inside `Session::run`, which owns the area.
unsafe impl Sync for Shared {}

static AREA: Shared = Shared(UnsafeCell::new(Area {
    context: Context::ZERO,
    gdt: [0; 4],
    idt: [0; 32],
    ops: [Op::END; MAX_OPS],
    stack: [0; STACK_SIZE],
}));

/// What the large-page cases read (slot 0) and write (slot 1), one pair per mode: the large
/// page maps the part of the image that holds them.
static mut LARGE_TARGETS: [[u32; 2]; 2] = [[0; 2]; 2];

/// Fills in the switch's GDT, IDT and the fixed parts of the context.
fn init_area() {
    let area = AREA.0.get();
    let (entry32, back64, stubs) = asm::labels();
    // SAFETY: one CPU, before any 32-bit code runs.
    let area = unsafe { &mut *area };
    area.gdt = [
        0,
        rt::desc::KERNEL_CODE64,
        rt::desc::KERNEL_DATA,
        CODE32_DESCRIPTOR,
    ];
    for (vector, gate) in area.idt.iter_mut().enumerate() {
        let handler = phys(stubs + vector as u64 * asm::STUB_SIZE);
        *gate = (handler & 0xFFFF)
            | (u64::from(asm::CODE32) << 16)
            | ((GATE32_INTERRUPT | (handler & 0xFFFF_0000)) << 32);
    }
    let context = &mut area.context;
    context.gdtr = Pseudo::new(
        (size_of::<[u64; 4]>() - 1) as u16,
        phys(area.gdt.as_ptr() as u64),
    );
    context.idtr = Pseudo::new(
        (size_of::<[u64; 32]>() - 1) as u16,
        phys(area.idt.as_ptr() as u64),
    );
    context.ops = phys32(area.ops.as_ptr() as u64);
    context.stack_top = phys32(area.stack.as_ptr() as u64 + STACK_SIZE as u64);
    context.entry32 = phys32(entry32);
    context.back64 = phys32(back64);
}

/// The physical address of a kernel address in the image, which is below 4 GiB.
fn phys32(va: u64) -> u32 {
    phys(va) as u32
}

/// The 32-bit value at physical address `pa` (a pool frame or the image).
fn peek(pa: u64) -> u32 {
    // SAFETY: `pa` is in the first GiB, mapped at KERNEL_VMA.
    unsafe { virt(pa).cast::<u32>().read_volatile() }
}

fn poke(pa: u64, value: u32) {
    // SAFETY: as `peek`; callers pass pool frames they own.
    unsafe { virt(pa).cast::<u32>().write_volatile(value) }
}

/// A fresh frame holding `value` at byte `offset`.
fn frame_with(offset: u64, value: u32) -> u64 {
    let pa = paging::alloc_frame();
    poke(pa + offset, value);
    pa
}

/// The two paging modes of 32-bit protected mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 32-bit paging: a page directory and page tables of 1024 4-byte entries.
    Paging32,
    /// PAE paging: four PDPTEs, then page directories and page tables of 512 8-byte entries.
    Pae,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Paging32 => "32-bit",
            Mode::Pae => "pae",
        }
    }

    /// The large page: its size and name.
    fn large(self) -> (u64, &'static str) {
        match self {
            Mode::Paging32 => (SIZE_4M, "4m"),
            Mode::Pae => (SIZE_2M, "2m"),
        }
    }

    /// Distinguishes the two modes' patterns.
    fn tag(self) -> u32 {
        match self {
            Mode::Paging32 => 0x3200_0000,
            Mode::Pae => 0xAE00_0000,
        }
    }

    /// The level of the table CR3 names: the page directory (2) or the PDPT (3).
    fn top_level(self) -> u32 {
        match self {
            Mode::Paging32 => 2,
            Mode::Pae => 3,
        }
    }

    fn entry_bytes(self) -> u64 {
        match self {
            Mode::Paging32 => 4,
            Mode::Pae => 8,
        }
    }

    /// Index of `va` in its table at `level` (1 = page table).
    fn index(self, va: u64, level: u32) -> u64 {
        match self {
            Mode::Paging32 => (va >> (12 + 10 * (level - 1))) & 0x3FF,
            Mode::Pae => (va >> (12 + 9 * (level - 1))) & 0x1FF,
        }
    }

    fn read(self, pa: u64) -> u64 {
        match self {
            Mode::Paging32 => u64::from(peek(pa)),
            // SAFETY: a page-table frame in the first GiB, mapped at KERNEL_VMA.
            Mode::Pae => unsafe { virt(pa).read_volatile() },
        }
    }

    fn write(self, pa: u64, value: u64) {
        match self {
            Mode::Paging32 => poke(pa, value as u32),
            // SAFETY: as `read`.
            Mode::Pae => unsafe { virt(pa).write_volatile(value) },
        }
    }
}

/// A hierarchy of one mode in pool frames: `root` is what CR3 holds.
#[derive(Debug, Clone, Copy)]
struct Space {
    mode: Mode,
    root: u64,
}

impl Space {
    /// A hierarchy that identity-maps `[0, identity_end)` with 4-KiB supervisor pages,
    /// writable: the image with the 32-bit code, its tables and the pool.
    fn new(mode: Mode, identity_end: u64) -> Space {
        let space = Space {
            mode,
            root: paging::alloc_frame(),
        };
        for pa in (0..identity_end).step_by(SIZE_4K as usize) {
            space.map(pa as u32, pa, SIZE_4K, RW);
        }
        space
    }

    /// The physical address of the entry for `va` at `level` (1 = PTE, 2 = PDE, 3 = PDPTE),
    /// creating the tables above it.
    fn entry(&self, va: u32, level: u32) -> u64 {
        let va = u64::from(va);
        let mode = self.mode;
        let mut table = self.root;
        for l in (level + 1..=mode.top_level()).rev() {
            let slot = table + mode.index(va, l) * mode.entry_bytes();
            let e = mode.read(slot);
            table = if e & P != 0 {
                e & 0xFFFF_F000
            } else {
                let next = paging::alloc_frame();
                // A PDPTE has no R/W flag: bits 2:1 are reserved (SDM Vol. 3A Table 5-8).
                mode.write(slot, next | if l == 3 { P } else { P | RW });
                next
            };
        }
        table + mode.index(va, level) * mode.entry_bytes()
    }

    /// Maps `va` to `pa` with a 4-KiB or a large page and leaf `flags` (P and, for a large
    /// page, PS added).
    fn map(&self, va: u32, pa: u64, size: u64, flags: u64) {
        let (level, ps) = if size == SIZE_4K { (1, 0) } else { (2, PS) };
        self.set(va, level, pa | flags | ps | P);
    }

    fn set(&self, va: u32, level: u32, value: u64) {
        self.mode.write(self.entry(va, level), value);
    }
}

/// What the machine offers and the command line asks for.
#[derive(Debug, Clone, Copy)]
struct Machine {
    nx: bool,
    pge: bool,
    strict: bool,
    identity_end: u64,
}

/// The ops of one case: the mode switch (IA32_EFER, CR4, CR3, CR0), then the case's own.
#[derive(Debug)]
struct Session {
    mode: Mode,
    case: &'static str,
    ops: [Op; MAX_OPS],
    len: usize,
    /// Bit `i`: op `i` is expected to raise an exception.
    faulting: u32,
}

impl Session {
    fn new(space: &Space, machine: &Machine, case: &'static str) -> Session {
        let mut session = Session {
            mode: space.mode,
            case,
            ops: [Op::END; MAX_OPS],
            len: 0,
            faulting: 0,
        };
        // SAFETY: reading IA32_EFER, which exists in long mode.
        let efer = unsafe { rdmsr(IA32_EFER) } & !(EFER_LME | EFER_LMA | EFER_NXE);
        let nxe = if machine.nx { EFER_NXE } else { 0 };
        let pge = if machine.pge { CR4_PGE } else { 0 };
        let cr4 = match space.mode {
            Mode::Paging32 => CR4_PSE | pge,
            Mode::Pae => CR4_PAE | pge,
        };
        session.push(asm::OP_EFER, (efer | nxe) as u32, 0, false);
        session.push(asm::OP_CR4, cr4, 0, false);
        session.push(asm::OP_CR3, space.root as u32, 0, false);
        session.push(asm::OP_CR0, legacy_cr0(), 0, false);
        session
    }

    fn push(&mut self, kind: u32, addr: u32, value: u32, faults: bool) -> usize {
        assert!(self.len + 1 < MAX_OPS, "too many ops in one case");
        let i = self.len;
        self.ops[i] = Op {
            kind,
            addr,
            value,
            ..Op::END
        };
        if faults {
            self.faulting |= 1 << i;
        }
        self.len += 1;
        i
    }

    fn read(&mut self, va: u32) -> usize {
        self.push(asm::OP_READ, va, 0, false)
    }

    /// A read of the entry at physical address `pa` (identity-mapped): its low 32 bits.
    fn read_entry(&mut self, pa: u64) -> usize {
        self.read(pa as u32)
    }

    fn read_faulting(&mut self, va: u32) -> usize {
        self.push(asm::OP_READ, va, 0, true)
    }

    fn write(&mut self, va: u32, value: u32) -> usize {
        self.push(asm::OP_WRITE, va, value, false)
    }

    fn write_faulting(&mut self, va: u32, value: u32) -> usize {
        self.push(asm::OP_WRITE, va, value, true)
    }

    /// Rewrites the low 32 bits of the entry at physical address `pa`.
    fn write_entry(&mut self, pa: u64, value: u64) -> usize {
        self.write(pa as u32, value as u32)
    }

    fn exec(&mut self, va: u32) -> usize {
        self.push(asm::OP_EXEC, va, 0, false)
    }

    fn exec_faulting(&mut self, va: u32) -> usize {
        self.push(asm::OP_EXEC, va, 0, true)
    }

    fn invlpg(&mut self, va: u32) -> usize {
        self.push(asm::OP_INVLPG, va, 0, false)
    }

    fn cr0(&mut self, value: u32) -> usize {
        self.push(asm::OP_CR0, value, 0, false)
    }

    fn cr3(&mut self, value: u64) -> usize {
        self.push(asm::OP_CR3, value as u32, 0, false)
    }

    /// Runs the ops in 32-bit protected mode and records what came of them.
    fn run(&mut self) {
        let area = AREA.0.get();
        {
            // SAFETY: one CPU; no 32-bit code is running, nothing else holds the area.
            let area = unsafe { &mut *area };
            area.ops[..self.len].copy_from_slice(&self.ops[..self.len]);
            area.ops[self.len] = Op::END;
            let context = &mut area.context;
            context.long_cr0 = read_cr0();
            context.long_cr3 = read_cr3();
            context.long_cr4 = read_cr4();
            // SAFETY: reading IA32_EFER, which exists in long mode.
            context.long_efer = unsafe { rdmsr(IA32_EFER) } & !EFER_LMA;
        }
        // SAFETY: the context is filled in (`init_area` and above) and lives in the image,
        // which every hierarchy of this program identity-maps; the ops keep the interpreter
        // mapped; the runtime runs with interrupts disabled.
        unsafe {
            let context = &raw mut (*area).context;
            asm::run(context, phys(context as u64));
        }
        for (i, op) in self.ops[..self.len].iter_mut().enumerate() {
            // SAFETY: the 32-bit code is done with the area.
            *op = unsafe { (&raw const (*area).ops[i]).read_volatile() };
        }
    }

    fn faulted(&self, i: usize) -> bool {
        self.ops[i].faulted != 0
    }

    /// What an op read, or 1 << 32 | its outcome when an exception interrupted it.
    fn value(&self, i: usize) -> u64 {
        if self.faulted(i) {
            1 << 32 | self.outcome(i)
        } else {
            u64::from(self.ops[i].out)
        }
    }

    /// 0 when the op completed, else the vector and the error code: `vector << 8 | error`.
    fn outcome(&self, i: usize) -> u64 {
        let op = &self.ops[i];
        if op.faulted != 0 {
            u64::from(op.vector) << 8 | u64::from(op.error)
        } else {
            0
        }
    }

    fn cr2(&self, i: usize) -> u64 {
        u64::from(self.ops[i].cr2)
    }

    /// An entry read by op `i`: its flag `bit` (0 or 1).
    fn flag(&self, i: usize, bit: u64) -> u8 {
        u8::from(!self.faulted(i) && u64::from(self.ops[i].out) & bit != 0)
    }

    /// How op `i` ended, for printing: the value read, `ok`, or the exception.
    fn shown(&self, i: usize) -> Shown {
        let op = self.ops[i];
        Shown {
            read: op.kind == asm::OP_READ,
            op,
        }
    }

    /// `<mode> <case>`, how the case's lines and checks begin.
    fn title(&self) -> Title {
        Title(self.mode, self.case)
    }

    /// Checks that `got` is `want`, as `<mode> <case>: <what>`.
    fn expect(&self, report: &mut Report, what: &str, got: u64, want: u64) {
        report.expect_eq(format_args!("{}: {what}", self.title()), got, want);
    }

    /// [`Session::expect`] for each `(what, got, want)`.
    fn expect_all(&self, report: &mut Report, checks: &[(&str, u64, u64)]) {
        for &(what, got, want) in checks {
            self.expect(report, what, got, want);
        }
    }

    /// Checks that exactly the ops expected to fault did (the mode switch among them).
    fn check_exceptions(&self, report: &mut Report) {
        let wrong = (0..self.len).find(|&i| self.faulted(i) != (self.faulting >> i & 1 != 0));
        let i = wrong.unwrap_or(0);
        report.check(
            format_args!(
                "{}: op {i} (kind {}) ended with {}",
                self.title(),
                self.ops[i].kind,
                self.shown(i)
            ),
            wrong.is_none(),
        );
    }
}

/// A mode and a case, printed `<mode> <case>`.
#[derive(Debug, Clone, Copy)]
struct Title(Mode, &'static str);

impl fmt::Display for Title {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.name(), self.1)
    }
}

/// How an op ended, as printed.
#[derive(Debug, Clone, Copy)]
struct Shown {
    read: bool,
    op: Op,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = &self.op;
        if op.faulted != 0 {
            let vector = u64::from(op.vector);
            write!(f, "{}({:#x})", trap::mnemonic(vector), op.error)
        } else if self.read {
            write!(f, "{:#x}", op.out)
        } else {
            write!(f, "ok")
        }
    }
}

/// CR0 in 32-bit protected mode: long mode's (PE, PG, WP among them).
fn legacy_cr0() -> u32 {
    read_cr0() as u32
}

/// A #PF with `error`, as [`Session::outcome`] gives it.
fn page_fault(error: u32) -> u64 {
    trap::PAGE_FAULT << 8 | u64::from(error)
}

/// A 4-KiB page: its translation, A after a read in the PTE and the PDE, D after a write in the
/// PTE only.
fn small_page(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    let (pattern, written) = (mode.tag() | 0x0401, mode.tag() | 0x0402);
    let frame = frame_with(0, pattern);
    space.map(SMALL_PAGE, frame, SIZE_4K, RW);
    let (pte, pde) = (space.entry(SMALL_PAGE, 1), space.entry(SMALL_PAGE, 2));
    let mut s = Session::new(space, machine, "4k");
    let read = s.read(SMALL_PAGE);
    let pte_read = s.read_entry(pte);
    let pde_read = s.read_entry(pde);
    s.write(SMALL_PAGE + 4, written);
    let pte_write = s.read_entry(pte);
    let pde_write = s.read_entry(pde);
    s.run();
    s.check_exceptions(report);
    let stored = peek(frame + 4);
    out!(
        report,
        "{}: read={} after-read pte a={} d={} pde a={} after-write pte a={} d={} pde d={} frame+4={stored:#x}",
        s.title(),
        s.shown(read),
        s.flag(pte_read, A),
        s.flag(pte_read, D),
        s.flag(pde_read, A),
        s.flag(pte_write, A),
        s.flag(pte_write, D),
        s.flag(pde_write, D),
    );
    s.expect_all(
        report,
        &[
            ("translation", s.value(read), pattern.into()),
            ("PTE A, D after a read", s.value(pte_read) & (A | D), A),
            ("PDE A after a read", s.value(pde_read) & A, A),
            (
                "PTE A, D after a write",
                s.value(pte_write) & (A | D),
                A | D,
            ),
            ("no D in the PDE", s.value(pde_write) & D, 0),
            ("write reaches the frame", stored.into(), written.into()),
        ],
    );
}

/// A large page (4 MiB with CR4.PSE, 2 MiB under PAE) mapping the part of the image that
/// holds this mode's pair of [`LARGE_TARGETS`]: its translation, then A and D in the PDE.
fn large_page(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    let (size, case) = mode.large();
    let (pattern, written) = (mode.tag() | 0x0403, mode.tag() | 0x0404);
    let slot = usize::from(mode == Mode::Pae);
    // SAFETY: only this function uses the targets, and not concurrently.
    let target = unsafe { &raw mut LARGE_TARGETS[slot] };
    // SAFETY: as above.
    unsafe { target.write_volatile([pattern, 0]) };
    let target_pa = phys(target as u64);
    let base = target_pa & !(size - 1);
    let va = LARGE_PAGE + (target_pa - base) as u32;
    space.map(LARGE_PAGE, base, size, RW);
    let pde = space.entry(LARGE_PAGE, 2);
    let mut s = Session::new(space, machine, case);
    let read = s.read(va);
    let pde_read = s.read_entry(pde);
    s.write(va + 4, written);
    let pde_write = s.read_entry(pde);
    s.run();
    s.check_exceptions(report);
    // SAFETY: as above.
    let stored = unsafe { target.read_volatile() }[1];
    out!(
        report,
        "{}: read={} after-read pde ps={} a={} d={} after-write pde a={} d={} target+4={stored:#x}",
        s.title(),
        s.shown(read),
        s.flag(pde_read, PS),
        s.flag(pde_read, A),
        s.flag(pde_read, D),
        s.flag(pde_write, A),
        s.flag(pde_write, D),
    );
    s.expect_all(
        report,
        &[
            ("translation", s.value(read), pattern.into()),
            ("PDE A, D after a read", s.value(pde_read) & (A | D), A),
            (
                "PDE A, D after a write",
                s.value(pde_write) & (A | D),
                A | D,
            ),
            ("write reaches the frame", stored.into(), written.into()),
        ],
    );
}

/// A read through a not-present PTE and a write through a not-present PDE.
fn not_present(report: &mut Report, machine: &Machine, space: &Space) {
    space.set(NOT_PRESENT, 1, 0);
    space.set(NO_PDE, 2, 0);
    let mut s = Session::new(space, machine, "not-present");
    let read = s.read_faulting(NOT_PRESENT + 0x10);
    let write = s.write_faulting(NO_PDE + 0x20, 1);
    s.run();
    s.check_exceptions(report);
    out!(
        report,
        "{}: read pte={} cr2={:#x} write pde={} cr2={:#x}",
        s.title(),
        s.shown(read),
        s.cr2(read),
        s.shown(write),
        s.cr2(write),
    );
    s.expect_all(
        report,
        &[
            ("read, PTE not present", s.outcome(read), page_fault(0)),
            ("read: CR2", s.cr2(read), (NOT_PRESENT + 0x10).into()),
            ("write, PDE not present", s.outcome(write), page_fault(PF_W)),
            ("write: CR2", s.cr2(write), (NO_PDE + 0x20).into()),
        ],
    );
}

/// A ring-0 write to a read-only page: #PF with CR0.WP = 1, done with CR0.WP = 0.
fn write_protect(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    let (old, new) = (mode.tag() | 0x0501, mode.tag() | 0x0502);
    space.map(READ_ONLY, frame_with(8, old), SIZE_4K, 0);
    let cr0 = legacy_cr0();
    let mut s = Session::new(space, machine, "cr0.wp");
    s.cr0(cr0 | CR0_WP);
    let denied = s.write_faulting(READ_ONLY + 8, new);
    let kept = s.read(READ_ONLY + 8);
    s.cr0(cr0 & !CR0_WP);
    let allowed = s.write(READ_ONLY + 8, new);
    let stored = s.read(READ_ONLY + 8);
    s.cr0(cr0);
    s.run();
    s.check_exceptions(report);
    out!(
        report,
        "{}: wp=1 write={} cr2={:#x} value={}; wp=0 write={} value={}",
        s.title(),
        s.shown(denied),
        s.cr2(denied),
        s.shown(kept),
        s.shown(allowed),
        s.shown(stored),
    );
    s.expect_all(
        report,
        &[
            ("wp=1 write", s.outcome(denied), page_fault(PF_P | PF_W)),
            ("wp=1 write: CR2", s.cr2(denied), (READ_ONLY + 8).into()),
            ("wp=1 value kept", s.value(kept), old.into()),
            ("wp=0 write", s.outcome(allowed), 0),
            ("wp=0 value written", s.value(stored), new.into()),
        ],
    );
}

/// Instruction fetches: from an executable page, from a not-present page (I/D only under PAE
/// with NXE), from an XD page (PAE with NXE).
fn fetches(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    space.map(RET_PAGE, frame_with(0, RET), SIZE_4K, RW);
    space.set(NOT_PRESENT, 1, 0);
    let xd = mode == Mode::Pae && machine.nx;
    if xd {
        space.map(XD_PAGE, frame_with(0, RET), SIZE_4K, RW | XD);
    }
    let mut s = Session::new(space, machine, "fetch");
    let ret = s.exec(RET_PAGE);
    let absent = s.exec_faulting(NOT_PRESENT + 0x30);
    let denied = xd.then(|| s.exec_faulting(XD_PAGE));
    s.run();
    s.check_exceptions(report);
    let id = if xd { PF_ID } else { 0 };
    out!(
        report,
        "{}: executable={} not-present={} cr2={:#x}",
        s.title(),
        s.shown(ret),
        s.shown(absent),
        s.cr2(absent),
    );
    s.expect_all(
        report,
        &[
            ("executable", s.outcome(ret), 0),
            ("not present", s.outcome(absent), page_fault(id)),
            (
                "not present: CR2",
                s.cr2(absent),
                (NOT_PRESENT + 0x30).into(),
            ),
        ],
    );
    match denied {
        Some(denied) => {
            out!(
                report,
                "{}: xd={} cr2={:#x}",
                s.title(),
                s.shown(denied),
                s.cr2(denied),
            );
            s.expect_all(
                report,
                &[
                    ("XD", s.outcome(denied), page_fault(PF_P | PF_ID)),
                    ("XD: CR2", s.cr2(denied), XD_PAGE.into()),
                ],
            );
        }
        None if mode == Mode::Pae => {
            out!(
                report,
                "{}: CPUID.80000001H:EDX.NX[20] clear, no XD",
                s.title()
            );
        }
        None => {}
    }
}

/// PAE: a PTE with bit 62 set, reserved in PAE entries.
fn reserved_bit(report: &mut Report, machine: &Machine, space: &Space) {
    let frame = frame_with(0, space.mode.tag() | 0x0601);
    space.map(RESERVED, frame, SIZE_4K, RW | PAE_RESERVED_BIT);
    let mut s = Session::new(space, machine, "reserved bit 62");
    let read = s.read_faulting(RESERVED + 0x40);
    s.run();
    s.check_exceptions(report);
    let without_p = s.outcome(read) & !u64::from(PF_P);
    out!(
        report,
        "{}: read={}(error without P {:#x}) cr2={:#x}",
        s.title(),
        trap::mnemonic(without_p >> 8),
        without_p & 0xFF,
        s.cr2(read),
    );
    s.expect_all(
        report,
        &[
            ("error code without P", without_p, page_fault(PF_RSVD)),
            ("CR2", s.cr2(read), (RESERVED + 0x40).into()),
        ],
    );
    // The SDM sets P with RSVD ("bit 3 ... can be set only if bit 0 is also set"); QEMU 7.2
    // TCG does not.
    if machine.strict {
        out!(report, "{} (strict): read={}", s.title(), s.shown(read));
        s.expect(
            report,
            "error code",
            s.outcome(read),
            page_fault(PF_P | PF_RSVD),
        );
    }
}

/// A PTE rewritten by the 32-bit code: visible after INVLPG of the page (`by_invlpg`) or a CR3
/// load, and with `strict=1` not before.
fn rewritten_pte(
    report: &mut Report,
    machine: &Machine,
    space: &Space,
    case: &'static str,
    va: u32,
    by_invlpg: bool,
) {
    let mode = space.mode;
    let (first, second) = (mode.tag() | 0x0701, mode.tag() | 0x0702);
    let (old, new) = (frame_with(0, first), frame_with(0, second));
    space.map(va, old, SIZE_4K, RW);
    let pte = space.entry(va, 1);
    let mut s = Session::new(space, machine, case);
    let before = s.read(va);
    s.write_entry(pte, new | P | RW);
    let stale = s.read(va);
    if by_invlpg {
        s.invlpg(va);
    } else {
        s.cr3(space.root);
    }
    let after = s.read(va);
    s.run();
    s.check_exceptions(report);
    out!(
        report,
        "{}: before={} after={}",
        s.title(),
        s.shown(before),
        s.shown(after),
    );
    s.expect_all(
        report,
        &[
            ("first translation", s.value(before), first.into()),
            ("the rewritten PTE is used", s.value(after), second.into()),
        ],
    );
    if machine.strict {
        let shown = s.shown(stale);
        out!(
            report,
            "{} (strict): rewritten-not-flushed={shown}",
            s.title()
        );
        s.expect(
            report,
            "stale before the flush",
            s.value(stale),
            first.into(),
        );
    }
}

/// PAE: a PDPTE rewritten in memory is not used until the next CR3 load, INVLPG of the address
/// notwithstanding (the PDPTEs are registers, §5.4.1).
fn rewritten_pdpte(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    let (first, second) = (mode.tag() | 0x0801, mode.tag() | 0x0802);
    space.map(PDPTE_PAGE, frame_with(0, first), SIZE_4K, RW);
    // A second page directory and page table mapping PDPTE_PAGE to another frame.
    let (pd, pt) = (paging::alloc_frame(), paging::alloc_frame());
    let index = |level| mode.index(u64::from(PDPTE_PAGE), level) * mode.entry_bytes();
    mode.write(pd + index(2), pt | P | RW);
    mode.write(pt + index(1), frame_with(0, second) | P | RW);
    let pdpte = space.entry(PDPTE_PAGE, 3);
    let mut s = Session::new(space, machine, "pdpte");
    let before = s.read(PDPTE_PAGE);
    s.write_entry(pdpte, pd | P);
    s.invlpg(PDPTE_PAGE);
    let kept = s.read(PDPTE_PAGE);
    s.cr3(space.root);
    let after = s.read(PDPTE_PAGE);
    s.run();
    s.check_exceptions(report);
    out!(
        report,
        "{}: before={} after-cr3-load={}",
        s.title(),
        s.shown(before),
        s.shown(after),
    );
    s.expect_all(
        report,
        &[
            ("first translation", s.value(before), first.into()),
            ("used after a CR3 load", s.value(after), second.into()),
        ],
    );
    if machine.strict {
        let shown = s.shown(kept);
        out!(
            report,
            "{} (strict): rewritten-after-invlpg={shown}",
            s.title()
        );
        s.expect(
            report,
            "register kept until the CR3 load",
            s.value(kept),
            first.into(),
        );
    }
}

/// Two hierarchies loaded in turn: each gives its own translation of one address.
fn address_spaces(report: &mut Report, machine: &Machine, space: &Space) {
    let mode = space.mode;
    let other = Space::new(mode, machine.identity_end);
    let (mine, theirs) = (mode.tag() | 0x0901, mode.tag() | 0x0902);
    space.map(SWITCH_PAGE, frame_with(0, mine), SIZE_4K, RW);
    other.map(SWITCH_PAGE, frame_with(0, theirs), SIZE_4K, RW);
    let mut s = Session::new(space, machine, "address-spaces");
    let first = s.read(SWITCH_PAGE);
    s.cr3(other.root);
    let second = s.read(SWITCH_PAGE);
    s.cr3(space.root);
    let third = s.read(SWITCH_PAGE);
    s.run();
    s.check_exceptions(report);
    out!(
        report,
        "{}: first={} second={} first-again={}",
        s.title(),
        s.shown(first),
        s.shown(second),
        s.shown(third),
    );
    s.expect_all(
        report,
        &[
            ("first", s.value(first), mine.into()),
            ("second", s.value(second), theirs.into()),
            ("first again", s.value(third), mine.into()),
        ],
    );
}

fn run_mode(report: &mut Report, machine: &Machine, mode: Mode) {
    let space = Space::new(mode, machine.identity_end);
    small_page(report, machine, &space);
    large_page(report, machine, &space);
    not_present(report, machine, &space);
    write_protect(report, machine, &space);
    fetches(report, machine, &space);
    if mode == Mode::Pae {
        reserved_bit(report, machine, &space);
    }
    rewritten_pte(report, machine, &space, "invlpg", INVLPG_PAGE, true);
    rewritten_pte(report, machine, &space, "cr3-load", RELOAD_PAGE, false);
    if mode == Mode::Pae {
        rewritten_pdpte(report, machine, &space);
    }
    address_spaces(report, machine, &space);
}

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("cpu-paging-legacy");
    let Some(strict) = cputests::args::number(boot.cmdline(), "strict", 0) else {
        out!(report, "usage: [strict=0|1]");
        rt::exit(EXIT_USAGE);
    };
    let edx = rt::arch::cpuid(1, 0).edx;
    let (pse, pae, pge) = (
        edx & (1 << 3) != 0,
        edx & (1 << 6) != 0,
        edx & (1 << 13) != 0,
    );
    let nx = rt::arch::cpuid(0x8000_0001, 0).edx & (1 << 20) != 0;
    out!(
        report,
        "cpuid: pse={} pae={} pge={} nx={}",
        u8::from(pse),
        u8::from(pae),
        u8::from(pge),
        u8::from(nx)
    );
    let identity_end = rt::image_phys_range().1.next_multiple_of(SIZE_4M);
    assert!(
        identity_end <= u64::from(SMALL_PAGE),
        "the image reaches the test pages"
    );
    let machine = Machine {
        nx,
        pge,
        strict: strict == 1,
        identity_end,
    };
    init_area();
    report.check(format_args!("CPUID.01H:EDX.PSE[3] clear"), pse);
    if pse {
        run_mode(&mut report, &machine, Mode::Paging32);
    }
    report.check(format_args!("CPUID.01H:EDX.PAE[6] clear"), pae);
    if pae {
        run_mode(&mut report, &machine, Mode::Pae);
    }
    report.finish()
}
