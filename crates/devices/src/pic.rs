//! The PC's cascaded pair of Intel 8259A programmable interrupt controllers (8259A datasheet:
//! "Initialization Command Words", "Operation Command Words", "Interrupt Sequence",
//! "Special Fully Nested Mode", "Automatic Rotation", "Poll Command").
//!
//! Master at ports 0x20/0x21, slave at 0xA0/0xA1 cascaded on master input 2, as on the AT.
//! Implemented: the ICW1–ICW4 sequence (vector base, single/cascade, AEOI, special fully nested
//! mode), OCW1 masking, OCW2 non-specific/specific EOI and the rotation commands, OCW3 register
//! reads (IRR/ISR), poll and special mask mode; edge-triggered inputs with the datasheet's rising
//! edge latch; the INTA sequence through the cascade, with spurious IRQ 7 (master) and IRQ 15
//! (slave) when a request disappears before it is acknowledged.
//!
//! The edge/level control registers of PC chipsets (ELCR1/ELCR2 at 0x4D0/0x4D1, Intel PIIX3
//! datasheet §2.2.1.4) read as all inputs edge-triggered; writes that keep every input
//! edge-triggered are accepted.
//!
//! Not implemented and reported: level-triggered inputs (ICW1 bit 3, or an ELCR bit set) and
//! the MCS-80/85 mode (ICW4 bit 0 = 0).

use crate::Unimplemented;

/// Master command port.
pub const MASTER_CMD: u16 = 0x20;
/// Master data port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_CMD: u16 = 0xa0;
/// Slave data port.
pub const SLAVE_DATA: u16 = 0xa1;
/// ELCR1 (IRQ 0–7) and ELCR2 (IRQ 8–15).
pub const ELCR_PORTS: [u16; 2] = [0x4d0, 0x4d1];
/// Master input the slave cascades into.
const CASCADE_IRQ: u8 = 2;

/// ICW1 bit 4: this is an initialization command word.
const ICW1_INIT: u8 = 1 << 4;
/// ICW1 bit 3: level-triggered mode.
const ICW1_LTIM: u8 = 1 << 3;
/// ICW1 bit 1: single (no cascade).
const ICW1_SNGL: u8 = 1 << 1;
/// ICW1 bit 0: ICW4 needed.
const ICW1_IC4: u8 = 1 << 0;
/// ICW4 bit 0: 8086/8088 mode.
const ICW4_UPM: u8 = 1 << 0;
/// ICW4 bit 1: automatic EOI.
const ICW4_AEOI: u8 = 1 << 1;
/// ICW4 bit 4: special fully nested mode.
const ICW4_SFNM: u8 = 1 << 4;
/// Bit 3 distinguishes OCW3 (1) from OCW2 (0) when bit 4 is clear.
const OCW3_SELECT: u8 = 1 << 3;
/// OCW3 bit 2: poll command.
const OCW3_POLL: u8 = 1 << 2;
/// OCW3 bit 1: act on bit 0 (read register select).
const OCW3_RR: u8 = 1 << 1;
/// OCW3 bit 0: read ISR (1) or IRR (0).
const OCW3_RIS: u8 = 1 << 0;
/// OCW3 bit 6: act on bit 5 (special mask mode).
const OCW3_ESMM: u8 = 1 << 6;
/// OCW3 bit 5: special mask mode.
const OCW3_SMM: u8 = 1 << 5;

/// Where the initialization sequence stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitStep {
    /// Initialized: data-port writes are OCW1 (the mask).
    #[default]
    Ready,
    /// Expecting ICW2 (vector base).
    Icw2,
    /// Expecting ICW3 (cascade wiring).
    Icw3,
    /// Expecting ICW4 (mode).
    Icw4,
}

