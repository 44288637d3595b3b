//! NS16550A UART (TI PC16550D datasheet, "Register Description", tables 2–7).
//!
//! Eight byte registers at offsets 0–7 of the device's window (0x3F8 for COM1):
//! RBR/THR and IER (DLL/DLM while LCR.DLAB = 1), IIR/FCR, LCR, MCR, LSR, MSR, SCR.
//! Transmission is instantaneous in virtual time: a byte written to THR goes to the
//! [`ByteSink`] at once, so THR and the transmitter are always empty again (LSR.THRE = TEMT = 1)
//! and the "THR empty" interrupt becomes pending right after the write, as on a UART whose
//! line is infinitely fast. The receiver has the 16-byte FIFO of the 16550A (one byte deep
//! while FCR.0 = 0, the 16450-compatible mode); bytes arrive through [`Uart::receive`].
//! Loopback (MCR.4) routes THR into the receiver and the modem-control outputs into the modem
//! status inputs as the datasheet's figure 11 shows.
//!
//! Reads of the receiver, transmitted bytes and overruns are reported to a [`SerialEvents`]
//! receiver ([`NoEvents`] by default) for counters and tracing.
//!
//! The interrupt output is the chip's INTR pin. The PC gates it with MCR.OUT2 on the board;
//! like QEMU's `serial.c`, this model drives the pin regardless of OUT2 (simple kernels that
//! never set OUT2 still get their interrupts under QEMU, and must under nestvisor).
//!
//! Received-data interrupts: with the FIFO enabled, "received data available" (IIR = 0x4) is
//! reported once the trigger level is reached and "character timeout" (IIR = 0xC) for fewer
//! bytes. The timeout is four character times on real hardware; here it is immediate, since
//! characters arrive only between guest instructions.

use crate::{ByteSink, IrqLine};

/// Depth of the receive FIFO (16550A).
pub const FIFO_DEPTH: usize = 16;

/// Register offsets inside the 8-byte window.
pub mod reg {
    /// Receiver buffer (read) / transmitter holding (write); divisor latch LSB when DLAB = 1.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor latch MSB when DLAB = 1.
    pub const IER: u16 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Modem status.
    pub const MSR: u16 = 6;
    /// Scratch.
    pub const SCR: u16 = 7;
}

/// IER: enable received-data-available (and timeout) interrupt.
const IER_ERBFI: u8 = 1 << 0;
/// IER: enable transmitter-holding-register-empty interrupt.
const IER_ETBEI: u8 = 1 << 1;
/// IER: enable receiver-line-status interrupt.
const IER_ELSI: u8 = 1 << 2;
/// IER: enable modem-status interrupt.
const IER_EDSSI: u8 = 1 << 3;
/// IER bits that exist on a 16550A (7:4 read as zero).
const IER_MASK: u8 = 0x0f;

/// IIR: no interrupt pending (bit 0 is active low).
const IIR_NONE: u8 = 0x01;
/// IIR: receiver line status (highest priority).
const IIR_RLS: u8 = 0x06;
/// IIR: received data available.
const IIR_RDA: u8 = 0x04;
/// IIR: character timeout (FIFO mode only).
const IIR_TIMEOUT: u8 = 0x0c;
/// IIR: transmitter holding register empty.
const IIR_THRE: u8 = 0x02;
/// IIR: modem status (lowest priority).
const IIR_MODEM: u8 = 0x00;
/// IIR bits 7:6: FIFOs enabled.
const IIR_FIFO_ENABLED: u8 = 0xc0;

/// FCR: enable FIFOs.
const FCR_ENABLE: u8 = 1 << 0;
/// FCR: clear the receive FIFO (self-clearing).
const FCR_CLEAR_RX: u8 = 1 << 1;
/// FCR: clear the transmit FIFO (self-clearing).
const FCR_CLEAR_TX: u8 = 1 << 2;
/// FCR bits 7:6: receiver trigger level.
const FCR_TRIGGER_SHIFT: u8 = 6;

