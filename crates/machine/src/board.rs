//! The PC board around the CPU: RAM, the port and MMIO decoders, the interrupt wiring, and the
//! implementation of [`cpu::Bus`].
//!
//! Physical address map: RAM from 0 to its size (at most 3 GiB, so that it never meets the
//! MMIO window below 4 GiB), the I/O APIC at 0xFEC00000 (82093AA datasheet §3.0), the local
//! APIC page at IA32_APIC_BASE (default 0xFEE00000, SDM Vol. 3A §11.4.1) while in xAPIC mode.
//! Other physical addresses are unbacked: reads return all ones, writes are dropped (what a
//! PC does with a master-aborted access).
//!
//! Ports (the AT map): PIC 0x20/0x21 and 0xA0/0xA1, PIT 0x40–0x43, system control port B
//! 0x61, CMOS/RTC 0x70/0x71, POST 0x80, system control port A 0x92, debug-exit 0xF4–0xF7,
//! COM1 0x3F8–0x3FF, ELCR 0x4D0/0x4D1, fw_cfg 0x510/0x511, PCI configuration 0xCF8–0xCFF
//! with the reset control register at 0xCF9 (byte accesses). Wide accesses to the
//! 8-bit devices are split into byte accesses to consecutive ports, as the ISA bus does;
//! unclaimed ports read all ones and ignore writes.
//!
//! Firmware tables: the MP configuration table ([`crate::mptable`]) at 0xF0000 describes the
//! processor, the I/O APIC (ID 1) and the interrupt wiring below.
//!
//! Interrupt wiring: ISA IRQ *n* goes to 8259 input *n* and to I/O APIC pin *n*, except that
//! the PIT's IRQ 0 goes to I/O APIC pin 2 (the interrupt source override every PC firmware
//! and QEMU describe). The 8259's INTR reaches the CPU through LINT0 in ExtINT mode while the
//! local APIC is globally enabled, directly otherwise. COM1 is IRQ 4.
//!
//! Time: one virtual tick (one retired instruction, see [`cpu::VirtualTime`]) is one
//! nanosecond of device time and one TSC tick ([`cpu::TSC_PER_TICK`] = 1): a 1-GHz machine
//! that retires one instruction per cycle. The APIC timer counts TSC ticks before its divider;
//! its TSC-deadline mode compares IA32_TSC_DEADLINE with the processor's TSC, the one RDTSC
//! reads, which WRMSR IA32_TSC moves by an offset the CPU reports
//! ([`cpu::Bus::tsc_offset_changed`]).
//!
//! The local APIC has x2APIC (IA32_APIC_BASE.EXTD, MSRs 0x800–0x8FF) and the TSC-deadline
//! timer (IA32_TSC_DEADLINE), which the CPU advertises in CPUID.01H:ECX bits 21 and 24; a test
//! here runs CPUID on the CPU soldered to this board and checks that the two agree.
//!
//! A device that reports [`devices::Unimplemented`] stops the run: the board records the
//! message and answers [`cpu::Bus::stop_requested`] with `true`.

use crate::mptable;
use cpu::bus::AccessSize;
use cpu::{Bus, MsrAccess, VirtualTime};
use devices::cmos::{self, Cmos};
use devices::debug_exit::{self, DebugExit};
use devices::fw_cfg::{self, FwCfg};
use devices::ioapic::{self, IoApic, IoApicState};
use devices::lapic::{self, ApicError, InterruptMessage, Lapic};
use devices::pci::PciHost;
use devices::pic::PicPair;
use devices::pit::{self, Pit};
use devices::system::{self, SystemEvent, SystemPorts};
use devices::uart::Uart;
use devices::{ByteSink, LatchedLine, Ns, Unimplemented};
use x86::{Hfn, Hpa};

/// COM1's I/O base.
pub const COM1: u16 = 0x3f8;
/// COM1's ISA IRQ.
const COM1_IRQ: u8 = 4;
/// The PIT's ISA IRQ.
const PIT_IRQ: u8 = 0;
/// The I/O APIC pin the PIT is wired to.
const PIT_IOAPIC_PIN: usize = 2;
/// The chipset's reset control register (PIIX3 datasheet §2.2.1.13, "RC"), a byte port inside
/// the PCI configuration window.
const RESET_CONTROL: u16 = 0xcf9;
/// RC bit 2: reset the CPU (a transition from 0 to 1 starts the reset).
const RESET_CONTROL_RST_CPU: u32 = 1 << 2;
/// RC bits that hold a value (1: system reset type, 2: reset CPU, 3: full reset).
const RESET_CONTROL_BITS: u8 = 0b1110;
/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// Largest RAM the board supports: everything stays below the 3-GiB PCI/MMIO hole.
pub const MAX_RAM: u64 = 3 << 30;
/// Smallest RAM: the legacy area plus 1 MiB for a kernel.
pub const MIN_RAM: u64 = 2 << 20;
/// The local APIC accepts x2APIC mode: the CPU's CPUID.01H:ECX[21] says so (checked by
/// `tests::cpuid_and_the_apic_agree`).
const LAPIC_X2APIC: bool = true;
/// Physical-address width the board decodes (CPUID.80000008H:EAX bits 7:0 should agree).
pub const PHYS_BITS: u8 = 39;

/// Why the board asked the CPU to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoardStop {
    /// The guest wrote the debug-exit port.
    DebugExit(debug_exit::ExitRequest),
    /// The guest asked for a reset (port 0x92 bit 0).
    Reset,
    /// A device was asked for something it does not implement.
    Unimplemented(String),
}

/// What the board has seen (counters for measurement, never consulted by the model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardCounters {
    /// Port reads and writes.
    pub port_io: u64,
    /// MMIO reads and writes (non-RAM physical accesses).
    pub mmio: u64,
    /// RDMSR/WRMSR of board MSRs.
    pub msr: u64,
    /// Interrupts acknowledged from the local APIC.
    pub apic_interrupts: u64,
    /// Interrupts acknowledged from the 8259 (ExtINT or direct).
    pub pic_interrupts: u64,
}

