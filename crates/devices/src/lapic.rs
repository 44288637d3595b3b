//! The local APIC of one processor, in xAPIC and x2APIC mode (SDM Vol. 3A chapter 11).
//!
//! - Enabling and disabling through IA32_APIC_BASE (§11.4.4) with the x2APIC state
//!   transitions of §11.12.5 (figure 11-27): disabled → xAPIC → x2APIC, any → disabled;
//!   x2APIC → xAPIC and disabled → x2APIC are illegal and fault (#GP), as are EN = 0 with
//!   EXTD = 1 and reserved bits. Disabling returns the APIC to its power-up state (§11.4.7.1).
//! - The xAPIC register page (§11.4.1, table 11-1) through [`Lapic::mmio_read`] /
//!   [`Lapic::mmio_write`] and the x2APIC MSRs 0x800–0x8FF (§11.12.1, table 11-6) through
//!   [`Lapic::rdmsr`] / [`Lapic::wrmsr`], with the x2APIC differences: 32-bit read-only ID,
//!   read-only LDR derived from the ID (§11.12.10.2), no DFR/APR/RRD, a 64-bit ICR, the
//!   SELF IPI register, #GP for reserved registers, writes to read-only registers, reads of
//!   write-only ones, a non-zero EOI and non-zero writes to reserved bits (§11.12.1.3: TPR, SVR,
//!   ESR, the ICR, the LVTs, the divide configuration, SELF IPI, bits 63:32 of every register but
//!   the ICR; read-only bits such as an LVT's delivery status are ignored, as the ICR's bit 12
//!   is, §11.12.9).
//! - Software enable/disable through SVR bit 8 (§11.4.7.2): while disabled every LVT is masked
//!   and stays masked, fixed interrupts are not accepted, IRR/ISR are kept.
//! - Priorities (§11.8.3.1): PPR from TPR and the highest ISR class; an IRR vector is delivered
//!   when its class is above PPR's; INTA moves it to ISR; EOI clears the highest ISR bit and,
//!   for level-triggered vectors (TMR set), tells the caller so the I/O APIC can clear its
//!   remote IRR (§11.8.5).
//! - Interrupt acceptance with the illegal-vector checks and ESR (§11.5.3), the error LVT.
//! - The ICR (§11.6.1): fixed and lowest-priority IPIs to this processor (self shorthand,
//!   physical or logical destination, flat and cluster models §11.6.2.2), "all including self"
//!   and "all excluding self" (there are no other processors on this board). NMI, SMI, INIT
//!   and SIPI to this processor are not implemented and reported, as is delivery mode 001 in
//!   the x2APIC ICR, where it is reserved (figure 11-28); the SELF IPI register (§11.12.11).
//! - The timer (§11.5.4): one-shot, periodic and TSC-deadline (§11.5.4.1) modes, the divide
//!   configuration register, initial and current count. The timer's input clock is the TSC
//!   clock (one timer tick per TSC tick before the divider), so every time argument here is a
//!   TSC value from the board: the processor's time-stamp counter *before* the offset that
//!   WRMSR IA32_TSC adds. The count modes measure elapsed time and ignore that offset (the
//!   timer runs on the crystal, which a TSC write does not move); the TSC-deadline mode
//!   compares IA32_TSC_DEADLINE with the counter software sees, the board's TSC plus the offset
//!   ([`Lapic::set_tsc_offset`]), so the deadline fires when RDTSC reaches it.
//!
//! Local interrupt pins: LINT0 in ExtINT mode is how the 8259's INTR reaches the processor
//! (virtual-wire mode, MP specification §3.6.2.2); [`Lapic::accepts_extint`] says whether it
//! does. Nothing drives LINT1, the thermal or the performance-monitoring LVTs on this board.

use crate::Unimplemented;
use x86::Gpa;

/// Default xAPIC base address (§11.4.1).
pub const DEFAULT_BASE: Gpa = Gpa::new(0xfee0_0000);
/// Size of the xAPIC register page.
pub const MMIO_SIZE: u64 = 0x1000;
/// First x2APIC MSR.
pub const X2APIC_MSR_BASE: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;

/// IA32_APIC_BASE bit 8: this is the bootstrap processor.
pub const BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode enable.
pub const BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: APIC global enable.
pub const BASE_EN: u64 = 1 << 11;

/// Version register: version 0x14 (an integrated APIC of the P4/Core families) with six LVT
/// entries (timer, thermal, performance, LINT0, LINT1, error; no CMCI), max LVT index 5.
pub const VERSION: u32 = 0x14 | (5 << 16);

/// Register indices (offset >> 4 in the xAPIC page, MSR - 0x800 in x2APIC mode).
mod r {
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const APR: u32 = 0x09;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const RRD: u32 = 0x0c;
    pub const LDR: u32 = 0x0d;
    pub const DFR: u32 = 0x0e;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const ICR_LO: u32 = 0x30;
    pub const ICR_HI: u32 = 0x31;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    pub const SELF_IPI: u32 = 0x3f;
}

/// LVT indices into [`LapicState::lvt`].
pub mod lvt {
    /// Timer.
    pub const TIMER: usize = 0;
    /// Thermal sensor.
    pub const THERMAL: usize = 1;
    /// Performance-monitoring counters.
    pub const PERF: usize = 2;
    /// LINT0.
    pub const LINT0: usize = 3;
    /// LINT1.
    pub const LINT1: usize = 4;
    /// Error.
    pub const ERROR: usize = 5;
}

/// LVT bit 16: masked.
const LVT_MASKED: u32 = 1 << 16;
/// LVT bits 10:8: delivery mode.
const LVT_DELIVERY_SHIFT: u32 = 8;
/// Delivery mode ExtINT.
const DELIVERY_EXTINT: u32 = 0b111;
/// LVT timer bits 18:17: timer mode.
const TIMER_MODE_SHIFT: u32 = 17;
/// Writable bits of each LVT (§11.5.1, figure 11-8): timer (vector, mask, mode), thermal and
/// perf (vector, delivery mode, mask), LINT0/1 (vector, delivery mode, polarity, trigger,
/// mask), error (vector, mask).
const LVT_WRITABLE: [u32; 6] = [
    0x0007_00ff,
    0x0001_07ff,
    0x0001_07ff,
    0x0001_a7ff,
    0x0001_a7ff,
    0x0001_00ff,
];

/// ESR bit 5: send illegal vector.
const ESR_SEND_ILLEGAL: u32 = 1 << 5;
/// ESR bit 6: receive illegal vector.
const ESR_RECEIVE_ILLEGAL: u32 = 1 << 6;
/// ESR bit 7: illegal register address.
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// SVR bit 8: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;

/// Timer modes (LVT timer bits 18:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    /// Count down once.
    OneShot,
    /// Count down and reload.
    Periodic,
    /// Fire when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
}

/// Delivery modes of an interrupt message (I/O APIC redirection entry, ICR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Fixed.
    Fixed,
    /// Lowest priority (on a one-processor board: this processor).
    LowestPriority,
    /// SMI.
    Smi,
    /// NMI.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI.
    StartUp,
    /// External (8259) interrupt.
    ExtInt,
    /// The reserved encoding 011.
    Reserved,
}

impl DeliveryMode {
    /// Decodes bits 10:8 of an ICR, LVT or redirection entry.
    pub fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            7 => Self::ExtInt,
            _ => Self::Reserved,
        }
    }
}

/// An interrupt message addressed to local APICs (from the I/O APIC or an IPI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// Vector.
    pub vector: u8,
    /// Delivery mode.
    pub delivery: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// Destination (8 bits in xAPIC terms, 32 in x2APIC).
    pub destination: u32,
    /// Level-triggered (true) or edge.
    pub level_triggered: bool,
}

