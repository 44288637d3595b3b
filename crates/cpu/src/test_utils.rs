//! Test doubles: a bus with RAM and a port log, and helpers that run a few instruction bytes
//! in a ready-made 64-bit, 32-bit or real-mode environment.

use std::collections::VecDeque;

use x86::Hpa;
use x86::reg::{cr0, cr4, efer};

use crate::Cpu;
use crate::bus::{AccessSize, Bus, VirtualTime};
use crate::error::StopReason;
use crate::fault::{Exc, Fault};
use crate::state::{Seg, Segment, ar};
use x86::Hfn;

/// A golden-table row: (bytes, disassembly, RAX in, RBX/RCX in, RAX out, status flags out).
pub type FlagCase = (&'static [u8], &'static str, u64, u64, u64, u64);

/// RAM size of the test bus.
pub const RAM: usize = 8 << 20;
/// Where test code is placed.
pub const CODE: u64 = 0x10_0000;
/// Initial stack pointer.
pub const STACK_TOP: u64 = 0x18_0000;
/// 4-level page tables: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000 (2-MiB identity pages
/// for the first GiB).
pub const PML4: u64 = 0x1000;

/// RAM, a port log, an interrupt queue.
#[derive(Debug)]
pub struct TestBus {
    pub ram: Vec<u8>,
    pub port_writes: Vec<(u16, u32)>,
    pub mmio_writes: Vec<(u64, u64)>,
    /// The virtual time of every MMIO read and write, in order.
    pub mmio_times: Vec<u64>,
    pub irqs: VecDeque<u8>,
    pub stop: bool,
    /// What MOV to CR8 wrote (no priorities are applied to `irqs`).
    pub cr8: u8,
}

impl TestBus {
    pub fn new() -> Self {
        Self {
            ram: vec![0; RAM],
            port_writes: Vec::new(),
            mmio_writes: Vec::new(),
            mmio_times: Vec::new(),
            irqs: VecDeque::new(),
            stop: false,
            cr8: 0,
        }
    }

