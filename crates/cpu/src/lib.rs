//! The software x86-64 CPU: decode (iced-x86), execute, flags, exceptions and interrupts, the
//! real, protected and long modes, paging with a TLB, and (in a later issue) the VMX silicon.
//! Deterministic: time advances with retired instructions, never with the host clock.
//!
//! The CPU is generic over the board it sits on ([`Bus`]): RAM, MMIO, ports, interrupt
//! controllers and board MSRs. [`Cpu::run`] executes up to a budget of instructions and says why
//! it stopped ([`StopReason`]); an instruction the model does not implement ends the run with a
//! [`CpuError`] naming it. Architectural faults never leave the CPU: they are delivered through
//! the IDT, up to a triple fault ([`StopReason::Shutdown`]).
//!
//! Modules and the SDM sections they implement:
//! - [`bus`]: the board interface.
//! - `exec` and `ops/*`: instruction semantics (SDM Vol. 2), one file per family.
//! - `flags`: lazily computed arithmetic flags (Vol. 1 §3.4.3, Appendix A).
//! - `mmu`, `tlb`: segmentation (Vol. 3A §3, §5) and paging with the TLB (Vol. 3A §4).
//! - `icache`: decoded instructions cached per physical page (self-modifying code: Vol. 3A
//!   §11.6).
//! - `interrupt`: exception and interrupt delivery, #DF and triple fault (Vol. 3A §6).
//! - `cpuid`, `msr`: identification and model-specific registers (Vol. 2A CPUID, Vol. 4).
//!
//! Virtual time: one tick per retired instruction or event delivered between instructions
//! ([`Cpu::now`]); a repeated string
//! instruction retires once per slice of up to 1024 iterations (it is restarted between slices
//! so that interrupts are recognised), and HLT lets the board skip ticks
//! ([`Cpu::skip_idle_ticks`]).
//!
//! Not implemented, and never silently wrong: x87, SSE and AVX are not advertised, so their
//! instructions raise #UD (x87: #NM when CR0.EM or CR0.TS is set, otherwise the run stops with
//! [`CpuError::Unimplemented`]); hardware task switches, virtual-8086 mode and enabled DR7
//! breakpoints stop the run with [`CpuError::Unsupported`]; 5-level paging, protection keys,
//! FSGSBASE, UMIP and XSAVE are not advertised and their CR4 bits raise #GP. Memory types are
//! not modelled (PAT and the MTRRs are storage). CR8 is the board's local-APIC TPR
//! ([`Bus::cr8`]), so the CPU keeps no copy of it.
//!
//! VMX is behind a model switch, [`CpuFeatures::vmx`], off by default: VM entry, VM exits and
//! non-root operation do not exist yet, and an advertised feature is a promise. Switched off,
//! VMX is not advertised (CPUID.1:ECX.VMX = 0, CR4.VMXE reserved, the capability MSRs #GP) and
//! VMX instructions raise #UD as on a processor without VMX. Switched on, CPUID.1:ECX.VMX = 1,
//! IA32_FEATURE_CONTROL accepts "enable VMX outside SMX", CR4.VMXE can be set, the capability
//! MSRs read as [`vmx::capabilities::MODEL`], and the VMX instructions of root operation work
//! (`ops/vmx`: VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMCALL); VMLAUNCH,
//! VMRESUME, INVEPT and INVVPID stop the run with [`CpuError::Unimplemented`]. The rest of the
//! silicon is meant to turn non-root events into VM exits at the points where this model
//! already decides (the dispatcher, event delivery, the MSR/CR/I-O paths); the TLB entries
//! already carry a tag word for VPID/EPTP.

mod block;
pub mod bus;
mod cpuid;
pub mod error;
mod exec;
pub mod fault;
mod flags;
mod icache;
mod interrupt;
mod mmu;
mod msr;
mod nonroot;
mod ops;
mod regs;
mod seg;
pub mod state;
#[cfg(test)]
pub(crate) mod test_utils;
mod tlb;
mod uop;
pub mod vmx;

