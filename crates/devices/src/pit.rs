//! The Intel 8254 programmable interval timer (8254 datasheet: "Control Word Format",
//! "Read-Back Command", "Counter Latch Command", "Mode Definitions"), clocked at
//! 1.193182 MHz from virtual time.
//!
//! Ports 0x40–0x42 are counters 0–2, 0x43 the control word. On the PC, counter 0's OUT drives
//! IRQ 0 (the [`IrqLine`] given to [`Pit::new`]), counter 2's gate and output are wired to
//! system control port B (0x61), counter 1's output is unused.
//!
//! Implemented: modes 0 (interrupt on terminal count), 2 (rate generator) and 3 (square wave),
//! binary counting, LSB/MSB/LSB-then-MSB access, the counter latch and read-back commands
//! (count and status), the gate input (mode 0 suspends counting while the gate is low; modes 2
//! and 3 hold OUT high and restart on a rising gate). The counter's state is computed from the
//! time the count was loaded, so nothing runs between accesses; [`Pit::advance`] reports the
//! rising edges of counter 0's OUT since the last call and [`Pit::next_irq0_edge`] when the
//! next one will happen (the board uses it to skip idle time).
//!
//! Not implemented, and reported: modes 1, 4 and 5 (hardware-triggered one-shot and strobes)
//! and BCD counting.

use crate::{IrqLine, Ns, Unimplemented, muldiv};

/// Input clock of every counter, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;
/// First port (counter 0).
pub const BASE_PORT: u16 = 0x40;
/// Control-word port offset.
const CONTROL: u16 = 3;

/// Control word bits 7:6: select counter (3 = read-back).
const SC_SHIFT: u8 = 6;
/// Control word bits 5:4: read/write mode (0 = counter latch command).
const RW_SHIFT: u8 = 4;
/// RW mode: least significant byte only.
const RW_LSB: u8 = 1;
/// RW mode: most significant byte only.
const RW_MSB: u8 = 2;
/// RW mode: LSB then MSB.
const RW_WORD: u8 = 3;
/// Control word bit 0: BCD counting.
const BCD: u8 = 1;
/// Read-back bit 5: do NOT latch count.
const RB_NO_COUNT: u8 = 1 << 5;
/// Read-back bit 4: do NOT latch status.
const RB_NO_STATUS: u8 = 1 << 4;
/// Status byte bit 7: OUT pin.
const STATUS_OUT: u8 = 1 << 7;
/// Status byte bit 6: null count (a count was written but not yet loaded).
const STATUS_NULL: u8 = 1 << 6;

/// State of one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterState {
    /// Mode 0–5.
    pub mode: u8,
    /// Read/write mode (1 LSB, 2 MSB, 3 LSB then MSB).
    pub rw: u8,
    /// Initial count, 1–0x10000 (a written 0 is 0x10000), or 0 before any count is written.
    pub count: u32,
    /// PIT clock tick at which the count was loaded (or the gate last restarted it).
    pub load_tick: u64,
    /// Gate input level.
    pub gate: bool,
    /// PIT clock tick at which the gate went low (mode 0 suspension).
    pub gate_low_tick: u64,
    /// Latched count, if a latch command is pending.
    pub latched_count: Option<u16>,
    /// Latched status byte, if a read-back latched it.
    pub latched_status: Option<u8>,
    /// The next LSB/MSB read is the MSB.
    pub read_msb: bool,
    /// The next LSB/MSB write is the MSB.
    pub write_msb: bool,
    /// The LSB of a count being written.
    pub write_lsb: u8,
    /// OUT rising edges already reported by [`Pit::advance`] since the count was loaded.
    pub edges_reported: u64,
}

impl Default for CounterState {
    fn default() -> Self {
        Self {
            mode: 0,
            rw: RW_WORD,
            count: 0,
            load_tick: 0,
            gate: true,
            gate_low_tick: 0,
            latched_count: None,
            latched_status: None,
            read_msb: false,
            write_msb: false,
            write_lsb: 0,
            edges_reported: 0,
        }
    }
}