    pub fn load(&mut self, at: u64, bytes: &[u8]) {
        self.ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    pub fn read_u64(&self, at: u64) -> u64 {
        let a = at as usize;
        u64::from_le_bytes(self.ram[a..a + 8].try_into().unwrap())
    }

    pub fn write_u64(&mut self, at: u64, v: u64) {
        self.load(at, &v.to_le_bytes());
    }
}

impl Bus for TestBus {
    fn ram(&self) -> &[u8] {
        &self.ram
    }
    fn ram_mut(&mut self) -> &mut [u8] {
        &mut self.ram
    }
    fn ram_offset(&self, frame: Hfn) -> Option<usize> {
        let off = (frame.raw() as usize).checked_mul(4096)?;
        (off < self.ram.len()).then_some(off)
    }
    fn mmio_read(&mut self, _addr: Hpa, _size: AccessSize, now: VirtualTime) -> u64 {
        self.mmio_times.push(now.ticks());
        u64::MAX
    }
    fn mmio_write(&mut self, addr: Hpa, _size: AccessSize, value: u64, now: VirtualTime) {
        self.mmio_times.push(now.ticks());
        self.mmio_writes.push((addr.raw(), value));
    }
    fn io_in(&mut self, port: u16, _size: AccessSize, _now: VirtualTime) -> u32 {
        u32::from(port) | 0xab00_0000
    }
    fn io_out(&mut self, port: u16, _size: AccessSize, value: u32, _now: VirtualTime) {
        self.port_writes.push((port, value));
        if port == 0xf4 {
            self.stop = true;
        }
    }
    fn has_interrupt(&mut self, _now: VirtualTime) -> bool {
        !self.irqs.is_empty()
    }
    fn interrupt_horizon(&self, now: VirtualTime) -> VirtualTime {
        if self.irqs.is_empty() {
            VirtualTime::from_ticks(u64::MAX)
        } else {
            now
        }
    }
    fn acknowledge_interrupt(&mut self, _now: VirtualTime) -> Option<u8> {
        self.irqs.pop_front()
    }
    fn stop_requested(&self) -> bool {
        self.stop
    }
    fn cr8(&mut self, _now: VirtualTime) -> u8 {
        self.cr8
    }
    fn set_cr8(&mut self, class: u8, _now: VirtualTime) {
        self.cr8 = class;
    }
}

/// Identity-maps the first GiB with 2-MiB pages (RW, user) and returns the CR3 value.
pub fn identity_map(bus: &mut TestBus) -> u64 {
    bus.write_u64(PML4, 0x2000 | 7);
    bus.write_u64(0x2000, 0x3000 | 7);
    for i in 0..512u64 {
        bus.write_u64(0x3000 + 8 * i, (i << 21) | 0x87);
    }
    PML4
}

/// Makes the pages of [`identity_map`] supervisor pages (U/S = 0), so that accesses at CPL 0
/// may use the data pages (`tlb::DataPages` holds no supervisor access to a user page).
pub fn supervisor_pages(bus: &mut TestBus) {
    bus.write_u64(PML4, 0x2000 | 3);
    bus.write_u64(0x2000, 0x3000 | 3);
    for i in 0..512u64 {
        bus.write_u64(0x3000 + 8 * i, (i << 21) | 0x83);
    }
}

/// A CPU in 64-bit mode, CPL 0, flat segments, identity paging, RSP = [`STACK_TOP`],
/// RIP = [`CODE`].
pub fn long_mode(bus: &mut TestBus) -> Cpu {
    let mut cpu = Cpu::new();
    cpu.cr3 = identity_map(bus);
    cpu.cr0 = cr0::PE | cr0::PG | cr0::ET;
    cpu.cr4 = cr4::PAE;
    cpu.efer = efer::LME | efer::LMA;
    for s in Seg::ALL {
        cpu.seg[s as usize] = Segment::flat32(0x10, false, 0);
    }
    let mut cs = Segment::flat32(0x08, true, 0);
    cs.ar = (cs.ar & !ar::DB) | ar::L;
    cpu.seg[Seg::Cs as usize] = cs;
    cpu.gpr = [0; 16];
    cpu.gpr[4] = STACK_TOP;
    cpu.rip = CODE;
    cpu.flags.set_bits(2);
    cpu.update_mode();
    cpu
}

/// Runs `bytes` followed by HLT in 64-bit mode; returns the CPU and the bus.
pub fn run_bytes64(bytes: &[u8], setup: impl FnOnce(&mut Cpu)) -> (Cpu, TestBus) {
    let mut bus = TestBus::new();
    let mut code = bytes.to_vec();
    code.push(0xf4);
    bus.load(CODE, &code);
    let mut cpu = long_mode(&mut bus);
    setup(&mut cpu);
    let r = cpu.run(&mut bus, 100_000);
    assert_eq!(r, Ok(StopReason::Halted), "rip {:#x}", cpu.rip);
    (cpu, bus)
}

/// Runs `bytes` in 64-bit mode until the first fault and returns its vector.
pub fn run_bytes64_fault(bytes: &[u8], setup: impl FnOnce(&mut Cpu)) -> u8 {
    first_fault(bytes, setup).vector
}

/// Runs `bytes` in 64-bit mode until the first fault.
pub fn first_fault(bytes: &[u8], setup: impl FnOnce(&mut Cpu)) -> Fault {
    let mut bus = TestBus::new();
    let mut code = bytes.to_vec();
    code.push(0xf4);
    bus.load(CODE, &code);
    let mut cpu = long_mode(&mut bus);
    setup(&mut cpu);
    cpu.icache.attach(&bus);
    for _ in 0..10_000 {
        match cpu.step(&mut bus) {
            Ok(()) => assert!(!cpu.halted, "no fault before HLT"),
            Err(Exc::Fault(f)) => return f,
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("no fault");
}

/// Where [`install_tables`] puts the GDT, the IDT and the 64-bit TSS.
pub const GDT: u64 = 0x5000;
pub const TSS: u64 = 0x6000;
pub const IDT: u64 = 0x7000;
/// RSP0 and IST1 in the TSS.
pub const RSP0: u64 = 0x9000;
pub const IST1: u64 = 0xa000;

/// Selectors of the standard GDT.
pub const KCODE64: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const KCODE32: u16 = 0x18;
pub const UDATA: u16 = 0x28 | 3;
pub const UCODE64: u16 = 0x30 | 3;
pub const TSS_SEL: u16 = 0x38;

/// Writes a GDT (null, 64-bit kernel code, kernel data, 32-bit kernel code, -, user data,
/// 64-bit user code, 64-bit TSS) and a 64-bit TSS, and loads GDTR, TR and IDTR (256 gates,
/// all not present).
pub fn install_tables(cpu: &mut Cpu, bus: &mut TestBus) {
    let gdt: [u64; 7] = [
        0,
        0x00af_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0x00cf_9a00_0000_ffff,
        0,
        0x00cf_f200_0000_ffff,
        0x00af_fa00_0000_ffff,
    ];
    for (i, d) in gdt.iter().enumerate() {
        bus.write_u64(GDT + 8 * i as u64, *d);
    }
    let tss_low = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89 << 40) | (((TSS >> 24) & 0xff) << 56);
    bus.write_u64(GDT + 0x38, tss_low);
    bus.write_u64(GDT + 0x40, TSS >> 32);
    bus.write_u64(TSS + 4, RSP0);
    bus.write_u64(TSS + 0x24, IST1);
    cpu.gdtr = crate::DescriptorTable {
        base: GDT,
        limit: 0x47,
    };
    cpu.idtr = crate::DescriptorTable {
        base: IDT,
        limit: 256 * 16 - 1,
    };
    cpu.tr = Segment {
        selector: TSS_SEL,
        base: TSS,
        limit: 0x67,
        ar: ar::P | 0xb,
    };
}

/// Writes a 64-bit IDT gate: `trap` selects a trap gate, `dpl` the gate DPL, `ist` the IST slot.
pub fn set_gate64(bus: &mut TestBus, vector: u8, handler: u64, trap: bool, dpl: u8, ist: u8) {
    let typ: u64 = if trap { 0xf } else { 0xe };
    let low = (handler & 0xffff)
        | (u64::from(KCODE64) << 16)
        | (u64::from(ist) << 32)
        | ((typ | 0x80 | (u64::from(dpl) << 5)) << 40)
        | (((handler >> 16) & 0xffff) << 48);
    let at = IDT + 16 * u64::from(vector);
    bus.write_u64(at, low);
    bus.write_u64(at + 8, handler >> 32);
}

/// A 64-bit environment with tables installed and `code` at [`CODE`] (no HLT appended).
pub fn long_env(code: &[u8]) -> (Cpu, TestBus) {
    let mut bus = TestBus::new();
    bus.load(CODE, code);
    let mut cpu = long_mode(&mut bus);
    cpu.seg[Seg::Cs as usize].selector = KCODE64;
    install_tables(&mut cpu, &mut bus);
    (cpu, bus)
}