/// State of one 8259A.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChipState {
    /// Interrupt request register.
    pub irr: u8,
    /// In-service register.
    pub isr: u8,
    /// Interrupt mask register.
    pub imr: u8,
    /// Levels of the inputs (for the rising-edge latch).
    pub lines: u8,
    /// ICW2: vector of IR0 (bits 7:3).
    pub vector_base: u8,
    /// ICW3 as written.
    pub icw3: u8,
    /// Lowest-priority input minus... the rotation: input `(priority_add + k) & 7` has
    /// priority `k` (0 highest).
    pub priority_add: u8,
    /// ICW1 asked for ICW4.
    pub need_icw4: bool,
    /// ICW1 single mode.
    pub single: bool,
    /// Automatic EOI.
    pub auto_eoi: bool,
    /// Rotate on automatic EOI.
    pub rotate_on_aeoi: bool,
    /// Special fully nested mode.
    pub special_fully_nested: bool,
    /// Special mask mode.
    pub special_mask: bool,
    /// OCW3 selected reading ISR instead of IRR.
    pub read_isr: bool,
    /// A poll command is pending for the next command-port read.
    pub poll: bool,
    /// Initialization step.
    pub init: InitStep,
}

/// One 8259A.
#[derive(Clone, Copy, Debug, Default)]
struct Chip {
    s: ChipState,
}

impl Chip {
    /// Priority (0 = highest) of the highest-priority bit in `mask`, or 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.s.priority_add) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The input that would be acknowledged now, if any.
    fn pending(&self, is_master: bool) -> Option<u8> {
        let req = self.priority(self.s.irr & !self.s.imr);
        if req == 8 {
            return None;
        }
        let mut in_service = self.s.isr;
        if self.s.special_mask {
            in_service &= !self.s.imr;
        }
        if self.s.special_fully_nested && is_master {
            // The slave may interrupt again while its cascade input is in service.
            in_service &= !(1 << CASCADE_IRQ);
        }
        let cur = self.priority(in_service);
        (req < cur).then_some((req + self.s.priority_add) & 7)
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if level {
            if self.s.lines & bit == 0 {
                self.s.irr |= bit;
            }
            self.s.lines |= bit;
        } else {
            // A request must still be present at INTA; one that went away is no longer in
            // IRR (an INT already raised for it turns into the spurious IR7 at INTA).
            self.s.lines &= !bit;
            self.s.irr &= !bit;
        }
    }

    /// A low-then-high transition of an input that is high now, which the board saw only as a
    /// count of rising edges between two observations.
    fn pulse(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.s.lines & bit != 0 {
            self.s.irr |= bit;
        }
    }

    fn ack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.s.auto_eoi {
            if self.s.rotate_on_aeoi {
                self.s.priority_add = (irq + 1) & 7;
            }
        } else {
            self.s.isr |= bit;
        }
        self.s.irr &= !bit;
    }

    fn write_cmd(&mut self, value: u8) -> Result<(), Unimplemented> {
        if value & ICW1_INIT != 0 {
            if value & ICW1_LTIM != 0 {
                return Err(Unimplemented("8259 level-triggered mode (ICW1 bit 3)"));
            }
            // ICW1 clears IMR, ISR and the edge latch, sets IR7 to lowest priority, clears
            // special mask mode and selects IRR for reading (datasheet, "Initialization
            // Command Words").
            let lines = self.s.lines;
            self.s = ChipState {
                lines,
                need_icw4: value & ICW1_IC4 != 0,
                single: value & ICW1_SNGL != 0,
                init: InitStep::Icw2,
                ..ChipState::default()
            };
            return Ok(());
        }
        if value & OCW3_SELECT != 0 {
            if value & OCW3_POLL != 0 {
                self.s.poll = true;
            }
            if value & OCW3_RR != 0 {
                self.s.read_isr = value & OCW3_RIS != 0;
            }
            if value & OCW3_ESMM != 0 {
                self.s.special_mask = value & OCW3_SMM != 0;
            }
            return Ok(());
        }
        // OCW2: R, SL, EOI in bits 7:5, level in 2:0.
        let level = value & 7;
        match value >> 5 {
            0b000 => self.s.rotate_on_aeoi = false,
            0b100 => self.s.rotate_on_aeoi = true,
            cmd @ (0b001 | 0b101) => {
                let p = self.priority(self.s.isr);
                if p != 8 {
                    let irq = (p + self.s.priority_add) & 7;
                    self.s.isr &= !(1 << irq);
                    if cmd == 0b101 {
                        self.s.priority_add = (irq + 1) & 7;
                    }
                }
            }
            0b011 => self.s.isr &= !(1 << level),
            0b111 => {
                self.s.isr &= !(1 << level);
                self.s.priority_add = (level + 1) & 7;
            }
            0b110 => self.s.priority_add = (level + 1) & 7,
            _ => {} // 0b010: no operation.
        }
        Ok(())
    }

    fn write_data(&mut self, value: u8) -> Result<(), Unimplemented> {
        match self.s.init {
            InitStep::Ready => self.s.imr = value,
            InitStep::Icw2 => {
                self.s.vector_base = value & 0xf8;
                self.s.init = if !self.s.single {
                    InitStep::Icw3
                } else if self.s.need_icw4 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw3 => {
                self.s.icw3 = value;
                self.s.init = if self.s.need_icw4 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                };
            }
            InitStep::Icw4 => {
                if value & ICW4_UPM == 0 {
                    return Err(Unimplemented("8259 MCS-80/85 mode (ICW4 bit 0 = 0)"));
                }
                self.s.auto_eoi = value & ICW4_AEOI != 0;
                self.s.special_fully_nested = value & ICW4_SFNM != 0;
                self.s.init = InitStep::Ready;
            }
        }
        Ok(())
    }
}