impl CounterState {
    /// Clock ticks counted since the count was loaded (frozen while a mode-0 gate is low).
    fn elapsed(&self, tick: u64) -> u64 {
        let end = if !self.gate && self.mode == 0 {
            self.gate_low_tick
        } else {
            tick
        };
        end.saturating_sub(self.load_tick)
    }

    /// The OUT pin at PIT tick `tick`.
    fn out(&self, tick: u64) -> bool {
        let n = u64::from(self.count);
        if n == 0 {
            // Control word written, no count yet: mode 0 OUT is low, modes 2 and 3 high.
            return self.mode != 0;
        }
        let d = self.elapsed(tick);
        match self.mode {
            0 => d >= n,
            2 if self.gate => d % n != n - 1,
            3 if self.gate => d % n < n.div_ceil(2),
            _ => true,
        }
    }

    /// The counting element at PIT tick `tick`.
    fn value(&self, tick: u64) -> u16 {
        let n = u64::from(self.count);
        if n == 0 {
            return 0;
        }
        let d = self.elapsed(tick);
        let v = match self.mode {
            0 => n.wrapping_sub(d),
            2 => n - d % n,
            // Mode 3 decrements by two, twice per period.
            _ => n - (2 * d) % n,
        };
        (v & 0xffff) as u16
    }

    /// Rising edges of OUT in the first `d` ticks after loading.
    fn edges_until(&self, tick: u64) -> u64 {
        let n = u64::from(self.count);
        if n == 0 || (matches!(self.mode, 2 | 3) && !self.gate) {
            return self.edges_reported;
        }
        let d = self.elapsed(tick);
        match self.mode {
            0 => u64::from(d >= n),
            _ => d / n,
        }
    }

    /// The PIT tick of the next rising edge of OUT after `tick`, if one is coming.
    fn next_edge(&self, tick: u64) -> Option<u64> {
        let n = u64::from(self.count);
        if n == 0 || !self.gate {
            return None;
        }
        let d = self.elapsed(tick);
        match self.mode {
            0 if d < n => Some(self.load_tick + n),
            0 => None,
            _ => Some(self.load_tick + (d / n + 1) * n),
        }
    }

    fn status(&self, tick: u64) -> u8 {
        let out = if self.out(tick) { STATUS_OUT } else { 0 };
        let null = if self.count == 0 { STATUS_NULL } else { 0 };
        out | null | (self.rw << RW_SHIFT) | (self.mode << 1)
    }
}

/// Snapshot of a [`Pit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitState {
    /// Counters 0–2.
    pub counters: [CounterState; 3],
}

/// The 8254 with counter 0's OUT on `L`.
#[derive(Debug)]
pub struct Pit<L> {
    state: PitState,
    irq0: L,
}

/// The PIT clock tick at virtual time `now`.
fn tick_at(now: Ns) -> u64 {
    muldiv(now.raw(), PIT_HZ, NS_PER_S)
}

/// The first virtual time at which the PIT clock has reached `tick`.
fn time_of(tick: u64) -> Ns {
    let ns = (u128::from(tick) * u128::from(NS_PER_S)).div_ceil(u128::from(PIT_HZ));
    Ns::new(u64::try_from(ns).unwrap_or(u64::MAX))
}

impl<L: IrqLine> Pit<L> {
    /// A PIT after power-up: no counter programmed, OUT of counter 0 low.
    pub fn new(irq0: L) -> Self {
        Self::from_state(PitState::default(), irq0)
    }

    /// Restores from a snapshot.
    pub fn from_state(state: PitState, irq0: L) -> Self {
        Self { state, irq0 }
    }

    /// A snapshot.
    pub fn state(&self) -> PitState {
        self.state
    }