/// Why an APIC access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicError {
    /// The access raises #GP(0) (SDM §11.4.4, §11.12.1, §11.12.5).
    GeneralProtection,
    /// The access asks for something this model does not implement.
    Unimplemented(Unimplemented),
}

impl From<Unimplemented> for ApicError {
    fn from(u: Unimplemented) -> Self {
        Self::Unimplemented(u)
    }
}

/// Snapshot of a [`Lapic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapicState {
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// The initial APIC ID (the x2APIC ID).
    pub initial_id: u32,
    /// xAPIC ID register bits 31:24 (writable in xAPIC mode).
    pub xapic_id: u8,
    /// TPR bits 7:0.
    pub tpr: u8,
    /// LDR.
    pub ldr: u32,
    /// DFR.
    pub dfr: u32,
    /// SVR.
    pub svr: u32,
    /// In-service register, 256 bits.
    pub isr: [u32; 8],
    /// Trigger-mode register, 256 bits.
    pub tmr: [u32; 8],
    /// Interrupt request register, 256 bits.
    pub irr: [u32; 8],
    /// ESR as last latched.
    pub esr: u32,
    /// Errors detected since the last ESR write.
    pub esr_pending: u32,
    /// ICR (xAPIC: high half holds the destination in bits 63:56).
    pub icr: u64,
    /// LVT entries, indexed by [`lvt`].
    pub lvt: [u32; 6],
    /// Timer initial count.
    pub timer_initial: u32,
    /// Timer divide configuration (bits 0, 1, 3).
    pub timer_divide: u32,
    /// TSC at which the current countdown started (one-shot and periodic).
    pub timer_start: u64,
    /// One-shot: the countdown has not yet reached zero; periodic: counting.
    pub timer_armed: bool,
    /// Periodic: periods already reported since `timer_start`.
    pub timer_periods: u64,
    /// IA32_TSC_DEADLINE (0 = disarmed), in the processor's TSC (the board's TSC plus
    /// `tsc_offset`).
    pub tsc_deadline: u64,
    /// What WRMSR IA32_TSC added to the board's TSC: the processor's TSC is the board's plus
    /// this (wrapping). A property of the processor, kept here for the deadline; it survives
    /// an APIC reset.
    pub tsc_offset: u64,
    /// An NMI was delivered to this processor (an IPI with delivery mode NMI) and the
    /// processor has not taken it yet (SDM Vol. 3A §11.6.1: NMI delivery ignores the vector).
    pub nmi_pending: bool,
}

impl LapicState {
    /// The power-up / INIT state of §11.4.7.1 for the APIC with `initial_id`, with
    /// IA32_APIC_BASE as given.
    fn reset(initial_id: u32, apic_base: u64) -> Self {
        Self {
            apic_base,
            initial_id,
            xapic_id: initial_id as u8,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; 6],
            timer_initial: 0,
            timer_divide: 0,
            timer_start: 0,
            timer_armed: false,
            timer_periods: 0,
            tsc_deadline: 0,
            tsc_offset: 0,
            nmi_pending: false,
        }
    }
}

/// Highest set bit of a 256-bit register.
fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i as u32 * 32 + 31 - bits[i].leading_zeros()) as u8)
}

fn set_bit(bits: &mut [u32; 8], v: u8, on: bool) {
    let (i, b) = (usize::from(v / 32), u32::from(v % 32));
    if on {
        bits[i] |= 1 << b;
    } else {
        bits[i] &= !(1 << b);
    }
}

fn test_bit(bits: &[u32; 8], v: u8) -> bool {
    bits[usize::from(v / 32)] & (1 << (v % 32)) != 0
}

/// The local APIC of one processor.
#[derive(Clone, Debug)]
pub struct Lapic {
    state: LapicState,
    /// Physical-address width (CPUID.80000008H:EAX[7:0]): bits at and above it are reserved
    /// in IA32_APIC_BASE.
    phys_bits: u8,
    /// Whether the processor reports x2APIC (CPUID.01H:ECX[21]).
    x2apic_supported: bool,
}

impl Lapic {
    /// The APIC of the bootstrap processor with `initial_id`, after power-up: globally enabled
    /// in xAPIC mode at the default base, software-disabled (§11.4.7.1).
    pub fn new(initial_id: u32, phys_bits: u8, x2apic_supported: bool) -> Self {
        let base = DEFAULT_BASE.raw() | BASE_BSP | BASE_EN;
        Self {
            state: LapicState::reset(initial_id, base),
            phys_bits,
            x2apic_supported,
        }
    }

    /// Restores from a snapshot.
    pub fn from_state(state: LapicState, phys_bits: u8, x2apic_supported: bool) -> Self {
        Self {
            state,
            phys_bits,
            x2apic_supported,
        }
    }

    /// A snapshot.
    pub fn state(&self) -> LapicState {
        self.state.clone()
    }

    /// What a PC BIOS leaves behind for an operating system (and what QEMU's reset gives the
    /// bootstrap processor): the APIC software-enabled in virtual-wire mode, LINT0 = ExtINT
    /// unmasked (the 8259 reaches the processor through the APIC), LINT1 = NMI (MP
    /// specification §3.6.2.2).
    pub fn set_virtual_wire(&mut self) {
        self.state.svr = SVR_ENABLE | 0xff;
        self.state.lvt[lvt::LINT0] = DELIVERY_EXTINT << LVT_DELIVERY_SHIFT;
        self.state.lvt[lvt::LINT1] = 0b100 << LVT_DELIVERY_SHIFT;
    }

    /// IA32_APIC_BASE.EN: the APIC is globally enabled.
    pub fn hw_enabled(&self) -> bool {
        self.state.apic_base & BASE_EN != 0
    }

    /// x2APIC mode.
    pub fn x2apic(&self) -> bool {
        self.hw_enabled() && self.state.apic_base & BASE_EXTD != 0
    }