/// LCR: divisor latch access bit.
const LCR_DLAB: u8 = 1 << 7;

/// MCR: data terminal ready.
const MCR_DTR: u8 = 1 << 0;
/// MCR: request to send.
const MCR_RTS: u8 = 1 << 1;
/// MCR: OUT1.
const MCR_OUT1: u8 = 1 << 2;
/// MCR: OUT2.
const MCR_OUT2: u8 = 1 << 3;
/// MCR: loopback.
const MCR_LOOP: u8 = 1 << 4;
/// MCR bits that exist on a 16550A.
const MCR_MASK: u8 = 0x1f;

/// LSR: data ready.
const LSR_DR: u8 = 1 << 0;
/// LSR: overrun error.
const LSR_OE: u8 = 1 << 1;
/// LSR: break interrupt (bit 4), framing (bit 3) and parity (bit 2) errors never happen on a
/// virtual line, so only OE can raise a line-status interrupt.
const LSR_ERRORS: u8 = 0x1e;
/// LSR: transmitter holding register empty.
const LSR_THRE: u8 = 1 << 5;
/// LSR: transmitter empty (THR and shift register).
const LSR_TEMT: u8 = 1 << 6;

/// MSR: delta CTS.
const MSR_DCTS: u8 = 1 << 0;
/// MSR: delta DSR.
const MSR_DDSR: u8 = 1 << 1;
/// MSR: trailing edge of RI.
const MSR_TERI: u8 = 1 << 2;
/// MSR: delta DCD.
const MSR_DDCD: u8 = 1 << 3;
/// MSR: clear to send.
const MSR_CTS: u8 = 1 << 4;
/// MSR: data set ready.
const MSR_DSR: u8 = 1 << 5;
/// MSR: ring indicator.
const MSR_RI: u8 = 1 << 6;
/// MSR: data carrier detect.
const MSR_DCD: u8 = 1 << 7;
/// MSR delta bits.
const MSR_DELTAS: u8 = MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD;
/// Modem inputs outside loopback: a terminal that is connected and ready (CTS, DSR, DCD).
const MSR_CONNECTED: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// Snapshot of a [`Uart`]: every register and the receive FIFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UartState {
    /// Divisor latch (DLM:DLL).
    pub divisor: u16,
    /// IER.
    pub ier: u8,
    /// LCR.
    pub lcr: u8,
    /// MCR.
    pub mcr: u8,
    /// LSR (THRE/TEMT and DR are recomputed; OE is sticky until read).
    pub lsr: u8,
    /// MSR.
    pub msr: u8,
    /// SCR.
    pub scr: u8,
    /// FCR as last written (bits 0 and 7:6 are kept).
    pub fcr: u8,
    /// Whether a THR-empty interrupt is pending (cleared by reading IIR or writing THR).
    pub thre_pending: bool,
    /// Receive FIFO contents, oldest first (at most [`FIFO_DEPTH`] bytes).
    pub rx: [u8; FIFO_DEPTH],
    /// Number of valid bytes in `rx`.
    pub rx_len: u8,
}

impl Default for UartState {
    /// The state after a hardware reset (datasheet table 5, "Reset" column): divisor
    /// unspecified (0 here), all registers zero except LSR = 0x60 and IIR = 0x01.
    fn default() -> Self {
        Self {
            divisor: 0,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr: LSR_THRE | LSR_TEMT,
            msr: MSR_CONNECTED,
            scr: 0,
            fcr: 0,
            thre_pending: false,
            rx: [0; FIFO_DEPTH],
            rx_len: 0,
        }
    }
}

/// What a UART tells its owner about (for counters and tracing); every method has a no-op
/// default, so an owner implements only what it watches.
pub trait SerialEvents {
    /// The guest read a byte from the receiver.
    fn buffer_read(&mut self) {}
    /// A byte left through the transmitter (or looped back).
    fn out_byte(&mut self) {}
    /// A received byte was dropped: the receiver was full (overrun).
    fn rx_overrun(&mut self) {}
}

