//! The bare run loop: a [`Machine`] is one software CPU on one [`Board`].
//!
//! The CPU runs in slices of instructions; between slices the console is flushed and the
//! board's stop requests are checked. When the CPU halts (HLT) with RFLAGS.IF = 1 and no
//! interrupt is pending, virtual time skips to the next timer event that can reach the CPU
//! (SDM Vol. 3A §6.9: HLT resumes on an unmasked interrupt). HLT with IF = 0, or with no armed
//! timer whose interrupt path is unmasked, can never resume on this board (it has no NMI,
//! SMI or INIT sources): that is its own [`Ending`], as are a triple fault (SDM Vol. 3A
//! §6.15, shutdown), the instruction limit, the debug-exit port, a reset request, and the
//! model's own limits (an unimplemented instruction or device feature).

use crate::Error;
use crate::board::{Board, BoardStop};
use crate::multiboot::{self, Loaded, Module};
use cpu::{Cpu, CpuError, StopReason};
use devices::ByteSink;
use devices::debug_exit::ExitRequest;

/// Instructions per slice of [`Machine::run`].
const SLICE: u64 = 1 << 20;
/// Consecutive idle skips that deliver no interrupt before a halt counts as permanent (a
/// timer that keeps firing into an interrupt already in service, for instance).
const FRUITLESS_WAKES: u32 = 100_000;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote the debug-exit port.
    DebugExit(ExitRequest),
    /// Triple fault: the processor entered shutdown.
    Shutdown,
    /// The instruction limit was reached.
    InstructionLimit,
    /// HLT that nothing can end.
    HaltedForever {
        /// RFLAGS.IF at the HLT (false: interrupts were disabled).
        interrupts_enabled: bool,
    },
    /// The guest asked for a reset (system control port A).
    Reset,
    /// A device was asked for something the model does not implement.
    DeviceUnimplemented(String),
    /// The CPU met an instruction or feature it does not implement.
    Cpu(CpuError),
}

impl core::fmt::Display for Ending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::DebugExit(r) => write!(
                f,
                "debug-exit port written with {:#x} (status {:#x})",
                r.value,
                r.status()
            ),
            Self::Shutdown => write!(f, "triple fault: the processor shut down"),
            Self::InstructionLimit => write!(f, "instruction limit reached"),
            Self::HaltedForever {
                interrupts_enabled: false,
            } => write!(f, "halted with interrupts disabled"),
            Self::HaltedForever {
                interrupts_enabled: true,
            } => write!(f, "halted with no interrupt that can wake the processor"),
            Self::Reset => write!(f, "the guest requested a reset"),
            Self::DeviceUnimplemented(m) => write!(f, "device feature not implemented: {m}"),
            Self::Cpu(e) => write!(f, "{e}"),
        }
    }
}

/// One CPU on one board.
#[derive(Debug)]
pub struct Machine<S> {
    cpu: Cpu,
    board: Board<S>,
    /// Times virtual time skipped ahead while the CPU was halted.
    idle_skips: u64,
}

impl<S: ByteSink> Machine<S> {
    /// A powered-up machine with `ram_size` bytes of RAM whose COM1 writes to `console`.
    pub fn new(ram_size: u64, console: S) -> Result<Self, Error> {
        Ok(Self {
            cpu: Cpu::new(),
            board: Board::new(ram_size, console)?,
            idle_skips: 0,
        })
    }

