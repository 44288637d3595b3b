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
            cpu: Cpu::with_features(cpu::CpuFeatures { vmx: true }),
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

    /// The CPU and the board at once, mutably: a native hypervisor drives the CPU's VMX on
    /// the board (`Cpu::native_run`).
    pub fn parts_mut(&mut self) -> (&mut Cpu, &mut Board<S>) {
        (&mut self.cpu, &mut self.board)
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
                // (VmExit only ends runs in native VMX root operation, which a bare board
                // never enters.)
                StopReason::BudgetExhausted | StopReason::BusStop | StopReason::VmExit => {}
                StopReason::Shutdown => return Ending::Shutdown,
                StopReason::Halted => {
                    let interrupts_enabled = self.cpu.interrupts_can_wake();
                    let now = self.cpu.now();
                    // The CPU's own timer (VMX preemption) wakes it whatever the board does.
                    if let Some(t) = self.cpu.own_deadline()
                        && self
                            .board
                            .next_timer_event(now)
                            .is_none_or(|b| t.ticks() <= b.ticks())
                    {
                        self.idle_skips += 1;
                        self.cpu
                            .skip_idle_ticks(t.ticks().saturating_sub(now.ticks()).max(1));
                        continue;
                    }
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
        // The information structure is in conventional memory, where QEMU puts it.
        assert_eq!(c.gpr(cpu::Gpr::Rbx), multiboot::LOW_INFO_BASE);
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

    /// Puts the CPU of a booted machine in 64-bit mode at CPL 0: identity-mapped 2-MiB pages
    /// for the first GiB, a GDT (0x08 64-bit code, 0x10 data) and an IDT whose gate `vector`
    /// leads to `handler`, described at `DESCRIPTORS` (GDTR, then IDTR) for the guest's LGDT
    /// and LIDT; RSP at the top of the table area.
    fn enter_long_mode(m: &mut Machine<Console>, vector: u8, handler: u64) {
        use cpu::Bus as _;
        use cpu::{Seg, Segment, state::ar};
        const PML4: u64 = 0x30_0000;
        const PDPT: u64 = PML4 + 0x1000;
        const PD: u64 = PML4 + 0x2000;
        const GDT: u64 = PML4 + 0x3000;
        const IDT: u64 = PML4 + 0x4000;
        let ram = m.board_mut().ram_mut();
        let mut put = |at: u64, bytes: &[u8]| {
            ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        };
        put(PML4, &(PDPT | 3).to_le_bytes());
        put(PDPT, &(PD | 3).to_le_bytes());
        for i in 0..512u64 {
            put(PD + 8 * i, &((i << 21) | 0x83).to_le_bytes());
        }
        put(GDT + 8, &0x00af_9a00_0000_ffff_u64.to_le_bytes());
        put(GDT + 16, &0x00cf_9200_0000_ffff_u64.to_le_bytes());
        let gate = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((handler >> 16) << 48);
        put(IDT + 16 * u64::from(vector), &gate.to_le_bytes());
        put(DESCRIPTORS, &0x17u16.to_le_bytes());
        put(DESCRIPTORS + 2, &GDT.to_le_bytes());
        put(DESCRIPTORS + 10, &0xfffu16.to_le_bytes());
        put(DESCRIPTORS + 12, &IDT.to_le_bytes());
        let c = m.cpu_mut();
        // CR0.PE|PG, CR4.PAE, EFER.LME|LMA.
        c.set_control_registers(0x8000_0001, PML4, 0x20, 0x500);
        for s in Seg::ALL {
            c.set_segment(s, Segment::flat32(0x10, false, 0));
        }
        let mut cs = Segment::flat32(0x08, true, 0);
        cs.ar = (cs.ar & !ar::DB) | ar::L;
        c.set_segment(Seg::Cs, cs);
        c.set_gpr(cpu::Gpr::Rsp, PML4 + 0xf_f000);
    }

    /// Where [`enter_long_mode`] describes its GDT and IDT for LGDT and LIDT.
    const DESCRIPTORS: u64 = 0x30_5000;

    /// CR8 is the local APIC's TPR[7:4] (SDM Vol. 3A §11.8.6): a MOV to CR8 shows in the APIC's
    /// TPR, and an interrupt whose priority class is not above it waits until CR8 is lowered.
    #[test]
    fn cr8_is_the_apic_task_priority_and_holds_back_interrupts() {
        #[rustfmt::skip]
        let code: &[u8] = &[
            0x0f, 0x01, 0x14, 0x25, 0x00, 0x50, 0x30, 0x00, // lgdt [0x305000]
            0x0f, 0x01, 0x1c, 0x25, 0x0a, 0x50, 0x30, 0x00, // lidt [0x30500a]
            0xb9, 0x1b, 0x00, 0x00, 0x00,                   // mov ecx, 0x1b (IA32_APIC_BASE)
            0x0f, 0x32,                                     // rdmsr
            0x0d, 0x00, 0x0c, 0x00, 0x00,                   // or eax, 0xc00 (EN, EXTD: x2APIC)
            0x0f, 0x30,                                     // wrmsr
            0xb9, 0x0f, 0x08, 0x00, 0x00,                   // mov ecx, 0x80f (SVR)
            0xb8, 0xff, 0x01, 0x00, 0x00,                   // mov eax, 0x1ff (APIC on)
            0x31, 0xd2,                                     // xor edx, edx
            0x0f, 0x30,                                     // wrmsr
            0xb8, 0x07, 0x00, 0x00, 0x00,                   // mov eax, 7
            0x44, 0x0f, 0x22, 0xc0,                         // mov cr8, rax
            0xb9, 0x3f, 0x08, 0x00, 0x00,                   // mov ecx, 0x83f (SELF IPI)
            0xb8, 0x71, 0x00, 0x00, 0x00,                   // mov eax, 0x71 (class 7)
            0x0f, 0x30,                                     // wrmsr
            0xb9, 0x08, 0x08, 0x00, 0x00,                   // mov ecx, 0x808 (TPR)
            0x0f, 0x32,                                     // rdmsr
            0x49, 0x89, 0xc0,                               // mov r8, rax
            0x45, 0x0f, 0x20, 0xc1,                         // mov r9, cr8
            0xfb,                                           // sti
            0x90,                                           // nop
            0x90,                                           // nop
            0x4d, 0x89, 0xe5,                               // mov r13, r12
            0xb8, 0x06, 0x00, 0x00, 0x00,                   // mov eax, 6
            0x44, 0x0f, 0x22, 0xc0,                         // mov cr8, rax
            0x90,                                           // nop
            0x4d, 0x89, 0xe6,                               // mov r14, r12
            0xf4,                                           // hlt
            // handler (vector 0x71):
            0x49, 0xff, 0xc4,                               // inc r12
            0xb9, 0x0b, 0x08, 0x00, 0x00,                   // mov ecx, 0x80b (EOI)
            0x31, 0xc0,                                     // xor eax, eax
            0x31, 0xd2,                                     // xor edx, edx
            0x0f, 0x30,                                     // wrmsr
            0x48, 0xcf,                                     // iretq
        ];
        let mut m = boot(code);
        let handler = m.cpu().rip() + 0x63;
        enter_long_mode(&mut m, 0x71, handler);
        assert_eq!(
            m.run(1000),
            Ending::HaltedForever {
                interrupts_enabled: true
            }
        );
        let r = |g| m.cpu().gpr(g);
        use cpu::Gpr::{R8, R9, R13, R14};
        assert_eq!(r(R8), 0x70, "TPR[7:4] = CR8");
        assert_eq!(r(R9), 7, "MOV from CR8");
        assert_eq!(r(R13), 0, "class 7 is held back by CR8 = 7");
        assert_eq!(r(R14), 1, "and delivered once CR8 = 6");
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