/// Snapshot of a [`PicPair`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicPairState {
    /// The master (IRQ 0–7).
    pub master: ChipState,
    /// The slave (IRQ 8–15).
    pub slave: ChipState,
}

/// Master and slave 8259A, cascaded on master IR2.
#[derive(Clone, Debug, Default)]
pub struct PicPair {
    master: Chip,
    slave: Chip,
}

impl PicPair {
    /// Both chips after power-up, before any ICW (IMR clear, vector base 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores from a snapshot.
    pub fn from_state(state: PicPairState) -> Self {
        Self {
            master: Chip { s: state.master },
            slave: Chip { s: state.slave },
        }
    }

    /// A snapshot.
    pub fn state(&self) -> PicPairState {
        PicPairState {
            master: self.master.s,
            slave: self.slave.s,
        }
    }

    /// Whether `port` is one of the four PIC ports.
    pub fn claims(port: u16) -> bool {
        matches!(port, MASTER_CMD | MASTER_DATA | SLAVE_CMD | SLAVE_DATA)
    }

    /// IN from an ELCR port: every input is edge-triggered.
    pub fn read_elcr(&self, _port: u16) -> u8 {
        0
    }

    /// OUT to an ELCR port: only "all edge-triggered" is implemented. (IRQ 0, 1, 2, 8 and 13
    /// cannot be level-triggered on a PC: their bits are reserved and ignored.)
    pub fn write_elcr(&mut self, port: u16, value: u8) -> Result<(), Unimplemented> {
        let reserved = if port == ELCR_PORTS[0] {
            0b0000_0111
        } else {
            0b0010_0001
        };
        if value & !reserved != 0 {
            return Err(Unimplemented("level-triggered 8259 inputs (ELCR bits set)"));
        }
        Ok(())
    }

    /// Recomputes the cascade input (master IR2 follows the slave's INT output).
    fn update_cascade(&mut self) {
        let slave_int = self.slave.pending(false).is_some();
        self.master.set_line(CASCADE_IRQ, slave_int);
    }