    /// Loads a multiboot1 image with its modules and command line and puts the CPU in the
    /// state the specification promises at the entry point (§3.2).
    pub fn load_multiboot(
        &mut self,
        image: &[u8],
        modules: &[Module<'_>],
        cmdline: &str,
    ) -> Result<Loaded, Error> {
        use cpu::Bus as _;
        let loaded = multiboot::load(self.board.ram_mut(), image, modules, cmdline)?;
        // The info address is below 4 GiB: RAM is at most 3 GiB.
        let info = u32::try_from(loaded.info.raw())
            .map_err(|_| multiboot::LoadError::BadEntry(loaded.info.raw()))?;
        self.cpu
            .set_multiboot_entry(loaded.entry, multiboot::BOOTLOADER_MAGIC, info);
        self.cpu.flush_decode_cache();
        Ok(loaded)
    }

    /// The CPU.
    pub fn cpu(&self) -> &Cpu {
        &self.cpu
    }

    /// The CPU, mutably (to set up a state other than multiboot's).
    pub fn cpu_mut(&mut self) -> &mut Cpu {
        &mut self.cpu
    }

    /// How many times virtual time skipped ahead to a timer while the CPU was halted.
    pub fn idle_skips(&self) -> u64 {
        self.idle_skips
    }

    /// The board.
    pub fn board(&self) -> &Board<S> {
        &self.board
    }

    /// The board, mutably.
    pub fn board_mut(&mut self) -> &mut Board<S> {
        &mut self.board
    }

    /// Runs until the run ends or `max_insns` instructions (in total, since power-up) have
    /// retired.
    pub fn run(&mut self, max_insns: u64) -> Ending {
        let ending = self.run_inner(max_insns);
        self.board.console_mut().flush();
        ending
    }

    fn board_ending(&self) -> Option<Ending> {
        self.board.stop().map(|s| match s {
            BoardStop::DebugExit(r) => Ending::DebugExit(*r),
            BoardStop::Reset => Ending::Reset,
            BoardStop::Unimplemented(m) => Ending::DeviceUnimplemented(m.clone()),
        })
    }

    fn run_inner(&mut self, max_insns: u64) -> Ending {
        use cpu::Bus as _;
        let mut fruitless = 0u32;
        loop {
            if let Some(e) = self.board_ending() {
                return e;
            }
            let left = max_insns.saturating_sub(self.cpu.instructions_retired());
            if left == 0 {
                return Ending::InstructionLimit;
            }
            let before = self.cpu.instructions_retired();
            let stop = match self.cpu.run(&mut self.board, left.min(SLICE)) {
                Ok(stop) => stop,
                Err(e) => return Ending::Cpu(e),
            };
            if self.cpu.instructions_retired() != before {
                // The CPU did something since the last idle skip: that wake was not in vain.
                fruitless = 0;
            }
            self.board.console_mut().flush();
            match stop {
                StopReason::BudgetExhausted | StopReason::BusStop => {}
                StopReason::Shutdown => return Ending::Shutdown,
                StopReason::Halted => {
                    let interrupts_enabled = self.cpu.rflags() & x86::reg::rflags::IF != 0;
                    let now = self.cpu.now();
                    if !interrupts_enabled {
                        return self
                            .board_ending()
                            .unwrap_or(Ending::HaltedForever { interrupts_enabled });
                    }
                    if self.board.has_interrupt(now) {
                        continue;
                    }
                    match self.board.next_timer_event(now) {
                        Some(t)
                            if fruitless < FRUITLESS_WAKES && self.board.timer_can_wake(now) =>
                        {
                            fruitless += 1;
                            self.idle_skips += 1;
                            self.cpu
                                .skip_idle_ticks(t.ticks().saturating_sub(now.ticks()).max(1));
                        }
                        _ => {
                            return self
                                .board_ending()
                                .unwrap_or(Ending::HaltedForever { interrupts_enabled });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiboot::tests::aout_image;

    #[derive(Debug, Default)]
    struct Console(Vec<u8>);

    impl ByteSink for Console {
        fn put(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }

    fn boot(code: &[u8]) -> Machine<Console> {
        let mut m = Machine::new(4 << 20, Console::default()).unwrap();
        let loaded = m
            .load_multiboot(&aout_image(0x10_0000, code, 0), &[], "k")
            .unwrap();
        assert_eq!(m.cpu().rip(), u64::from(loaded.entry));
        m
    }

    #[test]
    fn serial_output_and_debug_exit() {
        let mut m = boot(&[
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xb0, b'o', 0xee, // mov al, 'o'; out dx, al
            0xb0, b'k', 0xee, // mov al, 'k'; out dx, al
            0x66, 0xba, 0xf4, 0x00, // mov dx, 0xf4
            0xb8, 0x2a, 0x00, 0x00, 0x00, // mov eax, 42
            0xef, // out dx, eax
        ]);
        let e = m.run(1000);
        assert_eq!(e, Ending::DebugExit(ExitRequest { value: 42 }));
        assert_eq!(m.board().counters().port_io, 3);
        assert_eq!(m.board_mut().console_mut().0, b"ok");
    }

    #[test]
    fn multiboot_entry_state() {
        let m = boot(&[0xf4]);
        let c = m.cpu();
        assert_eq!(c.gpr(cpu::Gpr::Rax), u64::from(multiboot::BOOTLOADER_MAGIC));
        assert!(c.gpr(cpu::Gpr::Rbx) >= 0x10_0000);
        assert_eq!(
            c.rflags() & (x86::reg::rflags::IF | x86::reg::rflags::VM),
            0
        );
        assert_eq!(c.cr0() & 0x8000_0001, 1, "protected mode, paging off");
    }

    #[test]
    fn endings_limit_halt_and_triple_fault() {
        assert_eq!(boot(&[0xeb, 0xfe]).run(500), Ending::InstructionLimit);
        assert_eq!(
            boot(&[0xfa, 0xf4]).run(500),
            Ending::HaltedForever {
                interrupts_enabled: false
            }
        );
        assert_eq!(
            boot(&[0xfb, 0xf4]).run(500),
            Ending::HaltedForever {
                interrupts_enabled: true
            }
        );
        assert_eq!(boot(&[0xcc]).run(500), Ending::Shutdown);
        // mov al, 1; out 0x92, al: A20 off is not implemented.
        assert!(
            matches!(boot(&[0xb0, 0x01, 0xe6, 0x92]).run(500), Ending::DeviceUnimplemented(m) if m.contains("A20"))
        );
        // mov al, 3; out 0x92, al: fast reset.
        assert_eq!(boot(&[0xb0, 0x03, 0xe6, 0x92]).run(500), Ending::Reset);
    }

    #[test]
    fn runs_are_deterministic() {
        let code = [
            0x0f, 0x31, // rdtsc
            0x66, 0xba, 0xf4, 0x00, // mov dx, 0xf4
            0xef, // out dx, eax
        ];
        let a = boot(&code).run(100);
        let b = boot(&code).run(100);
        assert_eq!(a, b);
        assert!(matches!(a, Ending::DebugExit(_)));
    }
}