/// [`SerialEvents`] that nobody watches.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl SerialEvents for NoEvents {}

/// A 16550A UART whose transmitter writes to `S`, whose INTR pin is `L` and whose events go
/// to `E`.
#[derive(Debug)]
pub struct Uart<S, L, E = NoEvents> {
    state: UartState,
    out: S,
    irq: L,
    events: E,
}

impl<S: ByteSink, L: IrqLine> Uart<S, L> {
    /// A UART in its reset state.
    pub fn new(out: S, irq: L) -> Self {
        Self::from_state(UartState::default(), out, irq)
    }

    /// Restores a UART from a snapshot.
    pub fn from_state(state: UartState, out: S, irq: L) -> Self {
        Uart::with_events(state, out, irq, NoEvents)
    }
}

impl<S: ByteSink, L: IrqLine, E: SerialEvents> Uart<S, L, E> {
    /// A UART in `state` that reports to `events`.
    pub fn with_events(state: UartState, out: S, irq: L, events: E) -> Self {
        let mut uart = Self {
            state,
            out,
            irq,
            events,
        };
        uart.update_irq();
        uart
    }

    /// The event receiver.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// A snapshot of the registers.
    pub fn state(&self) -> UartState {
        self.state.clone()
    }

    /// The output sink.
    pub fn sink(&self) -> &S {
        &self.out
    }