/// The devices and RAM of the board. `S` receives COM1's output.
#[derive(Debug)]
pub struct Board<S> {
    ram: Vec<u8>,
    uart: Uart<S, LatchedLine>,
    pit: Pit<LatchedLine>,
    pic: PicPair,
    ioapic: IoApic,
    lapic: Lapic,
    cmos: Cmos,
    system: SystemPorts,
    debug_exit: DebugExit,
    fw_cfg: FwCfg,
    pci: PciHost,
    /// The reset control register's value.
    reset_control: u8,
    stop: Option<BoardStop>,
    /// Device state changed since the interrupt lines were last evaluated.
    dirty: bool,
    /// Virtual tick at which a timer next needs attention.
    next_deadline: u64,
    /// Whether an interrupt was pending at the last evaluation.
    irq_pending: bool,
    counters: BoardCounters,
}

/// Device time (nanoseconds) at virtual time `now`.
fn ns(now: VirtualTime) -> Ns {
    Ns::new(now.ticks())
}

impl<S: ByteSink> Board<S> {
    /// A board with `ram_size` bytes of RAM (a multiple of 4 KiB between [`MIN_RAM`] and
    /// [`MAX_RAM`]) whose COM1 writes to `console`. The local APIC is left in virtual-wire
    /// mode, as firmware leaves it.
    pub fn new(ram_size: u64, console: S) -> Result<Self, crate::Error> {
        if !(MIN_RAM..=MAX_RAM).contains(&ram_size)
            || !ram_size.is_multiple_of(x86::addr::PAGE_SIZE)
        {
            return Err(crate::Error::RamSize(ram_size));
        }
        let ram_len = usize::try_from(ram_size).map_err(|_| crate::Error::RamSize(ram_size))?;
        let mut lapic = Lapic::new(0, PHYS_BITS, LAPIC_X2APIC);
        lapic.set_virtual_wire();
        let mut ram = vec![0; ram_len];
        let mp = mptable::build(
            lapic::DEFAULT_BASE.raw() as u32,
            lapic::VERSION as u8,
            ioapic::DEFAULT_BASE.raw() as u32,
            ioapic::VERSION as u8,
            PIT_IOAPIC_PIN as u8,
        );
        let at = mptable::FLOATING_POINTER as usize;
        // In range: RAM is at least MIN_RAM (2 MiB) and the table is a few hundred bytes.
        ram[at..at + mp.len()].copy_from_slice(&mp);
        let ioapic = IoApic::from_state(IoApicState {
            id: mptable::IOAPIC_ID,
            ..IoApicState::default()
        });
        Ok(Self {
            pic: firmware_pic(),
            ram,
            uart: Uart::new(console, LatchedLine::default()),
            pit: Pit::new(LatchedLine::default()),
            ioapic,
            lapic,
            cmos: Cmos::new(ram_size),
            system: SystemPorts::new(),
            debug_exit: DebugExit::new(),
            fw_cfg: FwCfg::new(ram_size, 1),
            pci: PciHost::new(),
            reset_control: 0,
            stop: None,
            dirty: true,
            next_deadline: 0,
            irq_pending: false,
            counters: BoardCounters::default(),
        })
    }