    /// SVR bit 8 (and globally enabled).
    pub fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.state.svr & SVR_ENABLE != 0
    }

    /// The physical base of the xAPIC register page while the page is decoded (xAPIC mode).
    pub fn mmio_base(&self) -> Option<Gpa> {
        (self.hw_enabled() && !self.x2apic())
            .then(|| Gpa::new(self.state.apic_base & !0xfff & self.base_mask()))
    }

    fn base_mask(&self) -> u64 {
        (1u64 << self.phys_bits.min(63)).wrapping_sub(1)
    }

    /// Whether LINT0 takes the 8259's INTR as an ExtINT interrupt. With the APIC globally
    /// disabled, the 8259 is wired straight to the processor and the board does not ask.
    pub fn accepts_extint(&self) -> bool {
        let l = self.state.lvt[lvt::LINT0];
        self.hw_enabled() && l & LVT_MASKED == 0 && (l >> LVT_DELIVERY_SHIFT) & 7 == DELIVERY_EXTINT
    }

    // ----- IA32_APIC_BASE -------------------------------------------------------------------

    /// RDMSR IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.state.apic_base
    }

    /// WRMSR IA32_APIC_BASE with the §11.12.5 transitions.
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), ApicError> {
        let reserved = !((self.base_mask() & !0xfff) | BASE_BSP | BASE_EXTD | BASE_EN);
        if value & reserved != 0 || (!self.x2apic_supported && value & BASE_EXTD != 0) {
            return Err(ApicError::GeneralProtection);
        }
        let (en, extd) = (value & BASE_EN != 0, value & BASE_EXTD != 0);
        let (was_en, was_x2) = (self.hw_enabled(), self.x2apic());
        match (en, extd) {
            (false, true) => return Err(ApicError::GeneralProtection),
            (true, true) if !was_en => return Err(ApicError::GeneralProtection),
            (true, false) if was_x2 => return Err(ApicError::GeneralProtection),
            _ => {}
        }
        // BSP is a read-only reflection of the reset strap.
        let value = (value & !BASE_BSP) | (self.state.apic_base & BASE_BSP);
        if !en {
            // Globally disabled: the APIC loses its state (§11.4.3); the TSC is not the APIC's.
            self.state = LapicState {
                tsc_offset: self.state.tsc_offset,
                ..LapicState::reset(self.state.initial_id, value)
            };
            return Ok(());
        }
        if extd && !was_x2 {
            // Entering x2APIC: the ID becomes the x2APIC ID, LDR is derived (§11.12.5.1).
            self.state.ldr = self.x2apic_ldr();
        }
        self.state.apic_base = value;
        Ok(())
    }

    fn x2apic_ldr(&self) -> u32 {
        let id = self.state.initial_id;
        ((id >> 4) << 16) | (1 << (id & 0xf))
    }

    // ----- interrupt acceptance and priority -----------------------------------------------

    /// TPR (§11.8.3).
    pub fn tpr(&self) -> u8 {
        self.state.tpr
    }

    /// Writes TPR (what MOV to CR8 does: TPR[7:4] = CR8[3:0], TPR[3:0] = 0, §11.8.6).
    pub fn set_tpr(&mut self, tpr: u8) {
        self.state.tpr = tpr;
    }

    /// PPR (§11.8.3.1).
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.state.isr).unwrap_or(0);
        if self.state.tpr >> 4 >= isrv >> 4 {
            self.state.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the processor would take now (highest IRR above PPR), if any.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        highest(&self.state.irr).filter(|&v| v >> 4 > self.ppr() >> 4)
    }

    /// INTA: moves the highest deliverable IRR vector to ISR and returns it; if nothing is
    /// deliverable any more, the spurious vector (§11.9), without touching ISR.
    pub fn acknowledge(&mut self) -> u8 {
        match self.pending_vector() {
            Some(v) => {
                set_bit(&mut self.state.irr, v, false);
                set_bit(&mut self.state.isr, v, true);
                v
            }
            None => (self.state.svr & 0xff) as u8,
        }
    }

    /// An EOI: clears the highest ISR bit and returns its vector if it was level-triggered
    /// (the board then broadcasts the EOI to the I/O APIC).
    fn eoi(&mut self) -> Option<u8> {
        let v = highest(&self.state.isr)?;
        set_bit(&mut self.state.isr, v, false);
        test_bit(&self.state.tmr, v).then_some(v)
    }

    fn record_error(&mut self, bits: u32) {
        let before = self.state.esr_pending;
        self.state.esr_pending |= bits;
        let l = self.state.lvt[lvt::ERROR];
        if before != self.state.esr_pending && l & LVT_MASKED == 0 {
            self.accept_vector((l & 0xff) as u8, false);
        }
    }

    /// Accepts a fixed interrupt into IRR (§11.5.3: vectors 0–15 are illegal).
    fn accept_vector(&mut self, vector: u8, level_triggered: bool) {
        if !self.sw_enabled() {
            return;
        }
        if vector < 16 {
            self.record_error(ESR_RECEIVE_ILLEGAL);
            return;
        }
        set_bit(&mut self.state.irr, vector, true);
        set_bit(&mut self.state.tmr, vector, level_triggered);
    }

    /// Whether a message addressed to `destination` reaches this APIC (§11.6.2).
    pub fn matches(&self, logical: bool, destination: u32) -> bool {
        if !self.hw_enabled() {
            return false;
        }
        if self.x2apic() {
            if destination == u32::MAX {
                return true;
            }
            if !logical {
                return destination == self.state.initial_id;
            }
            let ldr = self.state.ldr;
            return destination >> 16 == ldr >> 16 && destination & ldr & 0xffff != 0;
        }
        let dest = (destination & 0xff) as u8;
        if dest == 0xff {
            return true;
        }
        if !logical {
            return dest == self.state.xapic_id;
        }
        let ldr = (self.state.ldr >> 24) as u8;
        if self.state.dfr >> 28 == 0xf {
            dest & ldr != 0
        } else {
            dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0
        }
    }

    /// The processor takes a pending NMI (the NMI pin is edge-triggered: taking it clears it).
    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.state.nmi_pending)
    }

    /// Delivers an interrupt message (from the I/O APIC or an IPI) if it is for this APIC.
    pub fn deliver(&mut self, msg: &InterruptMessage) -> Result<(), Unimplemented> {
        if !self.matches(msg.logical, msg.destination) {
            return Ok(());
        }
        match msg.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.accept_vector(msg.vector, msg.level_triggered);
                Ok(())
            }
            DeliveryMode::Nmi => {
                self.state.nmi_pending = true;
                Ok(())
            }
            DeliveryMode::Smi => Err(Unimplemented("SMI delivery (no SMM)")),
            DeliveryMode::Init => Err(Unimplemented("INIT delivery to the processor")),
            DeliveryMode::StartUp => Err(Unimplemented("start-up IPI to the processor")),
            DeliveryMode::ExtInt => Err(Unimplemented("ExtINT interrupt messages")),
            DeliveryMode::Reserved => Err(Unimplemented("reserved delivery mode 011")),
        }
    }

    /// Sends the IPI in the ICR (§11.6.1).
    fn send_ipi(&mut self) -> Result<(), Unimplemented> {
        let icr = self.state.icr;
        let vector = (icr & 0xff) as u8;
        let delivery = DeliveryMode::from_bits((icr >> 8) as u32);
        let logical = icr & (1 << 11) != 0;
        let assert = icr & (1 << 14) != 0;
        let level_triggered = icr & (1 << 15) != 0;
        let shorthand = (icr >> 18) & 3;
        let destination = if self.x2apic() {
            (icr >> 32) as u32
        } else {
            ((icr >> 56) & 0xff) as u32
        };
        if delivery == DeliveryMode::LowestPriority && self.x2apic() {
            // Figure 11-28: delivery mode 001 is reserved in the x2APIC ICR.
            return Err(Unimplemented(
                "delivery mode 001 (reserved) in the x2APIC ICR",
            ));
        }
        if delivery == DeliveryMode::Init && level_triggered && !assert {
            // INIT level de-assert: only synchronises arbitration IDs (§11.6.1).
            return Ok(());
        }
        let fixed = matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
        if fixed && vector < 16 && shorthand != 0b11 {
            self.record_error(ESR_SEND_ILLEGAL);
            return Ok(());
        }
        let msg = InterruptMessage {
            vector,
            delivery,
            logical,
            destination,
            level_triggered: false,
        };
        match shorthand {
            0b00 => self.deliver(&msg),
            0b01 | 0b10 => match delivery {
                DeliveryMode::Fixed => {
                    self.accept_vector(vector, false);
                    Ok(())
                }
                _ => self.deliver(&InterruptMessage {
                    destination: u32::MAX,
                    ..msg
                }),
            },
            // All excluding self: there is no other processor.
            _ => Ok(()),
        }
    }

    // ----- timer ---------------------------------------------------------------------------

    /// The timer mode in LVT timer bits 18:17.
    fn timer_mode(&self) -> Result<TimerMode, Unimplemented> {
        match (self.state.lvt[lvt::TIMER] >> TIMER_MODE_SHIFT) & 3 {
            0 => Ok(TimerMode::OneShot),
            1 => Ok(TimerMode::Periodic),
            2 => Ok(TimerMode::TscDeadline),
            _ => Err(Unimplemented("LVT timer mode 11b (reserved)")),
        }
    }

    fn divisor(&self) -> u64 {
        let d = self.state.timer_divide;
        let v = ((d & 8) >> 1) | (d & 3);
        1 << ((v + 1) & 7)
    }

    /// The current-count register at TSC `tsc`.
    fn current_count(&self, tsc: u64) -> u32 {
        let n = u64::from(self.state.timer_initial);
        if n == 0 || !self.state.timer_armed {
            return 0;
        }
        let elapsed = tsc.saturating_sub(self.state.timer_start) / self.divisor();
        match self.timer_mode() {
            Ok(TimerMode::Periodic) => (n - elapsed % n) as u32,
            Ok(TimerMode::OneShot) => n.saturating_sub(elapsed) as u32,
            _ => 0,
        }
    }

    /// The board's TSC at which the timer next fires, if it is armed, seen at the board's TSC
    /// `tsc` (a deadline already reached fires at `tsc`).
    pub fn next_timer_event(&self, tsc: u64) -> Option<u64> {
        match self.timer_mode().ok()? {
            TimerMode::TscDeadline => {
                let deadline = self.state.tsc_deadline;
                if deadline == 0 {
                    return None;
                }
                // The processor's TSC reaches the deadline `deadline - now` ticks from now
                // (it does not wrap on the way, since the deadline is above it).
                let now = tsc.wrapping_add(self.state.tsc_offset);
                Some(tsc.saturating_add(deadline.saturating_sub(now)))
            }
            mode => {
                let n = u64::from(self.state.timer_initial);
                if n == 0 || !self.state.timer_armed {
                    return None;
                }
                let periods = if mode == TimerMode::Periodic {
                    self.state.timer_periods + 1
                } else {
                    1
                };
                Some(
                    self.state
                        .timer_start
                        .saturating_add(periods.saturating_mul(n).saturating_mul(self.divisor())),
                )
            }
        }
    }

    /// Brings the timer up to TSC `tsc`: an expiry since the last call sets the timer vector
    /// in IRR unless the LVT is masked (several missed periods coalesce into one interrupt,
    /// as IRR holds one bit per vector).
    pub fn advance(&mut self, tsc: u64) -> Result<(), Unimplemented> {
        let mode = self.timer_mode()?;
        let Some(due) = self.next_timer_event(tsc) else {
            return Ok(());
        };
        if tsc < due {
            return Ok(());
        }
        match mode {
            TimerMode::OneShot => self.state.timer_armed = false,
            TimerMode::Periodic => {
                let period = u64::from(self.state.timer_initial).saturating_mul(self.divisor());
                self.state.timer_periods =
                    tsc.saturating_sub(self.state.timer_start) / period.max(1);
            }
            TimerMode::TscDeadline => self.state.tsc_deadline = 0,
        }
        let l = self.state.lvt[lvt::TIMER];
        if l & LVT_MASKED == 0 {
            self.accept_vector((l & 0xff) as u8, false);
        }
        Ok(())
    }

    /// RDMSR IA32_TSC_DEADLINE: the armed deadline, 0 once it fired or outside deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == Ok(TimerMode::TscDeadline) {
            self.state.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR IA32_TSC_DEADLINE: arms (non-zero) or disarms (zero) the deadline, a value of the
    /// processor's TSC; ignored outside TSC-deadline mode (§11.5.4.1). Neither this nor the
    /// read faults: the MSR exists whenever CPUID.01H:ECX[24] says so, in every APIC mode.
    /// `tsc` is the board's TSC.
    pub fn set_tsc_deadline(&mut self, value: u64, tsc: u64) -> Result<(), Unimplemented> {
        if self.timer_mode()? == TimerMode::TscDeadline {
            self.state.tsc_deadline = value;
            self.advance(tsc)?;
        }
        Ok(())
    }

    /// WRMSR IA32_TSC moved the processor's TSC: it is now the board's TSC `tsc` plus `offset`
    /// (wrapping). An armed deadline the new TSC has already reached fires at once.
    pub fn set_tsc_offset(&mut self, offset: u64, tsc: u64) -> Result<(), Unimplemented> {
        self.state.tsc_offset = offset;
        self.advance(tsc)
    }

    /// The offset of [`Lapic::set_tsc_offset`].
    pub fn tsc_offset(&self) -> u64 {
        self.state.tsc_offset
    }

    fn start_countdown(&mut self, tsc: u64) {
        self.state.timer_start = tsc;
        self.state.timer_periods = 0;
        self.state.timer_armed = self.state.timer_initial != 0;
    }

    // ----- register file -------------------------------------------------------------------

    /// Reads register `index` (offset >> 4). `Err(GeneralProtection)` for registers that do
    /// not exist or are write-only in the current mode.
    fn read_reg(&self, index: u32, tsc: u64) -> Result<u32, ApicError> {
        let x2 = self.x2apic();
        let s = &self.state;
        Ok(match index {
            r::ID if x2 => s.initial_id,
            r::ID => u32::from(s.xapic_id) << 24,
            r::VERSION => VERSION,
            r::TPR => u32::from(s.tpr),
            // APR and RRD are not supported by the Pentium 4 and later xAPICs (table 11-1,
            // footnote 1; version 0x14 here) and absent in x2APIC mode: they read as zero.
            r::APR | r::RRD if !x2 => 0,
            r::PPR => u32::from(self.ppr()),
            r::EOI | r::SELF_IPI if x2 => return Err(ApicError::GeneralProtection),
            r::EOI => 0,
            r::LDR => s.ldr,
            r::DFR if !x2 => s.dfr,
            r::SVR => s.svr,
            i @ r::ISR0..=0x17 => s.isr[(i - r::ISR0) as usize],
            i @ r::TMR0..=0x1f => s.tmr[(i - r::TMR0) as usize],
            i @ r::IRR0..=0x27 => s.irr[(i - r::IRR0) as usize],
            r::ESR => s.esr,
            r::ICR_LO => s.icr as u32,
            r::ICR_HI if !x2 => (s.icr >> 32) as u32,
            i @ r::LVT_TIMER..=r::LVT_ERROR => s.lvt[(i - r::LVT_TIMER) as usize],
            r::TIMER_INITIAL => s.timer_initial,
            r::TIMER_CURRENT => self.current_count(tsc),
            r::TIMER_DIVIDE => s.timer_divide,
            _ => return Err(ApicError::GeneralProtection),
        })
    }

    /// Writes register `index`. Returns the vector of a level-triggered EOI, if any.
    fn write_reg(&mut self, index: u32, value: u32, tsc: u64) -> Result<Option<u8>, ApicError> {
        let x2 = self.x2apic();
        let gp = Err(ApicError::GeneralProtection);
        match index {
            r::ID if !x2 => self.state.xapic_id = (value >> 24) as u8,
            r::TPR => {
                if x2 && value > 0xff {
                    return gp;
                }
                self.state.tpr = value as u8;
            }
            r::EOI => {
                if x2 && value != 0 {
                    return gp;
                }
                return Ok(self.eoi());
            }
            r::LDR if !x2 => self.state.ldr = value & 0xff00_0000,
            r::DFR if !x2 => self.state.dfr = (value & 0xf000_0000) | 0x0fff_ffff,
            r::SVR => {
                self.state.svr = value & 0x1ff;
                if value & SVR_ENABLE == 0 {
                    for l in &mut self.state.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            r::ESR => {
                if x2 && value != 0 {
                    return gp;
                }
                self.state.esr = core::mem::take(&mut self.state.esr_pending);
            }
            r::ICR_LO if x2 => {
                // A 32-bit write: the x2APIC ICR is written through WRMSR with EDX:EAX.
                self.state.icr = u64::from(value);
                self.send_ipi()?;
            }
            r::ICR_LO => {
                self.state.icr = (self.state.icr & !0xffff_ffff) | u64::from(value & !(1 << 12));
                self.send_ipi()?;
            }
            r::ICR_HI if !x2 => {
                self.state.icr =
                    (self.state.icr & 0xffff_ffff) | (u64::from(value & 0xff00_0000) << 32)
            }
            i @ r::LVT_TIMER..=r::LVT_ERROR => {
                let n = (i - r::LVT_TIMER) as usize;
                let mut v = value & LVT_WRITABLE[n];
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                if n == lvt::TIMER {
                    let old_deadline = self.timer_mode() == Ok(TimerMode::TscDeadline);
                    self.state.lvt[n] = v;
                    let new_mode = self.timer_mode()?;
                    if old_deadline != (new_mode == TimerMode::TscDeadline) {
                        // Switching between deadline and count modes disarms (§11.5.4.1).
                        self.state.timer_initial = 0;
                        self.state.timer_armed = false;
                        self.state.tsc_deadline = 0;
                    }
                } else {
                    self.state.lvt[n] = (self.state.lvt[n] & (1 << 12 | 1 << 14)) | v;
                }
            }
            r::TIMER_INITIAL => {
                if self.timer_mode()? != TimerMode::TscDeadline {
                    self.state.timer_initial = value;
                    self.start_countdown(tsc);
                }
            }
            r::TIMER_DIVIDE => {
                // Keep the current count across a change of divisor: restart the countdown
                // phase so that `current` ticks of the new divisor remain.
                let current = u64::from(self.current_count(tsc));
                self.state.timer_divide = value & 0xb;
                if self.state.timer_armed {
                    let n = u64::from(self.state.timer_initial);
                    let elapsed_ticks = (n - current).saturating_mul(self.divisor());
                    self.state.timer_start = tsc.saturating_sub(elapsed_ticks);
                    self.state.timer_periods = 0;
                }
            }
            r::SELF_IPI if x2 => {
                if value > 0xff {
                    return gp;
                }
                let v = value as u8;
                if v < 16 {
                    self.record_error(ESR_SEND_ILLEGAL);
                } else {
                    self.accept_vector(v, false);
                }
            }
            // Read-only registers: writes are ignored in xAPIC mode (#GP in x2APIC mode).
            r::VERSION | r::APR | r::PPR | r::RRD | r::TIMER_CURRENT | r::ISR0..=0x27 if !x2 => {}
            _ if x2 => return gp,
            _ => self.record_error(ESR_ILLEGAL_REGISTER),
        }
        Ok(None)
    }

    /// A read of `size` bytes at `offset` in the xAPIC page.
    pub fn mmio_read(&mut self, offset: u64, size: u8, tsc: u64) -> Result<u32, Unimplemented> {
        let reg = self.xapic_register(offset, size)?;
        match self.read_reg(reg, tsc) {
            Ok(v) => Ok(v),
            Err(ApicError::Unimplemented(u)) => Err(u),
            // Registers that do not exist in xAPIC mode read as zero.
            Err(ApicError::GeneralProtection) => Ok(0),
        }
    }

    /// A write of `size` bytes at `offset` in the xAPIC page. Returns the vector of a
    /// level-triggered EOI (for the I/O APIC), if any.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        tsc: u64,
    ) -> Result<Option<u8>, Unimplemented> {
        let reg = self.xapic_register(offset, size)?;
        match self.write_reg(reg, value, tsc) {
            Ok(eoi) => Ok(eoi),
            Err(ApicError::Unimplemented(u)) => Err(u),
            Err(ApicError::GeneralProtection) => Ok(None),
        }
    }

    fn xapic_register(&self, offset: u64, size: u8) -> Result<u32, Unimplemented> {
        if size != 4 || offset & 0xf != 0 || offset >= MMIO_SIZE {
            // SDM §11.4.1: registers are accessed with 16-byte-aligned 32-bit accesses; other
            // accesses are undefined on hardware.
            return Err(Unimplemented(
                "xAPIC register access that is not a 16-byte aligned 32-bit access",
            ));
        }
        Ok((offset >> 4) as u32)
    }

    /// RDMSR of an x2APIC register (MSR 0x800–0x8FF).
    pub fn rdmsr(&self, msr: u32, tsc: u64) -> Result<u64, ApicError> {
        if !self.x2apic() || !(X2APIC_MSR_BASE..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(ApicError::GeneralProtection);
        }
        let index = msr - X2APIC_MSR_BASE;
        if index == r::ICR_LO {
            return Ok(self.state.icr);
        }
        self.read_reg(index, tsc).map(u64::from)
    }

    /// WRMSR of an x2APIC register. Returns the vector of a level-triggered EOI, if any.
    pub fn wrmsr(&mut self, msr: u32, value: u64, tsc: u64) -> Result<Option<u8>, ApicError> {
        if !self.x2apic() || !(X2APIC_MSR_BASE..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(ApicError::GeneralProtection);
        }
        let index = msr - X2APIC_MSR_BASE;
        if index == r::ICR_LO {
            // Bits 31:20, 17:16 and 13 are reserved (figure 11-28); bit 12 (delivery status)
            // does not exist in x2APIC mode and is ignored.
            if value & 0xfff3_2000 != 0 {
                return Err(ApicError::GeneralProtection);
            }
            self.state.icr = value & !(1 << 12);
            self.send_ipi()?;
            return Ok(None);
        }
        if value >> 32 != 0 || value as u32 & x2apic_reserved(index) != 0 {
            return Err(ApicError::GeneralProtection);
        }
        self.write_reg(index, value as u32, tsc)
    }
}