pub use bus::{Bus, MsrAccess, TSC_PER_TICK, VirtualTime};
pub use error::{CpuError, StopReason};
pub use fault::Fault;
pub use nonroot::native::{NATIVE_HOST, NativeRun};
pub use ops::vmx::{VmFail, VmResult};
pub use regs::Gpr;
pub use state::{DescriptorTable, Mode, Seg, Segment};

use fault::Exc;
use flags::Flags;
use icache::ICache;
use tlb::Tlb;
use x86::reg::{cr0, efer, rflags};

/// Model switches: features of the modeled processor that a board opts into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// VMX (SDM Vol. 3C chapters 24-31): advertised in CPUID.1:ECX bit 5, CR4.VMXE settable,
    /// capability MSRs readable, the VMX instructions of root operation. Off by default until
    /// VM entry and non-root operation exist.
    pub vmx: bool,
}

/// Counters of the model's own machinery (not architectural state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// TLB lookups that hit.
    pub tlb_hits: u64,
    /// TLB lookups that missed and walked the page tables.
    pub tlb_misses: u64,
    /// TLB flushes of any kind (full, by PCID, single page).
    pub tlb_flushes: u64,
    /// Instructions found in the decode cache.
    pub decode_hits: u64,
    /// Instructions decoded.
    pub decode_misses: u64,
    /// Blocks run (each a run of instructions without a fetch per instruction).
    pub blocks_run: u64,
    /// Exceptions and interrupts delivered.
    pub events_delivered: u64,
}

/// How a burst (`Cpu::burst`) ended.
enum Burst {
    /// It ran at least one step; the run loop continues at the next boundary.
    Ran,
    /// The first instruction needs the full path.
    Declined,
    /// The run ends.
    Stop(Result<StopReason, CpuError>),
}

/// A code page translated for instruction fetch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FetchPage {
    /// Linear page number + 1 (0: nothing cached).
    pub page1: u64,
    /// RAM offset of the page.
    pub ram: usize,
    pub generation: u64,
    pub cpl: u8,
    /// CR3 when the page was translated: the address space, PCID included.
    pub cr3: u64,
}

/// The code pages last translated for instruction fetch: a small instruction TLB in front of
/// the TLB, direct-mapped by linear page, so that a call to code in another page and the
/// return from it skip the TLB lookup. An entry is valid while the TLB generation (every
/// invalidation and context change), the CPL and CR3 are those it was filled under.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FetchPages([FetchPage; 4]);

impl FetchPages {
    /// The entry for linear page number + 1 `page1`, if valid.
    #[inline(always)]
    pub fn find(&self, page1: u64, generation: u64, cpl: u8, cr3: u64) -> Option<&FetchPage> {
        let f = &self.0[(page1 & 3) as usize];
        (f.page1 == page1 && f.generation == generation && f.cpl == cpl && f.cr3 == cr3)
            .then_some(f)
    }