    /// RAM size in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram.len() as u64
    }

    /// What the board has seen so far.
    pub fn counters(&self) -> BoardCounters {
        self.counters
    }

    /// Why the board wants the run to stop, if it does.
    pub fn stop(&self) -> Option<&BoardStop> {
        self.stop.as_ref()
    }

    /// COM1's output sink.
    pub fn console_mut(&mut self) -> &mut S {
        self.uart.sink_mut()
    }

    /// Bytes typed on COM1's line (its receiver takes what fits; the rest is returned).
    pub fn serial_input<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let mut rest = bytes;
        while let Some((&b, tail)) = rest.split_first() {
            if !self.uart.can_receive() {
                break;
            }
            self.uart.receive(b);
            rest = tail;
        }
        self.dirty = true;
        rest
    }

    fn fail(&mut self, u: Unimplemented) {
        if self.stop.is_none() {
            log::warn!("board: {u}");
            self.stop = Some(BoardStop::Unimplemented(u.0.to_owned()));
        }
    }

    /// Delivers I/O APIC messages to the local APIC.
    fn deliver_all(&mut self, msgs: &[InterruptMessage]) {
        for m in msgs {
            if let Err(u) = self.lapic.deliver(m) {
                self.fail(u);
            }
        }
    }

    /// Propagates one ISA line to the PIC and the I/O APIC.
    fn sync_isa_line(&mut self, irq: u8, pin: usize, level: bool, edges: u32) {
        if edges > 0 {
            self.pic.set_irq(irq, false);
        }
        self.pic.set_irq(irq, level);
        let mut msgs = Vec::new();
        let mut out = |m| msgs.push(m);
        let r = if edges == 0 {
            self.ioapic.set_pin(pin, level, &mut out)
        } else if level {
            // Low then high again since the last look: one more rising edge.
            self.ioapic
                .set_pin(pin, false, &mut out)
                .and_then(|()| self.ioapic.set_pin(pin, true, &mut out))
        } else {
            // A pulse that is already over: edge-triggered entries still see it.
            self.ioapic
                .set_pin(pin, false, &mut out)
                .and_then(|()| self.ioapic.pulse_pin(pin, &mut out))
        };
        if let Err(u) = r {
            self.fail(u);
        }
        self.deliver_all(&msgs);
    }

    /// Brings the timers to `now` and the interrupt lines up to date.
    fn refresh(&mut self, now: VirtualTime) {
        let t = ns(now);
        self.pit.advance(t);
        if let Err(u) = self.lapic.advance(now.tsc()) {
            self.fail(u);
        }
        let pit_line = self.pit.irq_line_mut();
        let (level, edges) = (pit_line.level(), pit_line.take_rising_edges());
        self.sync_isa_line(PIT_IRQ, PIT_IOAPIC_PIN, level, edges);
        let uart_line = self.uart.irq_line_mut();
        let (level, edges) = (uart_line.level(), uart_line.take_rising_edges());
        self.sync_isa_line(COM1_IRQ, usize::from(COM1_IRQ), level, edges);

        self.irq_pending = self.interrupt_ready();
        self.next_deadline = self.next_timer_event(now).map_or(u64::MAX, |t| t.ticks());
        self.dirty = false;
    }

    /// Brings the board up to `now` before a guest access, so that a guest that polls
    /// (APIC IRR, PIC IRR, a status register) with interrupts disabled sees timers that
    /// expired meanwhile.
    fn catch_up(&mut self, now: VirtualTime) {
        if self.dirty || now.ticks() >= self.next_deadline {
            self.refresh(now);
        }
    }

    fn interrupt_ready(&self) -> bool {
        if self.lapic.hw_enabled() {
            self.lapic.pending_vector().is_some()
                || (self.lapic.accepts_extint() && self.pic.output())
        } else {
            self.pic.output()
        }
    }

    /// The next virtual time at which a timer (PIT channel 0, local APIC timer) changes
    /// something, if any is armed.
    pub fn next_timer_event(&self, now: VirtualTime) -> Option<VirtualTime> {
        let pit = self.pit.next_irq0_edge(ns(now)).map(|t| t.raw());
        // TSC = ticks × TSC_PER_TICK (= 1).
        let apic = self
            .lapic
            .next_timer_event(now.tsc())
            .map(|tsc| tsc / cpu::TSC_PER_TICK.max(1));
        let next = match (pit, apic) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(VirtualTime::from_ticks(next.max(now.ticks())))
    }

    /// Whether an interrupt could wake a halted CPU: some timer is armed and the path from it
    /// to the CPU is not masked at every stage. A timer firing into masks never wakes it.
    pub fn timer_can_wake(&self, now: VirtualTime) -> bool {
        let st = self.lapic.state();
        let apic_timer = self.lapic.next_timer_event(now.tsc()).is_some()
            && self.lapic.sw_enabled()
            && st.lvt[lapic::lvt::TIMER] & (1 << 16) == 0;
        let pit_armed = self.pit.next_irq0_edge(ns(now)).is_some();
        let pic_path = (!self.lapic.hw_enabled() || self.lapic.accepts_extint())
            && self.pic.state().master.imr & 1 == 0;
        let ioapic_path = self.lapic.sw_enabled()
            && self.ioapic.state().redirection[PIT_IOAPIC_PIN] & (1 << 16) == 0;
        apic_timer || (pit_armed && (pic_path || ioapic_path))
    }

    fn io_read_byte(&mut self, port: u16, now: VirtualTime) -> u8 {
        let t = ns(now);
        match port {
            COM1..=0x3ff => self.uart.read(port - COM1),
            0x20 | 0x21 | 0xa0 | 0xa1 => self.pic.read(port),
            0x40..=0x43 => self.pit.read(port - pit::BASE_PORT, t),
            system::PORT_B => {
                let out2 = self.pit.out(2, t);
                self.system.read(port, t, out2)
            }
            system::POST_PORT | system::PORT_A => self.system.read(port, t, false),
            cmos::INDEX_PORT | cmos::DATA_PORT => self.cmos.read(port, t),
            0x4d0 | 0x4d1 => self.pic.read_elcr(port),
            _ => 0xff,
        }
    }

    fn io_write_byte(&mut self, port: u16, value: u8, now: VirtualTime) {
        let t = ns(now);
        let r = match port {
            COM1..=0x3ff => {
                self.uart.write(port - COM1, value);
                Ok(())
            }
            0x20 | 0x21 | 0xa0 | 0xa1 => self.pic.write(port, value),
            0x40..=0x43 => self.pit.write(port - pit::BASE_PORT, value, t),
            system::POST_PORT | system::PORT_A | system::PORT_B => {
                match self.system.write(port, value) {
                    Ok(SystemEvent::Reset) => {
                        self.stop.get_or_insert(BoardStop::Reset);
                        Ok(())
                    }
                    Ok(SystemEvent::None) => {
                        self.pit.set_gate2(self.system.gate2(), t);
                        Ok(())
                    }
                    Err(u) => Err(u),
                }
            }
            cmos::INDEX_PORT | cmos::DATA_PORT => self.cmos.write(port, value),
            0x4d0 | 0x4d1 => self.pic.write_elcr(port, value),
            _ => Ok(()),
        };
        if let Err(u) = r {
            self.fail(u);
        }
    }

    fn apic_eoi(&mut self, vector: Option<u8>) {
        if let Some(v) = vector {
            let mut msgs = Vec::new();
            if let Err(u) = self.ioapic.eoi(v, &mut |m| msgs.push(m)) {
                self.fail(u);
            }
            self.deliver_all(&msgs);
        }
    }

    fn check_apic_base(&mut self) {
        if let Some(base) = self.lapic.mmio_base()
            && base.raw() < self.ram_size()
        {
            self.fail(Unimplemented("relocating the xAPIC page over RAM"));
        }
    }
}

impl<S: ByteSink> Bus for Board<S> {
    fn ram(&self) -> &[u8] {
        &self.ram
    }

    fn ram_mut(&mut self) -> &mut [u8] {
        &mut self.ram
    }

    fn ram_offset(&self, frame: Hfn) -> Option<usize> {
        let addr = frame.addr().raw();
        if addr < self.ram_size() {
            usize::try_from(addr).ok()
        } else {
            None
        }
    }