/// The reserved bits of 32-bit register `index` in x2APIC mode, where a WRMSR that sets one
/// raises #GP (§11.12.1.3). Read-only bits (an LVT's delivery status, LINT0/1's remote IRR)
/// are not reserved: writes ignore them. Registers not listed have no reserved bits here or
/// are checked by [`Lapic::write_reg`] (EOI, ESR: any non-zero value).
fn x2apic_reserved(index: u32) -> u32 {
    /// LVT bit 12: delivery status (read-only).
    const DELIVERY_STATUS: u32 = 1 << 12;
    /// LINT0/LINT1 bit 14: remote IRR (read-only).
    const REMOTE_IRR: u32 = 1 << 14;
    match index {
        r::TPR | r::SELF_IPI => !0xff,
        // Vector, software enable and focus processor checking (bit 9, which this model, like
        // the Pentium 4 and later, does not implement and ignores); no EOI-broadcast
        // suppression (VERSION bit 24 is clear), so bit 12 is reserved.
        r::SVR => !0x3ff,
        i @ r::LVT_TIMER..=r::LVT_ERROR => {
            let n = (i - r::LVT_TIMER) as usize;
            let read_only = if n == lvt::LINT0 || n == lvt::LINT1 {
                DELIVERY_STATUS | REMOTE_IRR
            } else {
                DELIVERY_STATUS
            };
            !(LVT_WRITABLE[n] | read_only)
        }
        r::TIMER_DIVIDE => !0xb,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPR: u64 = 0x80;
    const EOI: u64 = 0xb0;
    const SVR: u64 = 0xf0;
    const ICR_LO: u64 = 0x300;
    const ICR_HI: u64 = 0x310;
    const LVT_T: u64 = 0x320;
    const LINT0: u64 = 0x350;
    const TMICT: u64 = 0x380;
    const TMCCT: u64 = 0x390;
    const TDCR: u64 = 0x3e0;

    fn enabled() -> Lapic {
        let mut a = Lapic::new(0, 39, true);
        a.mmio_write(SVR, 4, 0x1ff, 0).unwrap();
        a
    }

    fn w(a: &mut Lapic, off: u64, v: u32) {
        a.mmio_write(off, 4, v, 0).unwrap();
    }

    fn msg(vector: u8) -> InterruptMessage {
        InterruptMessage {
            vector,
            delivery: DeliveryMode::Fixed,
            logical: false,
            destination: 0,
            level_triggered: false,
        }
    }

    #[test]
    fn reset_state() {
        let mut a = Lapic::new(3, 39, true);
        assert_eq!(a.apic_base(), 0xfee0_0900);
        assert_eq!(a.mmio_base(), Some(Gpa::new(0xfee0_0000)));
        assert_eq!(a.mmio_read(0x20, 4, 0).unwrap(), 3 << 24);
        assert_eq!(a.mmio_read(0x30, 4, 0).unwrap(), 0x0005_0014);
        assert_eq!(a.mmio_read(0xe0, 4, 0).unwrap(), 0xffff_ffff);
        assert_eq!(a.mmio_read(SVR, 4, 0).unwrap(), 0xff);
        assert_eq!(a.mmio_read(LVT_T, 4, 0).unwrap(), LVT_MASKED);
        assert!(!a.sw_enabled());
        assert!(!a.accepts_extint());
        a.set_virtual_wire();
        assert!(a.accepts_extint());
    }

    #[test]
    fn software_disabled_apic_masks_lvts_and_drops_fixed_interrupts() {
        let mut a = enabled();
        w(&mut a, LINT0, 0x700);
        assert!(a.accepts_extint());
        w(&mut a, SVR, 0xff);
        assert!(!a.accepts_extint());
        w(&mut a, LINT0, 0x700);
        assert_eq!(a.mmio_read(LINT0, 4, 0).unwrap(), 0x1_0700);
        a.deliver(&msg(0x40)).unwrap();
        assert_eq!(a.pending_vector(), None);
    }

    #[test]
    fn priority_ack_and_eoi() {
        let mut a = enabled();
        a.deliver(&msg(0x31)).unwrap();
        a.deliver(&msg(0x52)).unwrap();
        assert_eq!(a.pending_vector(), Some(0x52));
        assert_eq!(a.acknowledge(), 0x52);
        assert_eq!(a.ppr(), 0x50);
        // 0x31 is below the in-service class: held.
        assert_eq!(a.pending_vector(), None);
        a.deliver(&msg(0x5f)).unwrap(); // same class: held too
        assert_eq!(a.pending_vector(), None);
        a.deliver(&msg(0x61)).unwrap();
        assert_eq!(a.acknowledge(), 0x61);
        assert_eq!(a.mmio_write(EOI, 4, 0, 0).unwrap(), None);
        assert_eq!(a.mmio_read(0x100 + 0x20, 4, 0).unwrap(), 1 << (0x52 - 0x40)); // ISR bits 95:64
        w(&mut a, EOI, 0);
        assert_eq!(a.acknowledge(), 0x5f);
        w(&mut a, EOI, 0);
        // TPR holds back class 3.
        w(&mut a, TPR, 0x40);
        assert_eq!(a.pending_vector(), None);
        assert_eq!(a.acknowledge(), 0xff); // spurious vector
        w(&mut a, TPR, 0x20);
        assert_eq!(a.acknowledge(), 0x31);
    }

    #[test]
    fn level_triggered_eoi_is_reported() {
        let mut a = enabled();
        a.deliver(&InterruptMessage {
            level_triggered: true,
            ..msg(0x44)
        })
        .unwrap();
        assert_eq!(a.acknowledge(), 0x44);
        assert_eq!(a.mmio_write(EOI, 4, 0, 0).unwrap(), Some(0x44));
    }

    #[test]
    fn illegal_vectors_and_esr() {
        let mut a = enabled();
        w(&mut a, 0x370, 0xfe); // error LVT, vector 0xfe, unmasked
        a.deliver(&msg(3)).unwrap();
        assert_eq!(a.mmio_read(0x280, 4, 0).unwrap(), 0);
        w(&mut a, 0x280, 0);
        assert_eq!(a.mmio_read(0x280, 4, 0).unwrap(), ESR_RECEIVE_ILLEGAL);
        assert_eq!(a.acknowledge(), 0xfe);
    }

    #[test]
    fn self_ipi_through_icr_and_destinations() {
        let mut a = enabled();
        w(&mut a, ICR_LO, 0x0004_0041); // shorthand self, fixed, vector 0x41
        assert_eq!(a.pending_vector(), Some(0x41));
        a.acknowledge();
        w(&mut a, EOI, 0);
        w(&mut a, ICR_HI, 0x0100_0000);
        w(&mut a, ICR_LO, 0x42); // physical destination 1: nobody
        assert_eq!(a.pending_vector(), None);
        w(&mut a, ICR_HI, 0);
        w(&mut a, ICR_LO, 0x43); // physical destination 0: us
        assert_eq!(a.pending_vector(), Some(0x43));
        w(&mut a, ICR_LO, 0x000c_0044); // all excluding self
        assert_eq!(a.acknowledge(), 0x43);
        assert_eq!(a.pending_vector(), None);
        w(&mut a, EOI, 0);
        // Logical flat: LDR bit 0.
        w(&mut a, 0xd0, 0x0100_0000);
        w(&mut a, ICR_HI, 0x0300_0000);
        w(&mut a, ICR_LO, 0x0800 | 0x45);
        assert_eq!(a.pending_vector(), Some(0x45));
        // Cluster model: cluster 0, member bit 0.
        w(&mut a, 0xe0, 0x0fff_ffff);
        assert!(a.matches(true, 0x01));
        assert!(!a.matches(true, 0x11));
        // NMI to self: the processor's NMI latch, taken once.
        assert!(!a.take_nmi());
        assert!(a.mmio_write(ICR_LO, 4, 0x0004_0400, 0).is_ok());
        assert!(a.take_nmi());
        assert!(!a.take_nmi(), "taking the NMI clears it");
    }

    #[test]
    fn one_shot_and_periodic_timer() {
        let mut a = enabled();
        w(&mut a, TDCR, 0b1011); // divide by 1
        w(&mut a, LVT_T, 0x30);
        a.mmio_write(TMICT, 4, 100, 1000).unwrap();
        assert_eq!(a.mmio_read(TMCCT, 4, 1040).unwrap(), 60);
        assert_eq!(a.next_timer_event(1040), Some(1100));
        a.advance(1099).unwrap();
        assert_eq!(a.pending_vector(), None);
        a.advance(1100).unwrap();
        assert_eq!(a.acknowledge(), 0x30);
        assert_eq!(a.mmio_read(TMCCT, 4, 1200).unwrap(), 0);
        assert_eq!(a.next_timer_event(1200), None);
        w(&mut a, EOI, 0);

        // Periodic, divide by 2.
        w(&mut a, TDCR, 0b0000);
        w(&mut a, LVT_T, 0x2_0031);
        a.mmio_write(TMICT, 4, 10, 0).unwrap();
        assert_eq!(a.mmio_read(TMCCT, 4, 4).unwrap(), 8);
        assert_eq!(a.next_timer_event(4), Some(20));
        a.advance(45).unwrap();
        assert_eq!(a.acknowledge(), 0x31);
        assert_eq!(a.next_timer_event(45), Some(60));
        assert_eq!(a.mmio_read(TMCCT, 4, 45).unwrap(), 8);
        // Masked: counts, no interrupt.
        w(&mut a, LVT_T, 0x3_0031);
        a.advance(60).unwrap();
        assert_eq!(a.state().irr, [0; 8]);
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = enabled();
        w(&mut a, LVT_T, 0x4_0032);
        a.mmio_write(TMICT, 4, 100, 0).unwrap(); // ignored in deadline mode
        assert_eq!(a.mmio_read(TMICT, 4, 0).unwrap(), 0);
        a.set_tsc_deadline(500, 10).unwrap();
        assert_eq!(a.tsc_deadline(), 500);
        assert_eq!(a.next_timer_event(10), Some(500));
        a.advance(499).unwrap();
        assert_eq!(a.pending_vector(), None);
        a.advance(500).unwrap();
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.acknowledge(), 0x32);
        w(&mut a, EOI, 0);
        // A deadline in the past fires at once; leaving deadline mode disarms.
        a.set_tsc_deadline(5, 10).unwrap();
        assert_eq!(a.pending_vector(), Some(0x32));
        a.set_tsc_deadline(900, 10).unwrap();
        w(&mut a, LVT_T, 0x32);
        assert_eq!(a.next_timer_event(10), None);
        assert!(a.mmio_write(LVT_T, 4, 0x6_0032, 0).is_err());
    }

    #[test]
    fn apic_base_transitions() {
        let mut a = enabled();
        let base = 0xfee0_0000 | BASE_BSP;
        // xAPIC -> x2APIC keeps state, derives LDR.
        a.deliver(&msg(0x50)).unwrap();
        a.set_apic_base(base | BASE_EN | BASE_EXTD).unwrap();
        assert!(a.x2apic());
        assert_eq!(a.mmio_base(), None);
        assert_eq!(a.rdmsr(0x80d, 0).unwrap(), 1);
        assert_eq!(a.pending_vector(), Some(0x50));
        // x2APIC -> xAPIC is illegal; EN=0 with EXTD=1 too.
        assert_eq!(
            a.set_apic_base(base | BASE_EN),
            Err(ApicError::GeneralProtection)
        );
        assert_eq!(
            a.set_apic_base(base | BASE_EXTD),
            Err(ApicError::GeneralProtection)
        );
        // x2APIC -> disabled resets; disabled -> x2APIC is illegal; disabled -> xAPIC fine.
        a.set_apic_base(base).unwrap();
        assert!(!a.hw_enabled());
        assert_eq!(a.pending_vector(), None);
        assert_eq!(
            a.set_apic_base(base | BASE_EN | BASE_EXTD),
            Err(ApicError::GeneralProtection)
        );
        a.set_apic_base(base | BASE_EN).unwrap();
        assert_eq!(a.mmio_read(SVR, 4, 0).unwrap(), 0xff);
        // Reserved bits and unsupported x2APIC.
        assert_eq!(
            a.set_apic_base(base | BASE_EN | 1),
            Err(ApicError::GeneralProtection)
        );
        assert_eq!(
            a.set_apic_base(base | BASE_EN | (1 << 45)),
            Err(ApicError::GeneralProtection)
        );
        let mut b = Lapic::new(0, 39, false);
        assert_eq!(
            b.set_apic_base(base | BASE_EN | BASE_EXTD),
            Err(ApicError::GeneralProtection)
        );
        // Relocation.
        b.set_apic_base(0xfed0_0000 | BASE_EN).unwrap();
        assert_eq!(b.mmio_base(), Some(Gpa::new(0xfed0_0000)));
        assert_eq!(b.apic_base() & BASE_BSP, BASE_BSP);
    }

    #[test]
    fn x2apic_msrs() {
        let mut a = Lapic::new(5, 39, true);
        assert_eq!(a.rdmsr(0x802, 0), Err(ApicError::GeneralProtection)); // not in x2APIC mode
        a.set_apic_base(0xfee0_0000 | BASE_EN | BASE_EXTD).unwrap();
        assert_eq!(a.rdmsr(0x802, 0).unwrap(), 5);
        assert_eq!(a.rdmsr(0x80d, 0).unwrap(), 1 << 5);
        assert_eq!(a.wrmsr(0x802, 1, 0), Err(ApicError::GeneralProtection)); // read-only ID
        assert_eq!(a.rdmsr(0x80e, 0), Err(ApicError::GeneralProtection)); // no DFR
        assert_eq!(a.rdmsr(0x80b, 0), Err(ApicError::GeneralProtection)); // EOI write-only
        assert_eq!(a.rdmsr(0x831, 0), Err(ApicError::GeneralProtection)); // no ICR high
        a.wrmsr(0x80f, 0x1ff, 0).unwrap();
        assert_eq!(a.wrmsr(0x80b, 1, 0), Err(ApicError::GeneralProtection)); // non-zero EOI
        a.wrmsr(0x83f, 0x61, 0).unwrap(); // SELF IPI
        assert_eq!(a.pending_vector(), Some(0x61));
        a.wrmsr(0x830, (5u64 << 32) | 0x62, 0).unwrap(); // ICR to ID 5
        assert_eq!(a.rdmsr(0x830, 0).unwrap(), (5u64 << 32) | 0x62);
        assert_eq!(a.acknowledge(), 0x62);
        assert_eq!(a.wrmsr(0x83f, 0x100, 0), Err(ApicError::GeneralProtection));
        assert_eq!(
            a.wrmsr(0x808, 1 << 32, 0),
            Err(ApicError::GeneralProtection)
        );
        // Timer through MSRs.
        a.wrmsr(0x83e, 0xb, 0).unwrap();
        a.wrmsr(0x832, 0x40, 0).unwrap();
        a.wrmsr(0x838, 10, 100).unwrap();
        assert_eq!(a.rdmsr(0x839, 105).unwrap(), 5);
    }

    #[test]
    fn tsc_deadline_follows_the_tsc_offset() {
        let mut a = enabled();
        w(&mut a, LVT_T, 0x4_0033);
        // The guest wrote IA32_TSC: its TSC runs 1 000 000 ahead of the board's.
        a.set_tsc_offset(1_000_000, 0).unwrap();
        a.set_tsc_deadline(1_000_500, 10).unwrap();
        assert_eq!(a.tsc_deadline(), 1_000_500);
        assert_eq!(a.next_timer_event(10), Some(500));
        a.advance(499).unwrap();
        assert_eq!(a.pending_vector(), None);
        a.advance(500).unwrap();
        assert_eq!(a.acknowledge(), 0x33);
        w(&mut a, EOI, 0);
        // Moving the TSC past an armed deadline fires it at once.
        a.set_tsc_deadline(2_000_000, 600).unwrap();
        assert_eq!(a.next_timer_event(600), Some(1_000_000));
        a.set_tsc_offset(1_999_500, 600).unwrap();
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.acknowledge(), 0x33);
        w(&mut a, EOI, 0);
        // Moving it back postpones the deadline.
        a.set_tsc_deadline(2_000_000, 700).unwrap(); // TSC 2 000 200: fires at once
        assert_eq!(a.acknowledge(), 0x33);
        w(&mut a, EOI, 0);
        a.set_tsc_offset(0, 700).unwrap();
        a.set_tsc_deadline(2_000, 700).unwrap();
        assert_eq!(a.next_timer_event(700), Some(2_000));
        // TSC = 0 at board TSC 1000 (a wrapped offset): the far deadline is far, not past.
        a.set_tsc_offset(0u64.wrapping_sub(1000), 1000).unwrap();
        a.set_tsc_deadline(u64::MAX, 1000).unwrap();
        assert_eq!(a.next_timer_event(1000), Some(u64::MAX));
        a.advance(1_000_000).unwrap();
        assert_eq!(a.pending_vector(), None);
        // The count modes measure time and ignore the offset.
        w(&mut a, LVT_T, 0x34);
        w(&mut a, TDCR, 0b1011);
        a.mmio_write(TMICT, 4, 100, 2000).unwrap();
        assert_eq!(a.next_timer_event(2000), Some(2100));
        // The offset belongs to the processor: an APIC reset keeps it.
        a.set_apic_base(0xfee0_0100).unwrap();
        a.set_apic_base(0xfee0_0900).unwrap();
        assert_eq!(a.tsc_offset(), 0u64.wrapping_sub(1000));
        let b = Lapic::from_state(a.state(), 39, true);
        assert_eq!(b.tsc_offset(), a.tsc_offset());
    }

    #[test]
    fn tsc_deadline_msr_outside_deadline_mode() {
        // §11.5.4.1: reads 0 and ignores writes, never #GP, in any APIC mode.
        let mut a = Lapic::new(0, 39, true);
        a.set_tsc_deadline(100, 0).unwrap();
        assert_eq!(a.tsc_deadline(), 0);
        assert_eq!(a.next_timer_event(0), None);
        a.set_apic_base(0xfee0_0100).unwrap(); // globally disabled
        a.set_tsc_deadline(100, 0).unwrap();
        assert_eq!(a.tsc_deadline(), 0);
    }

    #[test]
    fn x2apic_reserved_bits_fault() {
        let mut a = Lapic::new(0, 39, true);
        a.set_apic_base(0xfee0_0000 | BASE_EN | BASE_EXTD).unwrap();
        let gp = Err(ApicError::GeneralProtection);
        assert_eq!(a.wrmsr(0x80f, 0x11ff, 0), gp); // SVR bit 12: no EOI suppression
        assert_eq!(a.wrmsr(0x80f, 0x3ff, 0), Ok(None)); // bit 9 is ignored
        assert_eq!(a.rdmsr(0x80f, 0), Ok(0x1ff));
        assert_eq!(a.wrmsr(0x808, 0x100, 0), gp); // TPR 31:8
        assert_eq!(a.wrmsr(0x832, 0x8_0040, 0), gp); // timer LVT bit 19
        assert_eq!(a.wrmsr(0x832, 0x0100, 0), gp); // timer LVT has no delivery mode
        assert_eq!(a.wrmsr(0x832, 0x1040, 0), Ok(None)); // delivery status: read-only
        assert_eq!(a.rdmsr(0x832, 0), Ok(0x40));
        assert_eq!(a.wrmsr(0x835, 0x0001_4700, 0), Ok(None)); // LINT0 remote IRR: read-only
        assert_eq!(a.wrmsr(0x835, 0x0002_0700, 0), gp);
        assert_eq!(a.wrmsr(0x837, 0x0400, 0), gp); // error LVT has no delivery mode
        assert_eq!(a.wrmsr(0x83e, 0x4, 0), gp); // divide configuration bit 2
        assert_eq!(a.wrmsr(0x83e, 0xb, 0), Ok(None));
        assert_eq!(a.wrmsr(0x838, u64::from(u32::MAX), 0), Ok(None)); // no reserved bits
        assert_eq!(a.wrmsr(0x830, 0x0001_0040, 0), gp); // ICR bit 16
        assert_eq!(a.wrmsr(0x830, 0x0000_1041, 0), Ok(None)); // ICR bit 12 is ignored
        assert_eq!(a.acknowledge(), 0x41);
        // Delivery mode 001 is reserved in the x2APIC ICR.
        assert!(matches!(
            a.wrmsr(0x830, 0x0141, 0),
            Err(ApicError::Unimplemented(_))
        ));
        // In xAPIC mode the same values are accepted and their undefined bits dropped.
        let mut b = enabled();
        w(&mut b, SVR, 0x11ff);
        w(&mut b, LVT_T, 0x8_0040);
        assert_eq!(b.mmio_read(LVT_T, 4, 0).unwrap(), 0x40);
        w(&mut b, TDCR, 0xf);
        assert_eq!(b.mmio_read(TDCR, 4, 0).unwrap(), 0xb);
    }

    #[test]
    fn bad_mmio_widths_are_reported() {
        let mut a = enabled();
        assert!(a.mmio_read(0x21, 4, 0).is_err());
        assert!(a.mmio_read(0x20, 1, 0).is_err());
        assert!(a.mmio_write(0x20, 8, 0, 0).is_err());
        // Reserved registers read as zero in xAPIC mode.
        assert_eq!(a.mmio_read(0x400, 4, 0).unwrap(), 0);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut a = enabled();
        a.deliver(&msg(0x70)).unwrap();
        let b = Lapic::from_state(a.state(), 39, true);
        assert_eq!(b.state(), a.state());
        assert_eq!(b.pending_vector(), Some(0x70));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One guest action on the APIC.
    #[derive(Clone, Debug)]
    enum Op {
        Mmio {
            offset: u16,
            value: u32,
            write: bool,
        },
        Msr {
            index: u8,
            value: u64,
            write: bool,
        },
        Base(u64),
        Deliver(u8, bool),
        Deadline(u64),
        TscOffset(u64),
        Ack,
        Advance(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..0x400, any::<u32>(), any::<bool>()).prop_map(|(o, value, write)| Op::Mmio {
                offset: o << 4 >> 4 << 4,
                value,
                write
            }),
            (0u8..0x40, any::<u64>(), any::<bool>()).prop_map(|(index, value, write)| Op::Msr {
                index,
                value,
                write
            }),
            prop_oneof![
                Just(0xfee0_0900u64),
                Just(0xfee0_0d00),
                Just(0xfee0_0100),
                any::<u64>()
            ]
            .prop_map(Op::Base),
            (any::<u8>(), any::<bool>()).prop_map(|(v, l)| Op::Deliver(v, l)),
            prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()].prop_map(Op::Deadline),
            prop_oneof![Just(0u64), Just(1u64 << 63), any::<u64>()].prop_map(Op::TscOffset),
            Just(Op::Ack),
            any::<u32>().prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever a guest does, the APIC neither panics nor breaks its invariants: PPR is
        /// at least TPR's class, a pending vector is above PPR, and x2APIC implies enabled.
        #[test]
        fn random_guest_actions_keep_invariants(ops in proptest::collection::vec(op(), 0..64)) {
            let mut a = Lapic::new(0, 39, true);
            let mut tsc = 0u64;
            for op in ops {
                match op {
                    Op::Mmio { offset, value, write: true } => { let _ = a.mmio_write(u64::from(offset), 4, value, tsc); }
                    Op::Mmio { offset, write: false, .. } => { let _ = a.mmio_read(u64::from(offset), 4, tsc); }
                    Op::Msr { index, value, write: true } => { let _ = a.wrmsr(0x800 + u32::from(index), value, tsc); }
                    Op::Msr { index, write: false, .. } => { let _ = a.rdmsr(0x800 + u32::from(index), tsc); }
                    Op::Base(v) => { let _ = a.set_apic_base(v); }
                    Op::Deliver(vector, level) => {
                        let m = InterruptMessage { vector, delivery: DeliveryMode::Fixed, logical: false, destination: 0, level_triggered: level };
                        let _ = a.deliver(&m);
                    }
                    Op::Deadline(v) => { let _ = a.set_tsc_deadline(v, tsc); }
                    Op::TscOffset(v) => { let _ = a.set_tsc_offset(v, tsc); }
                    Op::Ack => { let _ = a.acknowledge(); }
                    Op::Advance(d) => { tsc += u64::from(d); let _ = a.advance(tsc); }
                }
                prop_assert!(a.ppr() >> 4 >= a.state().tpr >> 4);
                if let Some(v) = a.pending_vector() {
                    prop_assert!(v >> 4 > a.ppr() >> 4);
                }
                prop_assert!(!a.x2apic() || a.hw_enabled());
                // Once brought up to `tsc`, an armed timer is due strictly later, whatever
                // the deadline and the TSC offset.
                if a.advance(tsc).is_ok() && let Some(next) = a.next_timer_event(tsc) {
                    prop_assert!(next > tsc);
                }
            }
        }
    }
}