    /// Drives ISA interrupt request line `irq` (0–15) to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 if irq != CASCADE_IRQ => self.master.set_line(irq, level),
            8..=15 => self.slave.set_line(irq - 8, level),
            _ => {}
        }
        self.update_cascade();
    }

    /// A rising edge on line `irq`, which is high now, that the board saw only as an edge
    /// count (the line went low and high again between two observations). An edge whose
    /// level is already gone again is no request: the 8259A needs the input high until INTA.
    pub fn pulse_irq(&mut self, irq: u8) {
        match irq {
            0..=7 if irq != CASCADE_IRQ => self.master.pulse(irq),
            8..=15 => self.slave.pulse(irq - 8),
            _ => {}
        }
        self.update_cascade();
    }

    /// The master's INT output: an interrupt is waiting for INTA.
    pub fn output(&self) -> bool {
        self.master.pending(true).is_some()
    }

    /// The INTA cycle: the vector the PIC puts on the bus. A request that vanished before
    /// INTA gives the spurious IR7 vector of the chip concerned, without setting ISR.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.pending(true) {
            Some(CASCADE_IRQ) => {
                let v = match self.slave.pending(false) {
                    Some(irq) => {
                        self.slave.ack(irq);
                        self.slave.s.vector_base | irq
                    }
                    None => self.slave.s.vector_base | 7,
                };
                self.master.ack(CASCADE_IRQ);
                v
            }
            Some(irq) => {
                self.master.ack(irq);
                self.master.s.vector_base | irq
            }
            None => self.master.s.vector_base | 7,
        };
        self.update_cascade();
        vector
    }

    fn poll_read(&mut self, slave: bool) -> u8 {
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        chip.s.poll = false;
        match chip.pending(!slave) {
            Some(irq) => {
                chip.ack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    /// IN from one of the PIC ports.
    pub fn read(&mut self, port: u16) -> u8 {
        let slave = port & 0x80 != 0;
        let value = if self.chip(slave).s.poll {
            self.poll_read(slave)
        } else {
            let s = &self.chip(slave).s;
            match port & 1 {
                0 if s.read_isr => s.isr,
                0 => s.irr,
                _ => s.imr,
            }
        };
        self.update_cascade();
        value
    }

    /// OUT to one of the PIC ports.
    pub fn write(&mut self, port: u16, value: u8) -> Result<(), Unimplemented> {
        let slave = port & 0x80 != 0;
        let chip = if slave {
            &mut self.slave
        } else {
            &mut self.master
        };
        let r = if port & 1 == 0 {
            chip.write_cmd(value)
        } else {
            chip.write_data(value)
        };
        self.update_cascade();
        r
    }

    fn chip(&self, slave: bool) -> &Chip {
        if slave { &self.slave } else { &self.master }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequence Linux and most kernels use: remap to 0x20/0x28, cascade on IR2, 8086 mode.
    fn remapped() -> PicPair {
        let mut p = PicPair::new();
        for (port, v) in [
            (MASTER_CMD, 0x11),
            (SLAVE_CMD, 0x11),
            (MASTER_DATA, 0x20),
            (SLAVE_DATA, 0x28),
            (MASTER_DATA, 0x04),
            (SLAVE_DATA, 0x02),
            (MASTER_DATA, 0x01),
            (SLAVE_DATA, 0x01),
            (MASTER_DATA, 0x00),
            (SLAVE_DATA, 0x00),
        ] {
            p.write(port, v).unwrap();
        }
        p
    }

    #[test]
    fn remap_and_deliver_master_irq() {
        let mut p = remapped();
        assert!(!p.output());
        p.set_irq(0, true);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x20);
        assert!(!p.output());
        // Still high: edge-triggered, so no new request until it goes low and high again.
        p.set_irq(0, true);
        assert!(!p.output());
        p.write(MASTER_CMD, 0x20).unwrap(); // non-specific EOI
        assert!(!p.output());
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert!(p.output());
    }

    #[test]
    fn slave_irq_goes_through_cascade() {
        let mut p = remapped();
        p.set_irq(12, true);
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x2c);
        p.write(MASTER_CMD, OCW3_SELECT | OCW3_RR | OCW3_RIS)
            .unwrap();
        assert_eq!(p.read(MASTER_CMD), 1 << 2);
        p.write(SLAVE_CMD, OCW3_SELECT | OCW3_RR | OCW3_RIS)
            .unwrap();
        assert_eq!(p.read(SLAVE_CMD), 1 << 4);
        p.write(SLAVE_CMD, 0x20).unwrap();
        p.write(MASTER_CMD, 0x20).unwrap();
        assert_eq!(p.read(SLAVE_CMD), 0);
        assert_eq!(p.read(MASTER_CMD), 0);
    }

    #[test]
    fn masking_holds_requests_in_irr() {
        let mut p = remapped();
        p.write(MASTER_DATA, 0xff).unwrap();
        p.set_irq(1, true);
        assert!(!p.output());
        assert_eq!(p.read(MASTER_DATA), 0xff);
        assert_eq!(p.read(MASTER_CMD), 0x02); // IRR
        p.write(MASTER_DATA, 0xfe).unwrap();
        assert!(!p.output());
        p.write(MASTER_DATA, 0x00).unwrap();
        assert!(p.output());
        assert_eq!(p.acknowledge(), 0x21);
    }

    #[test]
    fn priority_and_nesting() {
        let mut p = remapped();
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x23);
        p.set_irq(5, true); // lower priority than 3: waits
        assert!(!p.output());
        p.set_irq(1, true); // higher: nests
        assert_eq!(p.acknowledge(), 0x21);
        p.write(MASTER_CMD, 0x20).unwrap(); // EOI for 1
        assert!(!p.output());
        p.write(MASTER_CMD, 0x63).unwrap(); // specific EOI for 3
        assert_eq!(p.acknowledge(), 0x25);
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut p = remapped();
        assert_eq!(p.acknowledge(), 0x27);
        assert_eq!(p.state().master.isr, 0);
        // A slave request masked away between INT and INTA.
        p.set_irq(9, true);
        p.write(SLAVE_DATA, 0x02).unwrap();
        // The cascade input is now low again, so the master has nothing: IRQ 7.
        assert_eq!(p.acknowledge(), 0x27);
        // A master request that goes away before INTA.
        p.set_irq(3, true);
        assert!(p.output());
        p.set_irq(3, false);
        assert_eq!(p.acknowledge(), 0x27);
        // The slave's INT seen by the master, its request gone by INTA: IRQ 15.
        let mut st = p.state();
        st.master.irr |= 1 << 2;
        st.master.lines |= 1 << 2;
        let mut q = PicPair::from_state(st);
        assert_eq!(q.acknowledge(), 0x2f);
        assert_eq!(q.state().slave.isr, 0);
    }

    #[test]
    fn auto_eoi_rotation_and_poll() {
        let mut p = PicPair::new();
        p.write(MASTER_CMD, 0x13).unwrap(); // single, ICW4
        p.write(MASTER_DATA, 0x08).unwrap();
        p.write(MASTER_DATA, 0x03).unwrap(); // 8086, AEOI
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x0c);
        assert_eq!(p.state().master.isr, 0);
        p.write(MASTER_CMD, 0xc4).unwrap(); // set priority: IR4 lowest
        p.set_irq(3, true);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x0d);
        p.write(MASTER_CMD, OCW3_SELECT | OCW3_POLL).unwrap();
        assert_eq!(p.read(MASTER_CMD), 0x83);
        assert_eq!(p.read(MASTER_CMD), 0); // IRR, now empty
    }

    #[test]
    fn elcr_is_all_edge() {
        let mut p = PicPair::new();
        assert_eq!(p.read_elcr(0x4d0), 0);
        assert!(p.write_elcr(0x4d0, 0x07).is_ok());
        assert!(p.write_elcr(0x4d1, 0x21).is_ok());
        assert!(p.write_elcr(0x4d1, 0x02).is_err());
        assert!(p.write_elcr(0x4d0, 0x08).is_err());
    }

    #[test]
    fn unsupported_modes_are_reported() {
        let mut p = PicPair::new();
        assert!(p.write(MASTER_CMD, 0x19).is_err());
        p.write(MASTER_CMD, 0x11).unwrap();
        p.write(MASTER_DATA, 0x20).unwrap();
        p.write(MASTER_DATA, 0x04).unwrap();
        assert!(p.write(MASTER_DATA, 0x00).is_err());
    }

    #[test]
    fn pulse_latches_and_snapshot_round_trips() {
        let mut p = remapped();
        p.pulse_irq(4); // line low: no request
        assert!(!p.output());
        p.set_irq(4, true);
        p.acknowledge();
        p.write(MASTER_CMD, 0x20).unwrap();
        p.pulse_irq(4); // low-high between observations, high now: a new request
        let q = PicPair::from_state(p.state());
        assert_eq!(q.state(), p.state());
        assert_eq!(p.acknowledge(), 0x24);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Random port traffic and IRQ lines never panic, and an acknowledged vector always
        /// comes from one of the two vector bases.
        #[test]
        fn random_traffic(ops in proptest::collection::vec((0u8..4, any::<u8>(), any::<bool>()), 0..128)) {
            let mut p = PicPair::new();
            for (kind, v, flag) in ops {
                match kind {
                    0 => { let _ = p.write([MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA][usize::from(v & 3)], v); }
                    1 => { let _ = p.read([MASTER_CMD, MASTER_DATA, SLAVE_CMD, SLAVE_DATA][usize::from(v & 3)]); }
                    2 => p.set_irq(v & 15, flag),
                    _ => {
                        let s = p.state();
                        let vec = p.acknowledge();
                        prop_assert!(vec & 0xf8 == s.master.vector_base || vec & 0xf8 == s.slave.vector_base);
                    }
                }
            }
        }
    }
}