    fn mmio_read(&mut self, addr: Hpa, size: AccessSize, now: VirtualTime) -> u64 {
        // The devices decode addresses in the physical space they sit in: for the board, the
        // processor's bus.
        let addr = x86::Gpa::new(addr.raw());
        self.counters.mmio += 1;
        self.catch_up(now);
        self.dirty = true;
        if let Some(base) = self.lapic.mmio_base()
            && let Some(off) = addr.offset_from(base).filter(|&o| o < lapic::MMIO_SIZE)
        {
            return match self.lapic.mmio_read(off, size, now.tsc()) {
                Ok(v) => u64::from(v),
                Err(u) => {
                    self.fail(u);
                    0
                }
            };
        }
        if let Some(off) = addr
            .offset_from(ioapic::DEFAULT_BASE)
            .filter(|&o| o < ioapic::MMIO_SIZE)
        {
            return match self.ioapic.mmio_read(off, size) {
                Ok(v) => u64::from(v),
                Err(u) => {
                    self.fail(u);
                    0
                }
            };
        }
        devices_width_mask(size)
    }

    fn mmio_write(&mut self, addr: Hpa, size: AccessSize, value: u64, now: VirtualTime) {
        // The devices decode addresses in the physical space they sit in: for the board, the
        // processor's bus.
        let addr = x86::Gpa::new(addr.raw());
        self.counters.mmio += 1;
        self.catch_up(now);
        self.dirty = true;
        if let Some(base) = self.lapic.mmio_base()
            && let Some(off) = addr.offset_from(base).filter(|&o| o < lapic::MMIO_SIZE)
        {
            match self.lapic.mmio_write(off, size, value as u32, now.tsc()) {
                Ok(eoi) => self.apic_eoi(eoi),
                Err(u) => self.fail(u),
            }
            return;
        }
        if let Some(off) = addr
            .offset_from(ioapic::DEFAULT_BASE)
            .filter(|&o| o < ioapic::MMIO_SIZE)
        {
            let mut msgs = Vec::new();
            if let Err(u) = self
                .ioapic
                .mmio_write(off, size, value as u32, &mut |m| msgs.push(m))
            {
                self.fail(u);
            }
            self.deliver_all(&msgs);
        }
    }

    fn io_in(&mut self, port: u16, size: AccessSize, now: VirtualTime) -> u32 {
        self.counters.port_io += 1;
        self.catch_up(now);
        self.dirty = true;
        match port {
            debug_exit::PORT..=0xf7 => self.debug_exit.read(port - debug_exit::PORT, size),
            fw_cfg::SELECTOR_PORT | fw_cfg::DATA_PORT => self.fw_cfg.read(port, size),
            RESET_CONTROL if size == 1 => u32::from(self.reset_control),
            0xcf8..=0xcff => self.pci.read(port, size),
            _ => {
                let mut v = 0u32;
                for i in 0..u16::from(size.min(4)) {
                    v |= u32::from(self.io_read_byte(port.wrapping_add(i), now)) << (8 * i);
                }
                v
            }
        }
    }

    fn io_out(&mut self, port: u16, size: AccessSize, value: u32, now: VirtualTime) {
        self.counters.port_io += 1;
        self.catch_up(now);
        self.dirty = true;
        match port {
            debug_exit::PORT..=0xf7 => {
                self.debug_exit.write(port - debug_exit::PORT, size, value);
                if let Some(r) = self.debug_exit.request() {
                    self.stop.get_or_insert(BoardStop::DebugExit(r));
                }
            }
            fw_cfg::SELECTOR_PORT | fw_cfg::DATA_PORT => self.fw_cfg.write(port, size, value),
            RESET_CONTROL if size == 1 => {
                self.reset_control = (value as u8) & RESET_CONTROL_BITS;
                if value & RESET_CONTROL_RST_CPU != 0 {
                    self.stop.get_or_insert(BoardStop::Reset);
                }
            }
            0xcf8..=0xcff => self.pci.write(port, size, value),
            _ => {
                for i in 0..u16::from(size.min(4)) {
                    self.io_write_byte(port.wrapping_add(i), (value >> (8 * i)) as u8, now);
                }
            }
        }
    }

    fn has_interrupt(&mut self, now: VirtualTime) -> bool {
        self.catch_up(now);
        self.irq_pending
    }

    /// Until the next timer deadline nothing changes the answer of `has_interrupt` but a
    /// guest access to the board, which marks it dirty (the CPU asks again after any).
    fn interrupt_horizon(&self, now: VirtualTime) -> VirtualTime {
        if self.dirty || self.irq_pending || now.ticks() >= self.next_deadline {
            now
        } else {
            VirtualTime::from_ticks(self.next_deadline)
        }
    }

    fn take_nmi(&mut self) -> bool {
        self.lapic.take_nmi()
    }

    fn acknowledge_interrupt(&mut self, now: VirtualTime) -> Option<u8> {
        self.refresh(now);
        self.dirty = true;
        let from_pic = if self.lapic.hw_enabled() {
            self.lapic.accepts_extint()
        } else {
            true
        };
        if from_pic && self.pic.output() {
            self.counters.pic_interrupts += 1;
            Some(self.pic.acknowledge())
        } else if self.lapic.pending_vector().is_some() {
            self.counters.apic_interrupts += 1;
            Some(self.lapic.acknowledge())
        } else {
            None
        }
    }

    /// CR8 and the APIC's TPR are one register: CR8 = TPR[7:4] (SDM Vol. 3A §11.8.6).
    fn cr8(&mut self, now: VirtualTime) -> u8 {
        self.catch_up(now);
        self.lapic.tpr() >> 4
    }