    /// Counter 0's interrupt line.
    pub fn irq_line(&self) -> &L {
        &self.irq0
    }

    /// Counter 0's interrupt line, mutably.
    pub fn irq_line_mut(&mut self) -> &mut L {
        &mut self.irq0
    }

    /// The OUT pin of `counter` (0–2) at `now`.
    pub fn out(&self, counter: usize, now: Ns) -> bool {
        self.state
            .counters
            .get(counter)
            .is_some_and(|c| c.out(tick_at(now)))
    }

    /// Drives counter 2's gate (port 0x61 bit 0).
    pub fn set_gate2(&mut self, level: bool, now: Ns) {
        let tick = tick_at(now);
        let c = &mut self.state.counters[2];
        if c.gate == level {
            return;
        }
        match (c.mode, level) {
            (0, false) => c.gate_low_tick = tick,
            (0, true) => c.load_tick += tick.saturating_sub(c.gate_low_tick),
            (_, true) => {
                // Modes 2 and 3: a rising gate reloads the count.
                c.load_tick = tick;
                c.edges_reported = 0;
            }
            _ => {}
        }
        c.gate = level;
    }

    /// Brings counter 0's OUT up to `now`: every rising edge since the last call becomes a
    /// rising edge on the IRQ 0 line (edges that happened between two calls coalesce, as an
    /// edge-triggered input that was not yet serviced would).
    pub fn advance(&mut self, now: Ns) {
        let tick = tick_at(now);
        let c = &mut self.state.counters[0];
        let edges = c.edges_until(tick);
        if edges > c.edges_reported {
            c.edges_reported = edges;
            self.irq0.set_level(false);
            self.irq0.set_level(true);
        }
        let level = self.state.counters[0].out(tick);
        self.irq0.set_level(level);
    }

    /// When counter 0's OUT next rises, if it will.
    pub fn next_irq0_edge(&self, now: Ns) -> Option<Ns> {
        self.state.counters[0].next_edge(tick_at(now)).map(time_of)
    }

    /// IN from port `0x40 + offset`.
    pub fn read(&mut self, offset: u16, now: Ns) -> u8 {
        let tick = tick_at(now);
        let Some(c) = self.state.counters.get_mut(usize::from(offset)) else {
            return 0xff; // The control word register cannot be read.
        };
        if let Some(s) = c.latched_status.take() {
            return s;
        }
        let value = c.latched_count.unwrap_or_else(|| c.value(tick));
        let [lo, hi] = value.to_le_bytes();
        let byte = match c.rw {
            RW_LSB => lo,
            RW_MSB => hi,
            _ => {
                c.read_msb = !c.read_msb;
                if c.read_msb { lo } else { hi }
            }
        };
        if c.latched_count.is_some() && !(c.rw == RW_WORD && c.read_msb) {
            c.latched_count = None;
        }
        byte
    }

    /// OUT to port `0x40 + offset`.
    pub fn write(&mut self, offset: u16, value: u8, now: Ns) -> Result<(), Unimplemented> {
        let tick = tick_at(now);
        if offset == CONTROL {
            return self.write_control(value, tick);
        }
        let Some(c) = self.state.counters.get_mut(usize::from(offset)) else {
            return Ok(());
        };
        let count = match c.rw {
            RW_LSB => Some(u16::from(value)),
            RW_MSB => Some(u16::from(value) << 8),
            _ => {
                c.write_msb = !c.write_msb;
                if c.write_msb {
                    c.write_lsb = value;
                    None
                } else {
                    Some(u16::from_le_bytes([c.write_lsb, value]))
                }
            }
        };
        if let Some(n) = count {
            c.count = if n == 0 { 0x1_0000 } else { u32::from(n) };
            c.load_tick = tick;
            c.edges_reported = 0;
            if !c.gate && c.mode == 0 {
                c.gate_low_tick = tick;
            }
        }
        if offset == 0 {
            self.advance(now);
        }
        Ok(())
    }