    pub fn fill(&mut self, f: FetchPage) {
        self.0[(f.page1 & 3) as usize] = f;
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Model-specific registers kept by the CPU itself (SDM Vol. 4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MsrState {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub tsc_aux: u64,
    /// TSC = virtual time + this offset (WRMSR IA32_TSC sets it).
    pub tsc_offset: u64,
    pub pat: u64,
    pub feature_control: u64,
    pub misc_enable: u64,
    pub mtrr_def_type: u64,
    pub mtrr_fixed: [u64; 11],
    pub mtrr_var: [u64; 16],
}

/// One x86-64 logical processor.
#[derive(Debug)]
pub struct Cpu {
    pub(crate) gpr: [u64; 16],
    pub(crate) rip: u64,
    pub(crate) flags: Flags,
    pub(crate) seg: [Segment; 6],
    pub(crate) ldtr: Segment,
    pub(crate) tr: Segment,
    pub(crate) gdtr: DescriptorTable,
    pub(crate) idtr: DescriptorTable,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    /// The PAE PDPTE registers, loaded by MOV to CR3/CR0/CR4 (SDM Vol. 3A §4.4.1); `None` until
    /// loaded (state set directly by a loader or a test: loaded at the first walk).
    pub(crate) pdptes: Option<paging::Pdptes>,
    pub(crate) efer: u64,
    pub(crate) dr: [u64; 8],
    pub(crate) msr: MsrState,
    /// Current privilege level (SDM Vol. 3A §5.5).
    pub(crate) cpl: u8,
    pub(crate) mode: Mode,
    /// Default operand/address size of the code segment: 16, 32 or 64.
    pub(crate) code_bits: u32,
    /// Interrupts are inhibited at the next instruction boundary (STI / MOV SS shadow,
    /// SDM Vol. 3A §6.8.3).
    pub(crate) shadow: bool,
    /// An NMI is pending (taken from the board after an instruction that touched a device).
    /// The shadow is one of MOV SS or POP SS (blocking by MOV SS rather than by STI, SDM
    /// Vol. 3A §6.8.3; VMX tells the two apart, Vol. 3C §25.4.2).
    pub(crate) mov_ss_shadow: bool,
    /// MONITOR/MWAIT and RDRAND/RDSEED state (`ops::hint`).
    pub(crate) hint: ops::hint::HintState,
    pub(crate) nmi_pending: bool,
    /// NMIs are blocked: from the delivery of an NMI to the next IRET (SDM Vol. 3A §6.7.1).
    pub(crate) nmi_blocked: bool,
    /// Ask the board for an NMI at the next boundary (a device was touched).
    pub(crate) nmi_check: bool,
    pub(crate) halted: bool,
    pub(crate) retired: u64,
    pub(crate) idle_ticks: u64,
    /// RIP of the instruction after the one executing.
    pub(crate) next_rip: u64,
    /// The executing instruction touched a port or MMIO (check for a stop request).
    pub(crate) touched_device: bool,
    pub(crate) tlb: Tlb,
    /// The data pages in front of the TLB (`tlb::DataPages`).
    pub(crate) dpages: tlb::DataPages,
    /// The code pages instructions were last fetched from ([`FetchPages`]): most fetches skip
    /// the TLB lookup.
    pub(crate) fetch: FetchPages,
    pub(crate) icache: ICache,
    /// The iced form of the generic instruction `exec::fetch` returned last.
    pub(crate) decoded: iced_x86::Instruction,
    /// The pre-decoded form of the last instruction decoded (for one that is not cached).
    pub(crate) fetched: uop::Uop,
    pub(crate) counters: Counters,
    /// Run straight-line code as blocks (`block`); off only to compare against single steps.
    pub(crate) use_blocks: bool,
    /// The model switches this processor was built with.
    pub(crate) features: CpuFeatures,
    /// VMX operation and the current VMCS (SDM Vol. 3C §24.7, §25.11.1).
    pub(crate) vmx: ops::vmx::VmxState,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    /// A processor in its power-up state (SDM Vol. 3A §9.1.1, Table 9-1): real mode at
    /// F000:FFF0 with CS.base = 0xFFFF0000. Every model switch is off.
    pub fn new() -> Self {
        Self::with_features(CpuFeatures::default())
    }

    /// A processor with the model switches `features`, in its power-up state.
    pub fn with_features(features: CpuFeatures) -> Self {
        let mut cpu = Cpu {
            gpr: [0; 16],
            rip: 0,
            flags: Flags::new(rflags::FIXED1),
            seg: [Segment::default(); 6],
            ldtr: Segment::default(),
            tr: Segment::default(),
            gdtr: DescriptorTable::default(),
            idtr: DescriptorTable::default(),
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            pdptes: None,
            efer: 0,
            dr: [0; 8],
            msr: MsrState::default(),
            cpl: 0,
            mode: Mode::Real,
            code_bits: 16,
            shadow: false,
            mov_ss_shadow: false,
            hint: ops::hint::HintState::default(),
            nmi_pending: false,
            nmi_blocked: false,
            nmi_check: false,
            halted: false,
            retired: 0,
            idle_ticks: 0,
            next_rip: 0,
            touched_device: false,
            tlb: Tlb::new(),
            dpages: tlb::DataPages::new(),
            fetch: FetchPages::default(),
            icache: ICache::new(),
            decoded: iced_x86::Instruction::default(),
            fetched: uop::Uop::GENERIC,
            use_blocks: true,
            counters: Counters::default(),
            features,
            vmx: ops::vmx::VmxState::default(),
        };
        cpu.reset();
        cpu
    }

    /// RESET (SDM Vol. 3A §9.1.1, Table 9-1). Virtual time keeps running.
    pub fn reset(&mut self) {
        self.gpr = [0; 16];
        // EDX holds the processor signature after reset.
        self.gpr[Gpr::Rdx as usize] = u64::from(cpuid::SIGNATURE);
        self.rip = 0xfff0;
        self.flags = Flags::new(rflags::FIXED1);
        for s in Seg::ALL {
            self.seg[s as usize] = Segment::real(0, s == Seg::Cs);
        }
        self.seg[Seg::Cs as usize] = Segment {
            base: 0xffff_0000,
            ..Segment::real(0xf000, true)
        };
        self.ldtr = Segment {
            ar: state::ar::P | 2,
            limit: 0xffff,
            ..Segment::default()
        };
        self.tr = Segment {
            ar: state::ar::P | 0xb,
            limit: 0xffff,
            ..Segment::default()
        };
        self.gdtr = DescriptorTable {
            base: 0,
            limit: 0xffff,
        };
        self.idtr = DescriptorTable {
            base: 0,
            limit: 0xffff,
        };
        self.cr0 = cr0::ET | cr0::CD | cr0::NW;
        self.cr2 = 0;
        self.cr3 = 0;
        self.cr4 = 0;
        self.efer = 0;
        self.dr = [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400];
        self.msr = MsrState {
            pat: msr::PAT_RESET,
            ..MsrState::default()
        };
        self.cpl = 0;
        self.shadow = false;
        self.halted = false;
        self.nmi_pending = false;
        self.nmi_blocked = false;
        self.hint = ops::hint::HintState::default();
        // RESET leaves VMX operation; the cached VMCS is lost, as on silicon.
        self.vmx = ops::vmx::VmxState::default();
        self.tlb.flush_all();
        self.icache.flush();
        self.update_mode();
    }

    /// The model switches this processor was built with.
    pub fn features(&self) -> CpuFeatures {
        self.features
    }

    /// The machine state a multiboot1 loader promises at the OS entry point (Multiboot
    /// Specification 0.6.96 §3.2): 32-bit protected mode without paging, CS a flat 32-bit
    /// execute/read segment (selector 0x08), DS/ES/FS/GS/SS flat read/write (0x10),
    /// EFLAGS.IF = EFLAGS.VM = 0, EAX = `magic`, EBX = `info`, EIP = `entry`. GDTR and IDTR are
    /// left empty: the kernel must load its own before reloading a segment register.
    pub fn set_multiboot_entry(&mut self, entry: u32, magic: u32, info: u32) {
        self.cr0 = cr0::ET | cr0::PE;
        self.efer = 0;
        self.cr4 = 0;
        for s in Seg::ALL {
            self.seg[s as usize] =
                Segment::flat32(if s == Seg::Cs { 0x08 } else { 0x10 }, s == Seg::Cs, 0);
        }
        self.ldtr = Segment {
            ar: state::ar::UNUSABLE,
            ..Segment::default()
        };
        self.gdtr = DescriptorTable::default();
        self.idtr = DescriptorTable::default();
        self.flags = Flags::new(rflags::FIXED1);
        self.gpr[Gpr::Rax as usize] = u64::from(magic);
        self.gpr[Gpr::Rbx as usize] = u64::from(info);
        self.rip = u64::from(entry);
        self.cpl = 0;
        self.halted = false;
        self.shadow = false;
        self.tlb.flush_all();
        self.update_mode();
    }

    /// Loads CR0, CR3, CR4 and IA32_EFER directly, without the checks of MOV to CR and WRMSR
    /// (a loader's or a test's privilege, like [`Cpu::set_segment`]): an ELF64 loader can enter
    /// long mode this way. EFER.LMA is taken as given. The TLB is flushed and the PAE PDPTEs are
    /// loaded at the next walk.
    pub fn set_control_registers(&mut self, cr0: u64, cr3: u64, cr4: u64, efer: u64) {
        self.cr0 = cr0 | cr0::ET;
        self.cr3 = cr3;
        self.cr4 = cr4;
        self.efer = efer;
        self.pdptes = None;
        self.tlb.flush_all();
        self.update_mode();
    }

    /// Runs up to `max_insns` steps: a step is a retired instruction or an exception or
    /// interrupt delivered between instructions (a faulting instruction does not retire, but
    /// the delivery of its fault counts, so that a guest caught in a fault loop still advances
    /// virtual time and exhausts its budget).
    pub fn run<B: Bus>(&mut self, bus: &mut B, max_insns: u64) -> Result<StopReason, CpuError> {
        self.icache.attach(bus);
        let end = self.retired.saturating_add(max_insns);
        loop {
            // NMIs come before maskable interrupts and their VM exits (SDM Vol. 3A §6.9).
            if self.nmi_check {
                self.nmi_check = false;
                self.nmi_pending |= bus.take_nmi();
            }
            if self.nmi_pending {
                let r = self.nmi_boundary(bus);
                if let Some(stop) = self.conclude(bus, r) {
                    return stop;
                }
            }
            // VMX: in non-root operation the events of an instruction boundary may cause VM
            // exits first (SDM Vol. 3C §26.2, §26.7): `nonroot::boundary`.
            if self.vmx.non_root {
                let r = self.nonroot_boundary(bus);
                if let Some(stop) = self.conclude(bus, r) {
                    return stop;
                }
            }
            // Maskable interrupts are recognised at instruction boundaries (SDM Vol. 3A §6.9).
            if self.flags.get(rflags::IF) && !self.shadow && bus.has_interrupt(self.now()) {
                self.halted = false;
                if let Some(vector) = bus.acknowledge_interrupt(self.now()) {
                    let r = self
                        .deliver_interrupt(bus, vector)
                        .map(|()| self.retired += 1);
                    if let Some(stop) = self.conclude(bus, r) {
                        return stop;
                    }
                }
            }
            if self.halted {
                return Ok(StopReason::Halted);
            }
            if self.retired >= end {
                return Ok(StopReason::BudgetExhausted);
            }
            // With no single-step trap or interrupt shadow pending, the boundaries that follow
            // are decided in advance (`burst`); in VMX non-root operation too, up to the
            // preemption timer's deadline (the window exits cannot open within a burst: its
            // instructions change neither RFLAGS.IF nor any blocking).
            if !self.shadow && !self.flags.get(rflags::TF) {
                match self.burst(bus, end) {
                    Burst::Ran => continue,
                    Burst::Stop(stop) => return stop,
                    Burst::Declined => {}
                }
            }
            // VMX needs the blocking the instruction about to run began with (VMLAUNCH fails
            // after MOV SS; a VM exit saves it): SDM Vol. 3C §25.4.2, §31.3.
            self.vmx.step_blocking = self.blocking_state();
            self.mov_ss_shadow = false;
            self.shadow = false;
            let single_step = self.flags.get(rflags::TF);
            let events = self.counters.events_delivered;
            let mut r = self.step(bus);
            self.vmx.step_blocking = 0;
            // The single-step trap follows an instruction that began with TF = 1, unless that
            // instruction delivered an event itself (SDM Vol. 3A §18.3.1.4).
            if r.is_ok() && single_step && self.counters.events_delivered == events {
                self.dr[6] |= 1 << 14;
                r = Err(Fault::new(fault::vector::DB).into());
            }
            if let Some(stop) = self.conclude(bus, r) {
                return stop;
            }
            if self.touched_device {
                self.touched_device = false;
                self.nmi_check = true;
                if bus.stop_requested() {
                    return Ok(StopReason::BusStop);
                }
            }
        }
    }

    /// Runs instructions back to back from an instruction boundary at which the run loop has
    /// made its checks, as long as the boundaries between them would decide nothing: each
    /// instruction is burst-safe (`uop`: it cannot change IF, TF, the shadow, CS, the mode or
    /// VMX operation, nor halt), so the only events are a maskable interrupt, which the board
    /// rules out until [`Bus::interrupt_horizon`] when IF = 1, the budget, a fault, and a device
    /// access (after which the board must be asked again). Nothing else differs from `step`:
    /// each instruction is fetched through the decode cache (self-modifying code takes effect
    /// for the next instruction) and retires one tick. `Declined` if the first instruction is
    /// not burst-safe: the caller runs it through the full path.
    #[inline(always)]
    fn burst<B: Bus>(&mut self, bus: &mut B, end: u64) -> Burst {
        let mut limit = if self.flags.get(rflags::IF) || self.interrupts_exit() {
            let horizon = bus.interrupt_horizon(self.now()).ticks();
            // The instruction at tick t may run when t < horizon: retired < horizon - idle.
            end.min(horizon.saturating_sub(self.idle_ticks))
        } else {
            end
        };
        if let Some(deadline) = self.own_deadline() {
            limit = limit.min(deadline.ticks().saturating_sub(self.idle_ticks));
        }
        if self.retired >= limit {
            return Burst::Declined;
        }
        // Burst-safe instructions do not change the code size.
        let code_mask = flags::mask(self.code_bits);
        let mut first = true;
        // The code page as `fetch` last translated it (linear page + 1, RAM offset, TLB
        // generation), checked here without the CPL and CR3, which a burst does not change.
        let is64 = self.code_bits == 64;
        let mut page = (0u64, 0usize, 0u64);
        // Whether the data pages are synced with their key (`Cpu::data_key`), as a block's
        // loads and stores need: the key may have changed before the burst and after any
        // instruction the burst runs itself, while a block leaves it synced (every op that may
        // change it syncs again).
        let mut synced = false;
        loop {
            let mut same_page =
                is64 && (self.rip >> 12) + 1 == page.0 && self.tlb.generation() == page.2;
            if is64 && !same_page {
                let page1 = (self.rip >> 12) + 1;
                let generation = self.tlb.generation();
                if let Some(f) = self.fetch.find(page1, generation, self.cpl, self.cr3) {
                    page = (f.page1, f.ram, f.generation);
                    same_page = true;
                }
            }
            // A block, if one starts here and fits before the limit (`block`).
            if same_page && self.use_blocks {
                let off = page.1 + (self.rip & 0xfff) as usize;
                let ram_page = off >> 12;
                let block = match self.icache.generation(ram_page) {
                    Some(generation) => match self.icache.blocks.find(off, generation) {
                        Some(b) => b,
                        None => self.build_block(bus, off),
                    },
                    None => block::Block::default(),
                };
                if block.insns > 0 && self.retired + u64::from(block.insns) <= limit {
                    if !synced {
                        self.dpages.sync(self.data_key());
                        synced = true;
                    }
                    first = false;
                    self.counters.blocks_run += 1;
                    let r = self.run_block(bus, &block, ram_page, limit);
                    if let Some(end) = self.burst_step_end(bus, r, limit) {
                        return end;
                    }
                    continue;
                }
            }
            let fetched = if same_page {
                let off = page.1 + (self.rip & 0xfff) as usize;
                match self.icache.find(off, 64) {
                    Some(i) => {
                        self.counters.decode_hits += 1;
                        Ok(i)
                    }
                    None => self.fetch(bus),
                }
            } else {
                let r = self.fetch(bus);
                let page1 = (self.rip >> 12) + 1;
                let generation = self.tlb.generation();
                page = match self.fetch.find(page1, generation, self.cpl, self.cr3) {
                    Some(f) => (f.page1, f.ram, f.generation),
                    None => (0, 0, 0),
                };
                r
            };
            synced = false;
            let r = match fetched {
                Ok(i) => match self.burst_exec(bus, i, code_mask) {
                    Some(r) => r,
                    // Not burst-safe: fetched again (from the cache) by the full path.
                    None if first => return Burst::Declined,
                    None => return Burst::Ran,
                },
                Err(e) => Err(e),
            };
            first = false;
            if let Some(end) = self.burst_step_end(bus, r, limit) {
                return end;
            }
        }
    }

    /// After an instruction or a block of a burst: whether the burst ends (a fault to
    /// deliver, a device touched, the limit reached) and how.
    #[inline(always)]
    fn burst_step_end<B: Bus>(
        &mut self,
        bus: &mut B,
        r: fault::Ex<()>,
        limit: u64,
    ) -> Option<Burst> {
        if r.is_err() {
            return Some(match self.conclude(bus, r) {
                Some(stop) => Burst::Stop(stop),
                None => Burst::Ran,
            });
        }
        if self.touched_device {
            self.touched_device = false;
            self.nmi_check = true;
            if bus.stop_requested() {
                return Some(Burst::Stop(Ok(StopReason::BusStop)));
            }
            return Some(Burst::Ran);
        }
        (self.retired >= limit).then_some(Burst::Ran)
    }

    /// Finishes a step that did not complete: delivers its exception (and any that delivery
    /// raises), performs its VM exit, or ends the run. `Some` ends the run.
    fn conclude<B: Bus>(
        &mut self,
        bus: &mut B,
        mut r: fault::Ex<()>,
    ) -> Option<Result<StopReason, CpuError>> {
        loop {
            r = match r {
                Ok(()) => return None,
                Err(Exc::Fault(f)) => self.deliver_fault(bus, f),
                Err(Exc::VmExit(exit)) => {
                    let r = self.vm_exit(bus, *exit);
                    if r.is_ok() && self.vmx.native {
                        return Some(Ok(StopReason::VmExit));
                    }
                    r
                }
                // A triple fault in VMX non-root operation is a VM exit (SDM Vol. 3C §26.2).
                Err(Exc::Shutdown) if self.vmx.non_root => {
                    let r = self.vm_exit(
                        bus,
                        vmx::exit::VmExit::new(x86::vmx::ExitReason::TripleFault, 0),
                    );
                    if r.is_ok() && self.vmx.native {
                        return Some(Ok(StopReason::VmExit));
                    }
                    r
                }
                Err(Exc::Shutdown) => return Some(Ok(StopReason::Shutdown)),
                Err(Exc::Error(e)) => return Some(Err(*e)),
            };
        }
    }

    /// Virtual time now: steps (retired instructions and delivered events) plus skipped idle
    /// ticks.
    pub fn now(&self) -> VirtualTime {
        VirtualTime::from_ticks(self.retired.wrapping_add(self.idle_ticks))
    }

    /// Steps since creation: instructions retired plus exceptions and interrupts delivered
    /// between instructions (see [`Cpu::run`]). This is the virtual clock's tick count.
    pub fn instructions_retired(&self) -> u64 {
        self.retired
    }

    /// Lets `ticks` of virtual time pass while the CPU is halted (the board skips to its next
    /// timer deadline).
    pub fn skip_idle_ticks(&mut self, ticks: u64) {
        self.idle_ticks = self.idle_ticks.wrapping_add(ticks);
    }

    /// Whether the CPU is in the HLT state.
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Counters of the TLB, decode cache and event delivery.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Forgets every decoded instruction: a board that writes RAM behind the CPU's back (a
    /// loader, DMA) must call this before running again.
    pub fn flush_decode_cache(&mut self) {
        self.icache.flush();
    }

    /// The board's RAM at byte offset `offset` was written behind the CPU's back (a native
    /// hypervisor's store, DMA): instructions decoded from that page are forgotten.
    pub fn note_ram_write(&mut self, offset: usize) {
        self.icache.note_write(offset);
    }

    /// A general-purpose register.
    pub fn gpr(&self, r: Gpr) -> u64 {
        self.gpr[r as usize]
    }

    /// Sets a general-purpose register.
    pub fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.gpr[r as usize] = value;
    }

    /// RIP.
    pub fn rip(&self) -> u64 {
        self.rip
    }

    /// Sets RIP.
    pub fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }

    /// RFLAGS, with the arithmetic flags evaluated.
    pub fn rflags(&self) -> u64 {
        self.flags.bits()
    }

    /// Sets RFLAGS (bit 1 reads as 1, reserved bits as 0).
    pub fn set_rflags(&mut self, value: u64) {
        self.flags = Flags::new((value & rflags::DEFINED) | rflags::FIXED1);
    }

    /// A segment register.
    pub fn segment(&self, s: Seg) -> Segment {
        self.seg[s as usize]
    }

    /// Loads a segment register's selector and hidden cache directly (a loader's or a test's
    /// privilege; guests use MOV/POP/far transfers).
    pub fn set_segment(&mut self, s: Seg, value: Segment) {
        self.seg[s as usize] = value;
        if s == Seg::Cs {
            self.cpl = value.dpl();
        }
        self.update_mode();
    }

    /// GDTR.
    pub fn gdtr(&self) -> DescriptorTable {
        self.gdtr
    }

    /// IDTR.
    pub fn idtr(&self) -> DescriptorTable {
        self.idtr
    }

    /// CR0.
    pub fn cr0(&self) -> u64 {
        self.cr0
    }

    /// CR2.
    pub fn cr2(&self) -> u64 {
        self.cr2
    }

    /// Sets CR2, as MOV to CR2 does: a native hypervisor that injects a page fault gives its
    /// guest the faulting address this way (no VMCS field holds CR2).
    pub fn set_cr2(&mut self, v: u64) {
        self.cr2 = v;
    }

    /// CR3.
    pub fn cr3(&self) -> u64 {
        self.cr3
    }

    /// CR4.
    pub fn cr4(&self) -> u64 {
        self.cr4
    }

    /// IA32_EFER.
    pub fn efer(&self) -> u64 {
        self.efer
    }

    /// The current privilege level.
    pub fn cpl(&self) -> u8 {
        self.cpl
    }

    /// The operating mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Recomputes the mode and default code size after CR0, EFER or CS changed.
    pub(crate) fn update_mode(&mut self) {
        let cs = self.seg[Seg::Cs as usize].ar;
        self.mode = if self.cr0 & cr0::PE == 0 {
            Mode::Real
        } else if self.efer & efer::LMA == 0 {
            Mode::Protected
        } else if cs & state::ar::L != 0 {
            Mode::Long64
        } else {
            Mode::Compatibility
        };
        self.code_bits = match self.mode {
            Mode::Long64 => 64,
            Mode::Real => 16,
            _ if cs & state::ar::DB != 0 => 32,
            _ => 16,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use proptest::prelude::*;

    /// Runs arbitrary bytes as code in one of the three modes; whatever happens must be an
    /// architectural outcome or a named model error, within the budget.
    fn run_garbage(mode: u8, code: &[u8], regs: [u64; 4]) -> Result<StopReason, CpuError> {
        let mut bus = TestBus::new();
        let mut cpu = match mode {
            0 => {
                let mut cpu = Cpu::new();
                cpu.set_segment(Seg::Cs, Segment::real(0, true));
                cpu.rip = 0x8000;
                cpu
            }
            1 => {
                let mut cpu = Cpu::new();
                cpu.set_multiboot_entry(0x8000, 0x2bad_b002, 0x9000);
                cpu
            }
            2 => {
                let mut cpu = long_mode(&mut bus);
                install_tables(&mut cpu, &mut bus);
                cpu.rip = 0x8000;
                cpu
            }
            _ => {
                // 64-bit mode whose page tables, GDT and IDT are the garbage itself.
                let mut cpu = Cpu::new();
                cpu.set_multiboot_entry(0x8000, 0, 0);
                cpu.set_control_registers(0x8000_0011, 0x8000, 0x20, 0x500);
                let mut cs = cpu.segment(Seg::Cs);
                cs.ar = (cs.ar & !state::ar::DB) | state::ar::L;
                cpu.set_segment(Seg::Cs, cs);
                cpu.gdtr = DescriptorTable {
                    base: 0x8000,
                    limit: 0xffff,
                };
                cpu.idtr = DescriptorTable {
                    base: 0x8000,
                    limit: 0xfff,
                };
                cpu
            }
        };
        bus.load(0x8000, code);
        for (i, v) in regs.iter().enumerate() {
            cpu.gpr[i * 2] = *v;
        }
        cpu.run(&mut bus, 500)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes_never_panic_or_hang(
            mode in 0u8..4,
            code in proptest::collection::vec(any::<u8>(), 1..128),
            regs in any::<[u64; 4]>(),
        ) {
            let before = std::time::Instant::now();
            match run_garbage(mode, &code, regs) {
                Ok(_) => {}
                Err(CpuError::Unimplemented { mnemonic, .. }) => prop_assert!(!mnemonic.is_empty()),
                Err(CpuError::Unsupported { what, .. }) => prop_assert!(!what.is_empty()),
            }
            prop_assert!(before.elapsed().as_secs() < 5, "a 500-instruction run must not hang");
        }
    }
}