    /// TPR[7:4] = CR8[3:0], TPR[3:0] = 0; the pending interrupt is re-evaluated against it.
    fn set_cr8(&mut self, class: u8, now: VirtualTime) {
        self.catch_up(now);
        self.lapic.set_tpr((class & 0xf) << 4);
        self.dirty = true;
    }

    fn rdmsr(&mut self, msr: u32, now: VirtualTime) -> MsrAccess {
        self.counters.msr += 1;
        self.catch_up(now);
        match msr {
            MSR_APIC_BASE => MsrAccess::Done(self.lapic.apic_base()),
            MSR_TSC_DEADLINE => MsrAccess::Done(self.lapic.tsc_deadline()),
            lapic::X2APIC_MSR_BASE..=lapic::X2APIC_MSR_LAST => {
                match self.lapic.rdmsr(msr, now.tsc()) {
                    Ok(v) => MsrAccess::Done(v),
                    Err(ApicError::GeneralProtection) => MsrAccess::Fault,
                    Err(ApicError::Unimplemented(u)) => {
                        self.fail(u);
                        MsrAccess::Done(0)
                    }
                }
            }
            _ => MsrAccess::NotMine,
        }
    }

    fn wrmsr(&mut self, msr: u32, value: u64, now: VirtualTime) -> MsrAccess {
        self.counters.msr += 1;
        self.catch_up(now);
        self.dirty = true;
        let r = match msr {
            MSR_APIC_BASE => {
                let r = self.lapic.set_apic_base(value).map(|()| None);
                self.check_apic_base();
                r
            }
            MSR_TSC_DEADLINE => self
                .lapic
                .set_tsc_deadline(value, now.tsc())
                .map(|()| None)
                .map_err(ApicError::from),
            lapic::X2APIC_MSR_BASE..=lapic::X2APIC_MSR_LAST => {
                self.lapic.wrmsr(msr, value, now.tsc())
            }
            _ => return MsrAccess::NotMine,
        };
        match r {
            Ok(eoi) => {
                self.apic_eoi(eoi);
                MsrAccess::Done(0)
            }
            Err(ApicError::GeneralProtection) => MsrAccess::Fault,
            Err(ApicError::Unimplemented(u)) => {
                self.fail(u);
                MsrAccess::Done(0)
            }
        }
    }

    /// The deadline timer compares with the processor's TSC: bring the APIC up to `now` on
    /// the old one, then move it (a deadline the new TSC has passed fires at once).
    fn tsc_offset_changed(&mut self, offset: u64, now: VirtualTime) {
        self.catch_up(now);
        self.dirty = true;
        if let Err(u) = self.lapic.set_tsc_offset(offset, now.tsc()) {
            self.fail(u);
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.is_some()
    }
}

/// The 8259 pair as PC firmware leaves it: initialized with the BIOS vector bases (0x08 and
/// 0x70), cascade on IR2, every input masked except the cascade, so that a kernel that never
/// touches the 8259 gets no stray ExtINT interrupts on exception vectors.
fn firmware_pic() -> PicPair {
    let mut pic = PicPair::new();
    let sequence = [
        (0x20, 0x11),
        (0x21, 0x08),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x70),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, 0xfb),
        (0xa1, 0xff),
    ];
    for (port, value) in sequence {
        // A fixed, valid ICW/OCW sequence: nothing here can be unimplemented.
        let r = pic.write(port, value);
        debug_assert!(r.is_ok());
    }
    pic
}