    fn write_control(&mut self, value: u8, tick: u64) -> Result<(), Unimplemented> {
        let sc = value >> SC_SHIFT;
        if sc == 3 {
            for (i, c) in self.state.counters.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & RB_NO_COUNT == 0 && c.latched_count.is_none() {
                    c.latched_count = Some(c.value(tick));
                    c.read_msb = false;
                }
                if value & RB_NO_STATUS == 0 && c.latched_status.is_none() {
                    c.latched_status = Some(c.status(tick));
                }
            }
            return Ok(());
        }
        let c = &mut self.state.counters[usize::from(sc)];
        let rw = (value >> RW_SHIFT) & 3;
        if rw == 0 {
            // Counter latch command; a second latch before the read is ignored.
            if c.latched_count.is_none() {
                c.latched_count = Some(c.value(tick));
                c.read_msb = false;
            }
            return Ok(());
        }
        if value & BCD != 0 {
            return Err(Unimplemented("8254 BCD counting"));
        }
        let mode = match (value >> 1) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        };
        if !matches!(mode, 0 | 2 | 3) {
            return Err(match mode {
                1 => Unimplemented("8254 mode 1 (hardware retriggerable one-shot)"),
                4 => Unimplemented("8254 mode 4 (software triggered strobe)"),
                _ => Unimplemented("8254 mode 5 (hardware triggered strobe)"),
            });
        }
        // A control word resets the counter: no count until one is written.
        let gate = c.gate;
        *c = CounterState {
            mode,
            rw,
            gate,
            ..CounterState::default()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LatchedLine;

    /// Virtual time of PIT tick `t`.
    fn at(t: u64) -> Ns {
        time_of(t)
    }

    fn pit() -> Pit<LatchedLine> {
        Pit::new(LatchedLine::default())
    }

    #[test]
    fn mode2_rate_generator_fires_every_period() {
        let mut p = pit();
        p.write(CONTROL, 0x34, at(0)).unwrap(); // counter 0, LSB/MSB, mode 2
        p.write(0, 100, at(0)).unwrap();
        p.write(0, 0, at(0)).unwrap();
        // Mode 2 sets OUT high: that first rising edge is real (QEMU raises IRQ 0 too).
        assert_eq!(p.irq_line_mut().take_rising_edges(), 1);
        assert!(p.out(0, at(50)));
        assert!(!p.out(0, at(99)));
        p.advance(at(99));
        assert_eq!(p.irq_line_mut().take_rising_edges(), 0);
        p.advance(at(100));
        assert_eq!(p.irq_line_mut().take_rising_edges(), 1);
        assert_eq!(p.next_irq0_edge(at(100)), Some(at(200)));
        // Several periods missed: one edge, as a slow CPU would see.
        p.advance(at(1000));
        assert_eq!(p.irq_line_mut().take_rising_edges(), 1);
    }

    #[test]
    fn mode0_interrupts_once_on_terminal_count() {
        let mut p = pit();
        p.write(CONTROL, 0x30, at(0)).unwrap();
        assert!(!p.out(0, at(0)));
        p.write(0, 0x10, at(5)).unwrap();
        p.write(0, 0x00, at(5)).unwrap();
        assert_eq!(p.next_irq0_edge(at(5)), Some(at(5 + 16)));
        p.advance(at(20));
        assert!(!p.irq_line().level());
        p.advance(at(21));
        assert!(p.irq_line().level());
        assert_eq!(p.irq_line_mut().take_rising_edges(), 1);
        p.advance(at(100_000));
        assert_eq!(p.irq_line_mut().take_rising_edges(), 0);
        assert_eq!(p.next_irq0_edge(at(100)), None);
    }

    #[test]
    fn mode3_square_wave_and_counter_reads() {
        let mut p = pit();
        p.write(CONTROL, 0x36, at(0)).unwrap();
        p.write(0, 10, at(0)).unwrap();
        p.write(0, 0, at(0)).unwrap();
        assert!(p.out(0, at(4)));
        assert!(!p.out(0, at(5)));
        assert!(p.out(0, at(10)));
        // Counter latch, then LSB, MSB.
        p.write(CONTROL, 0x00, at(2)).unwrap();
        assert_eq!(p.read(0, at(7)), 6);
        assert_eq!(p.read(0, at(7)), 0);
    }

    #[test]
    fn live_reads_lsb_msb_and_readback_status() {
        let mut p = pit();
        p.write(CONTROL, 0xb0, at(0)).unwrap(); // counter 2, LSB/MSB, mode 0
        p.write(2, 0x34, at(0)).unwrap();
        p.write(2, 0x12, at(0)).unwrap();
        assert_eq!(p.read(2, at(4)), 0x30);
        assert_eq!(p.read(2, at(4)), 0x12);
        // Read-back: status and count of counter 2.
        p.write(CONTROL, 0xc8, at(0x1234)).unwrap();
        assert_eq!(p.read(2, at(0x2000)), STATUS_OUT | (RW_WORD << 4));
        assert_eq!(p.read(2, at(0x2000)), 0);
        assert_eq!(p.read(2, at(0x2000)), 0);
    }

    #[test]
    fn gate2_suspends_mode0_and_restarts_mode2() {
        let mut p = pit();
        p.set_gate2(false, at(0));
        p.write(CONTROL, 0xb0, at(0)).unwrap();
        p.write(2, 100, at(0)).unwrap();
        p.write(2, 0, at(0)).unwrap();
        assert!(!p.out(2, at(500)));
        p.set_gate2(true, at(500));
        assert!(!p.out(2, at(599)));
        assert!(p.out(2, at(600)));

        p.write(CONTROL, 0xb4, at(600)).unwrap();
        p.write(2, 10, at(600)).unwrap();
        p.write(2, 0, at(600)).unwrap();
        p.set_gate2(false, at(609));
        assert!(p.out(2, at(609)));
        p.set_gate2(true, at(700));
        assert!(!p.out(2, at(709)));
    }

    #[test]
    fn unsupported_modes_are_reported() {
        let mut p = pit();
        assert!(p.write(CONTROL, 0x32, at(0)).is_err()); // mode 1
        assert!(p.write(CONTROL, 0x38, at(0)).is_err()); // mode 4
        assert!(p.write(CONTROL, 0x3a, at(0)).is_err()); // mode 5
        assert!(p.write(CONTROL, 0x35, at(0)).is_err()); // BCD
        assert!(p.write(CONTROL, 0x3c, at(0)).is_ok()); // mode 6 is mode 2
        assert_eq!(p.state().counters[0].mode, 2);
    }

    #[test]
    fn time_conversion_round_trips() {
        for t in [0u64, 1, 1000, PIT_HZ, 123_456_789] {
            assert_eq!(tick_at(time_of(t)), t);
            assert!(tick_at(Ns::new(time_of(t).raw().saturating_sub(1))) < t.max(1));
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::LatchedLine;
    use proptest::prelude::*;

    proptest! {
        /// Random programming and time never panic; the next edge is never in the past.
        #[test]
        fn random_traffic(ops in proptest::collection::vec((0u16..4, any::<u8>(), any::<bool>(), 0u32..100_000), 0..64)) {
            let mut p = Pit::new(LatchedLine::default());
            let mut now = 0u64;
            for (offset, value, write, dt) in ops {
                now += u64::from(dt);
                let t = Ns::new(now);
                if write { let _ = p.write(offset, value, t); } else { let _ = p.read(offset, t); }
                p.set_gate2(value & 1 != 0, t);
                p.advance(t);
                if let Some(next) = p.next_irq0_edge(t) {
                    prop_assert!(next >= t);
                }
            }
        }
    }
}