    /// The output sink, mutably (to flush it).
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.out
    }

    /// The interrupt line.
    pub fn irq_line(&self) -> &L {
        &self.irq
    }

    /// The interrupt line, mutably.
    pub fn irq_line_mut(&mut self) -> &mut L {
        &mut self.irq
    }

    fn dlab(&self) -> bool {
        self.state.lcr & LCR_DLAB != 0
    }

    fn fifo_enabled(&self) -> bool {
        self.state.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() { FIFO_DEPTH } else { 1 }
    }

    fn trigger_level(&self) -> usize {
        match self.state.fcr >> FCR_TRIGGER_SHIFT {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// Whether the receiver can take another byte without an overrun.
    pub fn can_receive(&self) -> bool {
        usize::from(self.state.rx_len) < self.rx_capacity()
    }

    /// A byte arrives on the serial line (or through loopback). A full receiver sets LSR.OE
    /// and drops the byte, as the datasheet's overrun rule says (the FIFO keeps its contents).
    pub fn receive(&mut self, byte: u8) {
        let len = usize::from(self.state.rx_len);
        if len < self.rx_capacity() {
            self.state.rx[len] = byte;
            self.state.rx_len += 1;
        } else {
            self.state.lsr |= LSR_OE;
            self.events.rx_overrun();
        }
        self.update_irq();
    }

    fn pop_rx(&mut self) -> u8 {
        if self.state.rx_len == 0 {
            return 0;
        }
        let byte = self.state.rx[0];
        self.state.rx.copy_within(1.., 0);
        self.state.rx_len -= 1;
        self.events.buffer_read();
        byte
    }

    fn lsr(&self) -> u8 {
        let mut lsr = (self.state.lsr & LSR_ERRORS) | LSR_THRE | LSR_TEMT;
        if self.state.rx_len > 0 {
            lsr |= LSR_DR;
        }
        lsr
    }

    fn msr(&self) -> u8 {
        if self.state.mcr & MCR_LOOP != 0 {
            // Datasheet: in loopback, CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2.
            let m = self.state.mcr;
            let mut v = self.state.msr & MSR_DELTAS;
            if m & MCR_RTS != 0 {
                v |= MSR_CTS;
            }
            if m & MCR_DTR != 0 {
                v |= MSR_DSR;
            }
            if m & MCR_OUT1 != 0 {
                v |= MSR_RI;
            }
            if m & MCR_OUT2 != 0 {
                v |= MSR_DCD;
            }
            v
        } else {
            self.state.msr
        }
    }

    /// The interrupt identification, in the datasheet's priority order (table 4).
    fn iir_id(&self) -> u8 {
        let ier = self.state.ier;
        if ier & IER_ELSI != 0 && self.state.lsr & LSR_ERRORS != 0 {
            IIR_RLS
        } else if ier & IER_ERBFI != 0 && self.state.rx_len > 0 {
            if !self.fifo_enabled() || usize::from(self.state.rx_len) >= self.trigger_level() {
                IIR_RDA
            } else {
                IIR_TIMEOUT
            }
        } else if ier & IER_ETBEI != 0 && self.state.thre_pending {
            IIR_THRE
        } else if ier & IER_EDSSI != 0 && self.msr() & MSR_DELTAS != 0 {
            IIR_MODEM
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let pending = self.iir_id() != IIR_NONE;
        self.irq.set_level(pending);
    }

    /// Reads the register at `offset` (0–7). Reads have the datasheet's side effects: RBR pops
    /// the FIFO, IIR clears a THR-empty interrupt it reports, LSR clears the error bits, MSR
    /// clears the delta bits.
    pub fn read(&mut self, offset: u16) -> u8 {
        let value = match offset {
            reg::DATA if self.dlab() => self.state.divisor.to_le_bytes()[0],
            reg::DATA => self.pop_rx(),
            reg::IER if self.dlab() => self.state.divisor.to_le_bytes()[1],
            reg::IER => self.state.ier,
            reg::IIR_FCR => {
                let id = self.iir_id();
                if id == IIR_THRE {
                    self.state.thre_pending = false;
                }
                let fifo = if self.fifo_enabled() {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            reg::LCR => self.state.lcr,
            reg::MCR => self.state.mcr,
            reg::LSR => {
                let v = self.lsr();
                self.state.lsr &= !LSR_ERRORS;
                v
            }
            reg::MSR => {
                let v = self.msr();
                self.state.msr &= !MSR_DELTAS;
                v
            }
            reg::SCR => self.state.scr,
            _ => 0xff,
        };
        self.update_irq();
        value
    }

    /// Writes `value` to the register at `offset` (0–7).
    pub fn write(&mut self, offset: u16, value: u8) {
        match offset {
            reg::DATA if self.dlab() => {
                self.state.divisor = (self.state.divisor & 0xff00) | u16::from(value);
            }
            reg::DATA => {
                if self.state.mcr & MCR_LOOP != 0 {
                    self.receive(value);
                } else {
                    self.out.put(value);
                }
                self.events.out_byte();
                // The byte left at once: THR is empty again.
                self.state.thre_pending = true;
            }
            reg::IER if self.dlab() => {
                self.state.divisor = (self.state.divisor & 0x00ff) | (u16::from(value) << 8);
            }
            reg::IER => {
                let old = self.state.ier;
                self.state.ier = value & IER_MASK;
                // Enabling ETBEI while THR is empty raises the interrupt immediately (the
                // 16550 behaviour Linux's autoconfig probes for).
                if old & IER_ETBEI == 0 && value & IER_ETBEI != 0 {
                    self.state.thre_pending = true;
                }
            }
            reg::IIR_FCR => {
                if value & FCR_ENABLE != self.state.fcr & FCR_ENABLE {
                    // Changing FCR.0 resets both FIFOs.
                    self.state.rx_len = 0;
                }
                if value & FCR_CLEAR_RX != 0 {
                    self.state.rx_len = 0;
                }
                // FCR_CLEAR_TX: the transmitter is always empty already.
                let _ = FCR_CLEAR_TX;
                self.state.fcr = value & (FCR_ENABLE | 0xc0);
            }
            reg::LCR => self.state.lcr = value,
            reg::MCR => {
                let before = self.msr();
                self.state.mcr = value & MCR_MASK;
                let after = self.msr();
                self.state.msr = (self.state.msr & !0xf0) | (after & 0xf0);
                self.state.msr |= modem_deltas(before, after);
                if value & MCR_LOOP == 0 {
                    self.state.msr = (self.state.msr & MSR_DELTAS) | MSR_CONNECTED;
                }
            }
            reg::LSR | reg::MSR => {} // Read-only on the 16550A (writes are for factory test).
            reg::SCR => self.state.scr = value,
            _ => {}
        }
        self.update_irq();
    }
}

/// MSR delta bits for a change of the modem inputs from `before` to `after`.
fn modem_deltas(before: u8, after: u8) -> u8 {
    let changed = before ^ after;
    let mut d = 0;
    if changed & MSR_CTS != 0 {
        d |= MSR_DCTS;
    }
    if changed & MSR_DSR != 0 {
        d |= MSR_DDSR;
    }
    if changed & MSR_DCD != 0 {
        d |= MSR_DDCD;
    }
    // TERI: RI went from on to off.
    if before & MSR_RI != 0 && after & MSR_RI == 0 {
        d |= MSR_TERI;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LatchedLine;
    use crate::test_utils::VecSink;

    fn uart() -> Uart<VecSink, LatchedLine> {
        Uart::new(VecSink::default(), LatchedLine::default())
    }

    #[test]
    fn reset_values() {
        let mut u = uart();
        assert_eq!(u.read(reg::IIR_FCR), 0x01);
        assert_eq!(u.read(reg::LSR), 0x60);
        assert_eq!(u.read(reg::IER), 0);
        assert_eq!(u.read(reg::LCR), 0);
        assert!(!u.irq_line().level());
    }

    #[test]
    fn thr_writes_reach_the_sink() {
        let mut u = uart();
        for b in b"hi\n" {
            assert_ne!(u.read(reg::LSR) & LSR_THRE, 0);
            u.write(reg::DATA, *b);
        }
        assert_eq!(u.sink().0, b"hi\n");
    }

    #[test]
    fn divisor_latch_is_behind_dlab() {
        let mut u = uart();
        u.write(reg::LCR, 0x83);
        u.write(reg::DATA, 0x01);
        u.write(reg::IER, 0x02);
        assert_eq!(u.read(reg::DATA), 0x01);
        assert_eq!(u.read(reg::IER), 0x02);
        u.write(reg::LCR, 0x03);
        assert_eq!(u.state().divisor, 0x0201);
        assert_eq!(u.read(reg::IER), 0);
        assert!(u.sink().0.is_empty());
    }

    #[test]
    fn thr_empty_interrupt_on_enable_cleared_by_iir_read() {
        let mut u = uart();
        u.write(reg::IER, IER_ETBEI);
        assert!(u.irq_line().level());
        assert_eq!(u.read(reg::IIR_FCR), IIR_THRE);
        assert!(!u.irq_line().level());
        assert_eq!(u.read(reg::IIR_FCR), IIR_NONE);
        u.write(reg::DATA, b'x');
        assert!(u.irq_line().level());
    }

    #[test]
    fn rx_interrupt_and_fifo() {
        let mut u = uart();
        u.write(reg::IER, IER_ERBFI);
        u.receive(b'a');
        assert!(u.irq_line().level());
        assert_eq!(u.read(reg::IIR_FCR), IIR_RDA);
        assert_eq!(u.read(reg::LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read(reg::DATA), b'a');
        assert!(!u.irq_line().level());
        assert_eq!(u.read(reg::LSR) & LSR_DR, 0);

        // FIFO mode, trigger level 4: fewer bytes report a character timeout.
        u.write(reg::IIR_FCR, FCR_ENABLE | (1 << FCR_TRIGGER_SHIFT));
        u.receive(b'1');
        assert_eq!(u.read(reg::IIR_FCR), IIR_TIMEOUT | IIR_FIFO_ENABLED);
        for b in b"234" {
            u.receive(*b);
        }
        assert_eq!(u.read(reg::IIR_FCR), IIR_RDA | IIR_FIFO_ENABLED);
        assert_eq!(u.read(reg::DATA), b'1');
        assert_eq!(u.read(reg::DATA), b'2');
    }

    #[test]
    fn overrun_sets_oe_and_line_status_interrupt() {
        let mut u = uart();
        u.write(reg::IER, IER_ELSI | IER_ERBFI);
        u.receive(1);
        u.receive(2); // no FIFO: one byte deep
        assert_eq!(u.read(reg::IIR_FCR), IIR_RLS);
        assert_eq!(u.read(reg::LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(u.read(reg::LSR) & LSR_OE, 0);
        assert_eq!(u.read(reg::IIR_FCR), IIR_RDA);
        assert_eq!(u.read(reg::DATA), 1);
    }

    #[test]
    fn loopback_routes_thr_and_modem_lines() {
        let mut u = uart();
        u.write(reg::MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        let msr = u.read(reg::MSR);
        assert_eq!(msr & 0xf0, MSR_CTS | MSR_DCD);
        u.write(reg::DATA, 0x5a);
        assert!(u.sink().0.is_empty());
        assert_eq!(u.read(reg::DATA), 0x5a);
        u.write(reg::MCR, MCR_OUT2);
        assert_eq!(u.read(reg::MSR) & 0xf0, MSR_CONNECTED);
    }

    #[derive(Debug, Default)]
    struct Counts {
        read: u32,
        out: u32,
        overrun: u32,
    }

    impl SerialEvents for Counts {
        fn buffer_read(&mut self) {
            self.read += 1;
        }
        fn out_byte(&mut self) {
            self.out += 1;
        }
        fn rx_overrun(&mut self) {
            self.overrun += 1;
        }
    }

    #[test]
    fn events_are_reported() {
        let mut u = Uart::with_events(
            UartState::default(),
            VecSink::default(),
            LatchedLine::default(),
            Counts::default(),
        );
        u.write(reg::DATA, b'a');
        u.receive(1);
        u.receive(2);
        u.read(reg::DATA);
        u.read(reg::DATA); // empty: no event
        let c = u.events();
        assert_eq!((c.read, c.out, c.overrun), (1, 1, 1));
    }

    #[test]
    fn snapshot_round_trip() {
        let mut u = uart();
        u.write(reg::SCR, 0x42);
        u.write(reg::IER, IER_ERBFI);
        u.receive(7);
        let s = u.state();
        let mut v = Uart::from_state(s.clone(), VecSink::default(), LatchedLine::default());
        assert_eq!(v.state(), s);
        assert!(v.irq_line().level());
        assert_eq!(v.read(reg::SCR), 0x42);
        assert_eq!(v.read(reg::DATA), 7);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::LatchedLine;
    use crate::test_utils::VecSink;
    use proptest::prelude::*;

    proptest! {
        /// Random register traffic never panics; the INTR pin is high exactly when IIR says an
        /// interrupt is pending; THR is always empty (transmission is instantaneous).
        #[test]
        fn random_traffic(ops in proptest::collection::vec((0u16..9, any::<u8>(), 0u8..3), 0..128)) {
            let mut u = Uart::new(VecSink::default(), LatchedLine::default());
            for (offset, value, kind) in ops {
                match kind {
                    0 => u.write(offset, value),
                    1 => { let _ = u.read(offset); }
                    _ => u.receive(value),
                }
                let pending = u.iir_id() != IIR_NONE;
                prop_assert_eq!(u.irq_line().level(), pending);
                prop_assert_eq!(u.lsr() & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
                prop_assert!(usize::from(u.state().rx_len) <= FIFO_DEPTH);
            }
        }
    }
}