/// All ones of an access of `size` bytes.
fn devices_width_mask(size: AccessSize) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Console(Vec<u8>);

    impl ByteSink for Console {
        fn put(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }

    fn board() -> Board<Console> {
        Board::new(16 << 20, Console::default()).unwrap()
    }

    fn t(ticks: u64) -> VirtualTime {
        VirtualTime::from_ticks(ticks)
    }

    #[test]
    fn ram_size_limits() {
        assert!(Board::new(1 << 20, Console::default()).is_err());
        assert!(Board::new((16 << 20) + 1, Console::default()).is_err());
        assert!(Board::new(4 << 30, Console::default()).is_err());
        let b = board();
        assert_eq!(b.ram_offset(Hfn::new(0xfff)), Some(0xfff000));
        assert_eq!(b.ram_offset(Hfn::new(0x1000)), None);
    }

    #[test]
    fn firmware_leaves_an_mp_table_and_ioapic_id() {
        let mut b = board();
        assert_eq!(&b.ram()[0xf_0000..0xf_0004], b"_MP_");
        assert_eq!(&b.ram()[0xf_0010..0xf_0014], b"PCMP");
        b.mmio_write(Hpa::new(0xfec0_0000), 4, 0, t(0));
        assert_eq!(b.mmio_read(Hpa::new(0xfec0_0010), 4, t(0)), 1 << 24);
    }

    #[test]
    fn serial_output_and_debug_exit() {
        let mut b = board();
        for c in b"hi\n" {
            b.io_out(COM1, 1, u32::from(*c), t(0));
        }
        assert_eq!(b.uart.sink().0, b"hi\n");
        assert!(!b.stop_requested());
        b.io_out(0xf4, 4, 0x10, t(1));
        assert!(b.stop_requested());
        let Some(BoardStop::DebugExit(r)) = b.stop() else {
            panic!()
        };
        assert_eq!(r.status(), 0x21);
    }

    #[test]
    fn unclaimed_ports_pci_fw_cfg() {
        let mut b = board();
        assert_eq!(b.io_in(0x2f8, 1, t(0)), 0xff);
        assert_eq!(b.io_in(0x1234, 4, t(0)), 0xffff_ffff);
        b.io_out(0xcf8, 4, 0x8000_0000, t(0));
        assert_eq!(b.io_in(0xcfc, 2, t(0)), 0xffff);
        b.io_out(0x510, 2, 0, t(0));
        let sig: Vec<u8> = (0..4).map(|_| b.io_in(0x511, 1, t(0)) as u8).collect();
        assert_eq!(sig, b"QEMU");
        b.io_out(0x510, 2, 3, t(0));
        let ram: Vec<u8> = (0..8).map(|_| b.io_in(0x511, 1, t(0)) as u8).collect();
        assert_eq!(u64::from_le_bytes(ram.try_into().unwrap()), 16 << 20);
        b.io_out(0x80, 1, 0x12, t(0));
        assert!(!b.stop_requested());
        assert_eq!(b.mmio_read(Hpa::new(0xf000_0000), 4, t(0)), 0xffff_ffff);
    }

    #[test]
    fn word_access_to_byte_devices_is_split() {
        let mut b = board();
        b.io_out(COM1 + 3, 1, 0x80, t(0)); // DLAB
        b.io_out(COM1, 2, 0x0201, t(0));
        assert_eq!(b.io_in(COM1, 2, t(0)), 0x0201);
    }

    /// Remaps the PIC to 0x20, unmasks IRQ 0 and programs PIT channel 0 in mode 2.
    fn pic_and_pit(b: &mut Board<Console>, count: u16) {
        for (p, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x28),
            (0xa1, 0x02),
            (0xa1, 0x01),
        ] {
            b.io_out(p, 1, v, t(0));
        }
        b.io_out(0x21, 1, 0xfe, t(0));
        b.io_out(0x43, 1, 0x34, t(0));
        b.io_out(0x40, 1, u32::from(count & 0xff), t(0));
        b.io_out(0x40, 1, u32::from(count >> 8), t(0));
    }

    #[test]
    fn pit_interrupt_through_pic_and_lint0() {
        let mut b = board();
        pic_and_pit(&mut b, 1193); // ~1 ms
        // The mode-2 load raises OUT: that first edge is IRQ 0 at once.
        assert!(b.has_interrupt(t(10)));
        assert_eq!(b.acknowledge_interrupt(t(10)), Some(0x20));
        b.io_out(0x20, 1, 0x20, t(11)); // EOI
        assert!(!b.has_interrupt(t(12)));
        let next = b.next_timer_event(t(12)).unwrap();
        assert!(
            next.ticks() > 999_000 && next.ticks() < 1_000_100,
            "{next:?}"
        );
        assert!(b.timer_can_wake(next));
        assert!(!b.has_interrupt(t(next.ticks() - 1)));
        assert!(b.has_interrupt(next));
        assert_eq!(b.acknowledge_interrupt(next), Some(0x20));
        // Masked at the PIC: no wake-up source.
        b.io_out(0x21, 1, 0xff, next);
        assert!(!b.timer_can_wake(next));
    }

    #[test]
    fn pit_interrupt_through_ioapic() {
        let mut b = board();
        pic_and_pit(&mut b, 100);
        b.io_out(0x21, 1, 0xff, t(0)); // mask the PIC
        b.io_out(0xa1, 1, 0xff, t(0));
        b.mmio_write(Hpa::new(0xfec0_0000), 4, 0x14, t(0)); // pin 2 low dword
        b.mmio_write(Hpa::new(0xfec0_0010), 4, 0x31, t(0)); // vector 0x31, edge, unmasked
        let next = b.next_timer_event(t(1)).unwrap();
        assert!(b.has_interrupt(next));
        assert_eq!(b.acknowledge_interrupt(next), Some(0x31));
        assert_eq!(b.counters().apic_interrupts, 1);
        assert_eq!(b.counters().pic_interrupts, 0);
        b.mmio_write(Hpa::new(0xfee0_00b0), 4, 0, next); // EOI
        assert!(!b.has_interrupt(next));
    }

    #[test]
    fn apic_timer_and_msrs() {
        let mut b = board();
        assert_eq!(b.rdmsr(MSR_APIC_BASE, t(0)), MsrAccess::Done(0xfee0_0900));
        assert_eq!(b.rdmsr(0x802, t(0)), MsrAccess::Fault);
        assert_eq!(
            b.wrmsr(MSR_APIC_BASE, 0xfee0_0d00, t(0)),
            MsrAccess::Done(0)
        );
        assert_eq!(b.rdmsr(0x802, t(0)), MsrAccess::Done(0));
        assert_eq!(b.wrmsr(MSR_APIC_BASE, 0xfee0_0900, t(0)), MsrAccess::Fault);
        b.wrmsr(0x832, 0x4_0040, t(0)); // LVT timer: TSC deadline, vector 0x40
        b.wrmsr(MSR_TSC_DEADLINE, 5000, t(0));
        assert_eq!(b.next_timer_event(t(0)), Some(t(5000)));
        assert!(!b.has_interrupt(t(4999)));
        assert!(b.has_interrupt(t(5000)));
        assert_eq!(b.acknowledge_interrupt(t(5000)), Some(0x40));
        assert_eq!(b.rdmsr(0x1234, t(0)), MsrAccess::NotMine);
    }

    #[test]
    fn tsc_deadline_follows_the_processor_tsc() {
        let mut b = board();
        b.mmio_write(Hpa::new(0xfee0_0320), 4, 0x4_0041, t(0)); // LVT timer: deadline, 0x41
        // WRMSR IA32_TSC at tick 100 set the TSC to 1 000 000.
        b.tsc_offset_changed(1_000_000 - t(100).tsc(), t(100));
        assert_eq!(
            b.wrmsr(MSR_TSC_DEADLINE, 1_000_500, t(200)),
            MsrAccess::Done(0)
        );
        assert_eq!(
            b.rdmsr(MSR_TSC_DEADLINE, t(200)),
            MsrAccess::Done(1_000_500)
        );
        // The processor's TSC reads 1 000 500 at tick 600.
        assert_eq!(b.next_timer_event(t(200)), Some(t(600)));
        assert!(!b.has_interrupt(t(599)));
        assert!(b.has_interrupt(t(600)));
        assert_eq!(b.acknowledge_interrupt(t(600)), Some(0x41));
        assert_eq!(b.rdmsr(MSR_TSC_DEADLINE, t(601)), MsrAccess::Done(0));
        b.mmio_write(Hpa::new(0xfee0_00b0), 4, 0, t(602)); // EOI
        // A TSC write past an armed deadline fires it at once.
        b.wrmsr(MSR_TSC_DEADLINE, 2_000_000, t(700));
        assert!(!b.has_interrupt(t(701)));
        b.tsc_offset_changed(3_000_000, t(702));
        assert!(b.has_interrupt(t(702)));
        assert_eq!(b.acknowledge_interrupt(t(702)), Some(0x41));
        // Not in deadline mode: the MSR reads 0 and ignores writes, without #GP.
        b.mmio_write(Hpa::new(0xfee0_0320), 4, 0x41, t(703));
        assert_eq!(b.wrmsr(MSR_TSC_DEADLINE, 5, t(703)), MsrAccess::Done(0));
        assert_eq!(b.rdmsr(MSR_TSC_DEADLINE, t(703)), MsrAccess::Done(0));
    }

    /// Runs 32-bit protected-mode `code` (multiboot entry state, paging off, IF = 0) on a CPU
    /// soldered to a fresh board until HLT.
    fn run_on_board(code: &[u8]) -> (cpu::Cpu, Board<Console>) {
        let mut b = board();
        b.ram_mut()[0x10_0000..0x10_0000 + code.len()].copy_from_slice(code);
        let mut c = cpu::Cpu::new();
        c.set_multiboot_entry(0x10_0000, 0, 0);
        assert_eq!(c.run(&mut b, 1000), Ok(cpu::StopReason::Halted));
        (c, b)
    }

    #[test]
    fn cpuid_and_the_apic_agree() {
        #[rustfmt::skip]
        let code = [
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0x0f, 0xa2,                   // cpuid
            0x89, 0xce,                   // mov esi, ecx
            0xb9, 0x1b, 0x00, 0x00, 0x00, // mov ecx, IA32_APIC_BASE
            0x0f, 0x32,                   // rdmsr
            0x0d, 0x00, 0x04, 0x00, 0x00, // or eax, EXTD
            0x0f, 0x30,                   // wrmsr (x2APIC mode)
            0xb9, 0x32, 0x08, 0x00, 0x00, // mov ecx, 0x832 (x2APIC LVT timer)
            0xb8, 0x42, 0x00, 0x04, 0x00, // mov eax, 0x40042 (TSC deadline, vector 0x42)
            0x31, 0xd2,                   // xor edx, edx
            0x0f, 0x30,                   // wrmsr
            0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, IA32_TSC
            0xb8, 0x00, 0x00, 0x00, 0x10, // mov eax, 0x10000000
            0x0f, 0x30,                   // wrmsr
            0xb9, 0xe0, 0x06, 0x00, 0x00, // mov ecx, IA32_TSC_DEADLINE
            0xb8, 0x00, 0x01, 0x00, 0x10, // mov eax, 0x10000100
            0x0f, 0x30,                   // wrmsr
            0x0f, 0x31,                   // rdtsc
            0x89, 0xc7,                   // mov edi, eax
            0xf4,                         // hlt
        ];
        let (c, mut b) = run_on_board(&code);
        let ecx = c.gpr(cpu::Gpr::Rsi) as u32;
        // CPUID advertises x2APIC and the TSC-deadline timer, and the board honours both: the
        // EXTD write did not fault (no IDT: a #GP would have shut the CPU down).
        assert_eq!(ecx & (1 << 21) != 0, LAPIC_X2APIC);
        assert_ne!(ecx & (1 << 24), 0);
        assert!(b.lapic.x2apic());
        // RDTSC read the TSC the deadline is compared with: the timer fires at the tick at
        // which RDTSC would read 0x10000100.
        let rdtsc = c.gpr(cpu::Gpr::Rdi);
        let rdtsc_tick = c.now().ticks() - 3; // RDTSC, MOV and HLT have retired since
        let fire = t(rdtsc_tick + (0x1000_0100 - rdtsc) / cpu::TSC_PER_TICK);
        assert_eq!(b.next_timer_event(c.now()), Some(fire));
        assert!(!b.has_interrupt(t(fire.ticks() - 1)));
        assert!(b.has_interrupt(fire));
        assert_eq!(b.acknowledge_interrupt(fire), Some(0x42));
    }

    #[test]
    fn polling_with_interrupts_disabled_sees_expired_timers() {
        let mut b = board();
        b.mmio_write(Hpa::new(0xfee0_03e0), 4, 0xb, t(0));
        b.mmio_write(Hpa::new(0xfee0_0320), 4, 0x50, t(0)); // one-shot, vector 0x50
        b.mmio_write(Hpa::new(0xfee0_0380), 4, 100, t(0));
        // No has_interrupt call (IF = 0): IRR bit 0x50 (IRR bits 95:64) still shows up.
        assert_eq!(b.mmio_read(Hpa::new(0xfee0_0220), 4, t(99)), 0);
        assert_eq!(b.mmio_read(Hpa::new(0xfee0_0220), 4, t(100)), 1 << 0x10);
    }

    #[test]
    fn cr8_is_the_tpr() {
        let mut b = board();
        b.set_cr8(0x5, t(0));
        assert_eq!(b.mmio_read(Hpa::new(0xfee0_0080), 4, t(0)), 0x50);
        b.mmio_write(Hpa::new(0xfee0_0080), 4, 0x7f, t(0));
        assert_eq!(b.cr8(t(0)), 0x7);
        // A vector in class 7 is now held back.
        b.mmio_write(Hpa::new(0xfee0_0300), 4, 0x0004_0071, t(0)); // self IPI 0x71
        assert!(!b.has_interrupt(t(1)));
        b.set_cr8(6, t(2));
        assert!(b.has_interrupt(t(2)), "class 7 is above priority class 6");
        b.set_cr8(7, t(3));
        assert!(!b.has_interrupt(t(3)));
        b.set_cr8(0, t(4));
        assert!(b.has_interrupt(t(4)));
    }

    #[test]
    fn uart_interrupt_and_input() {
        let mut b = board();
        // Route IRQ 4 through the I/O APIC.
        b.mmio_write(Hpa::new(0xfec0_0000), 4, 0x18, t(0));
        b.mmio_write(Hpa::new(0xfec0_0010), 4, 0x24, t(0));
        b.io_out(COM1 + 1, 1, 0x01, t(0)); // RX interrupt
        assert!(!b.has_interrupt(t(1)));
        assert!(b.serial_input(b"ab").len() == 1);
        assert!(b.has_interrupt(t(2)));
        assert_eq!(b.acknowledge_interrupt(t(2)), Some(0x24));
        assert_eq!(b.io_in(COM1, 1, t(3)), u32::from(b'a'));
    }

    #[test]
    fn unimplemented_device_features_stop_the_run() {
        let mut b = board();
        b.io_out(0x43, 1, 0x32, t(0)); // PIT mode 1
        assert!(b.stop_requested());
        assert!(matches!(b.stop(), Some(BoardStop::Unimplemented(m)) if m.contains("mode 1")));
        let mut b = board();
        b.io_out(0x92, 1, 0x00, t(0));
        assert!(matches!(b.stop(), Some(BoardStop::Unimplemented(m)) if m.contains("A20")));
        let mut b = board();
        b.io_out(0x92, 1, 0x03, t(0));
        assert_eq!(b.stop(), Some(&BoardStop::Reset));
        let mut b = board();
        b.io_out(0xcf9, 1, 0x02, t(0));
        assert_eq!(b.io_in(0xcf9, 1, t(0)), 0x02);
        assert!(!b.stop_requested());
        b.io_out(0xcf9, 1, 0x06, t(0));
        assert_eq!(b.stop(), Some(&BoardStop::Reset));
        let mut b = board();
        b.io_out(0x4d1, 1, 0x02, t(0));
        assert!(matches!(b.stop(), Some(BoardStop::Unimplemented(m)) if m.contains("ELCR")));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One bus transaction a guest can cause.
        #[derive(Clone, Debug)]
        enum Op {
            In(u16, u8),
            Out(u16, u8, u32),
            MmioRead(u64, u8),
            MmioWrite(u64, u8, u64),
            Rdmsr(u32),
            Wrmsr(u32, u64),
            TscOffset(u64),
            Interrupt,
        }

        fn size() -> impl Strategy<Value = u8> {
            prop_oneof![Just(1u8), Just(2), Just(4), Just(8)]
        }

        fn port() -> impl Strategy<Value = u16> {
            prop_oneof![
                0x20u16..0x22,
                0x40u16..0x44,
                Just(0x61u16),
                0x70u16..0x72,
                Just(0x80u16),
                Just(0x92u16),
                0xa0u16..0xa2,
                0x3f8u16..0x400,
                0x510u16..0x512,
                0xcf8u16..0xd00,
                any::<u16>(),
            ]
        }

        fn mmio() -> impl Strategy<Value = u64> {
            prop_oneof![
                (0u64..0x100).prop_map(|o| 0xfec0_0000 + o),
                (0u64..0x400).prop_map(|o| 0xfee0_0000 + o),
                any::<u64>()
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (port(), size()).prop_map(|(p, s)| Op::In(p, s)),
                (port(), size(), any::<u32>()).prop_map(|(p, s, v)| Op::Out(p, s, v)),
                (mmio(), size()).prop_map(|(a, s)| Op::MmioRead(a, s)),
                (mmio(), size(), any::<u64>()).prop_map(|(a, s, v)| Op::MmioWrite(a, s, v)),
                prop_oneof![Just(0x1bu32), Just(0x6e0), 0x800u32..0x840, any::<u32>()]
                    .prop_map(Op::Rdmsr),
                (
                    prop_oneof![Just(0x1bu32), Just(0x6e0), 0x800u32..0x840],
                    any::<u64>()
                )
                    .prop_map(|(m, v)| Op::Wrmsr(m, v)),
                any::<u64>().prop_map(Op::TscOffset),
                Just(Op::Interrupt),
            ]
        }

        proptest! {
            /// Nothing a guest does on the bus panics the host; a stop, once requested, stays.
            #[test]
            fn random_bus_traffic_never_panics(ops in proptest::collection::vec((op(), 0u64..5000), 0..64)) {
                let mut b = board();
                let mut now = 0u64;
                let mut stopped = false;
                for (op, dt) in ops {
                    now += dt;
                    let t = t(now);
                    match op {
                        Op::In(p, s) => { let _ = b.io_in(p, s, t); }
                        Op::Out(p, s, v) => b.io_out(p, s, v, t),
                        Op::MmioRead(a, s) => { let _ = b.mmio_read(Hpa::new(a), s, t); }
                        Op::MmioWrite(a, s, v) => b.mmio_write(Hpa::new(a), s, v, t),
                        Op::Rdmsr(m) => { let _ = b.rdmsr(m, t); }
                        Op::Wrmsr(m, v) => { let _ = b.wrmsr(m, v, t); }
                        Op::TscOffset(o) => b.tsc_offset_changed(o, t),
                        Op::Interrupt => {
                            if b.has_interrupt(t) {
                                let _ = b.acknowledge_interrupt(t);
                            }
                        }
                    }
                    if let Some(next) = b.next_timer_event(t) {
                        prop_assert!(next >= t);
                    }
                    prop_assert!(!stopped || b.stop_requested());
                    stopped = b.stop_requested();
                }
            }
        }
    }
}
