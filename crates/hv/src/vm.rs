//! A virtual machine with one vCPU, run with EPT (issue 6, `--mmu ept`): the VMCS built once,
//! the guest's memory mapped lazily in EPT01 with 2-MiB pages where the guest's RAM allows,
//! exits parsed once ([`ExitInfo`]) and handled by functions that return an [`Action`], the
//! RIP advanced and events injected in one place ([`Vm::run`]), virtual devices for the guest
//! (UART, debug-exit port, 8259 pair, fw_cfg, PCI "no device", local APIC and its timer).
//!
//! The guest's memory is host memory `[ram_base, ram_base + ram)`; everything else the
//! hypervisor builds (VMCS, EPT tables, MSR bitmap) comes from frames that
//! [`crate::memory::PhysMemory`] hands out, which the guest never gets a mapping of. The
//! guest's console goes to the [`crate::platform::Platform`], which tags it with its level.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use devices::debug_exit::ExitRequest;
use devices::fw_cfg::FwCfg;
use devices::pci::PciHost;
use devices::pic::PicPair;
use devices::uart::Uart;
use devices::{ByteSink, LatchedLine};
use x86::paging::ept;
use x86::reg::{cr0, cr4, efer, rflags};
use x86::vmx::controls::{entry, exit, interruptibility, pin_based, primary_proc, secondary_proc};
use x86::vmx::exit::IoQualification;
use x86::vmx::{InterruptionInfo, InterruptionType, VmcsField as F};
use x86::{Gpa, Hfn, Hpa};

use crate::ept::{Ept, EptError, PageSize};
use crate::exit::{Event, Exit, ExitInfo};
use crate::guest::{PagingRegs, RamLayout};
use crate::platform::Host;
use crate::shadow::{Fault as ShadowFault, ShadowConfig, ShadowCounters};
use crate::vm_shadow::ShadowPaging;
use crate::vmx::{GuestRegs, RunOutcome, Vmx, VmxError};

/// How the guest's memory is virtualized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmu {
    /// EPT01 built by the hypervisor, lazily, with 2-MiB pages where the RAM allows.
    Ept,
    /// Shadow paging ([`crate::shadow`]) with at most `max_pages` shadow pages.
    Shadow {
        /// The shadow-page budget.
        max_pages: usize,
    },
}

/// How the guest was set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest RAM in bytes (guest-physical `[0, ram)`).
    pub ram: u64,
    /// Where guest-physical 0 lives in host memory (2-MiB aligned).
    pub ram_base: Hpa,
    /// The multiboot entry point and information address (Multiboot 0.6.96 §3.2).
    pub entry: u32,
    /// EBX at entry.
    pub multiboot_info: u32,
    /// The VPID of the guest (non-zero).
    pub vpid: u16,
    /// EPT or shadow paging.
    pub mmu: Mmu,
}

/// How a guest's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote to its debug-exit port.
    DebugExit(ExitRequest),
    /// The guest triple-faulted.
    TripleFault,
    /// The guest halted with nothing that can wake it.
    HaltedForever,
    /// The instruction budget ran out ([`crate::platform::Platform::budget_exhausted`]).
    InstructionLimit,
    /// Something this hypervisor does not implement, named.
    Unsupported(String),
}

/// What a handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Resume the guest where it is.
    Resume,
    /// Skip the instruction that exited (RIP += the VM-exit instruction length).
    Skip,
    /// Skip an emulated instruction of this length.
    SkipBy(u64),
    /// Inject a hardware exception (with error code) at the instruction that exited.
    Fault(u8, Option<u32>),
    /// Inject a page fault for the linear address `addr` (which goes to the guest's CR2).
    PageFault {
        /// The faulting linear address.
        addr: u64,
        /// The #PF error code.
        error_code: u32,
    },
}

/// An error of the hypervisor itself (not of the guest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HvError {
    /// A VMX operation failed.
    Vmx(VmxError),
    /// The hypervisor's memory ran out or failed.
    Memory(String),
}

impl From<VmxError> for HvError {
    fn from(e: VmxError) -> Self {
        Self::Vmx(e)
    }
}

impl From<EptError> for HvError {
    fn from(e: EptError) -> Self {
        Self::Memory(format!("{e}"))
    }
}

impl core::fmt::Display for HvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Vmx(e) => write!(f, "VMX: {e}"),
            Self::Memory(m) => write!(f, "memory: {m}"),
        }
    }
}

/// Counters of one VM (deterministic: they depend on the guest only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// VM exits by basic reason.
    pub exits: BTreeMap<u16, u64>,
    /// EPT violations that mapped guest memory.
    pub ept_maps: u64,
    /// MMIO accesses emulated.
    pub mmio: u64,
    /// Port I/O emulated.
    pub io: u64,
    /// Interrupts injected.
    pub injected: u64,
    /// Events injected again after an exit interrupted their delivery.
    pub reinjected: u64,
    /// Exits by what their handler did: `resume`, `skip` (the instruction was done for the
    /// guest), `emulate` (an MMIO access), `fault` (an exception injected), `end`.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// VM entries.
    pub entries: u64,
    /// INVEPT and INVVPID the hypervisor executed (TLB flushes it asked the processor for).
    pub tlb_flushes: u64,
    /// The shadow MMU's counters (shadow paging only).
    pub shadow: Option<ShadowCounters>,
}

/// A console byte buffer for the virtual UART.
#[derive(Debug, Default)]
struct Buffer(Vec<u8>);

impl ByteSink for Buffer {
    fn put(&mut self, byte: u8) {
        self.0.push(byte);
    }
}

/// The COM1 window.
const COM1: u16 = 0x3f8;
/// IA32_APIC_BASE.
const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_EFER.
const IA32_EFER: u32 = 0xc000_0080;

/// The guest's memory: EPT01 or the shadow MMU.
#[derive(Debug)]
enum Paging {
    Ept(Ept),
    Shadow(alloc::boxed::Box<ShadowPaging>),
}

/// One VM.
#[derive(Debug)]
pub struct Vm {
    cfg: VmConfig,
    paging: Paging,
    vmcs: Hfn,
    msr_bitmap: Hfn,
    regs: GuestRegs,
    launched: bool,
    uart: Uart<Buffer, LatchedLine>,
    pic: PicPair,
    fw_cfg: FwCfg,
    pci: PciHost,
    apic: crate::vlapic::VLapic,
    counters: Counters,
}

impl Vm {
    /// Builds the VM: EPT, the VMCS with controls the processor supports, the guest at its
    /// multiboot entry state (32-bit protected mode, paging off: "unrestricted guest").
    pub fn new<H: Host>(host: &mut H, cfg: VmConfig) -> Result<Self, HvError> {
        let frame = |mem: &mut H| {
            mem.alloc_frame()
                .ok_or_else(|| HvError::Memory(String::from("no frame for the VMCS")))
        };
        let vmcs = frame(host)?;
        let msr_bitmap = frame(host)?;
        let paging = match cfg.mmu {
            Mmu::Ept => Paging::Ept(Ept::new(host, false)?),
            Mmu::Shadow { max_pages } => {
                let maxphyaddr = (host.cpuid(0x8000_0008, 0)[0] & 0xff) as u8;
                let gb_pages = host.cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0;
                let cr4_fixed1 = host.capability(x86::msr::IA32_VMX_CR4_FIXED1)?;
                let layout = RamLayout {
                    base: cfg.ram_base,
                    size: cfg.ram,
                };
                let shadow = ShadowConfig {
                    layout,
                    maxphyaddr: maxphyaddr.clamp(32, 52),
                    gb_pages,
                    max_pages,
                };
                Paging::Shadow(alloc::boxed::Box::new(ShadowPaging::new(
                    shadow, cr4_fixed1, cfg.vpid,
                )))
            }
        };
        // The VMCS revision identifier (IA32_VMX_BASIC[30:0]) heads the region.
        let basic = host.capability(x86::msr::IA32_VMX_BASIC)?;
        host.write(vmcs.addr(), &((basic & 0x7fff_ffff) as u32).to_le_bytes())
            .map_err(|e| HvError::Memory(format!("{e}")))?;
        // Intercepted MSRs: the APIC base (the virtual APIC), the VMX capability MSRs and
        // IA32_FEATURE_CONTROL (VMX is not offered to the guest), x2APIC and TSC deadline
        // (not offered either), and under shadow paging IA32_EFER. Reads of MSRs
        // 0–0x1FFF in the first 1 KiB, of 0xC0000000–0xC0001FFF in the second; writes in
        // the third and fourth (SDM Vol. 3C §25.6.9).
        let mut intercept = |msr: u32| -> Result<(), HvError> {
            let (low, bit) = if msr >= 0xc000_0000 {
                (1024u64, msr - 0xc000_0000)
            } else {
                (0, msr)
            };
            for half in [0u64, 2048] {
                let at = msr_bitmap
                    .addr()
                    .wrapping_add(half + low + u64::from(bit / 8));
                let mut b = [0u8];
                host.read(at, &mut b)
                    .map_err(|e| HvError::Memory(format!("{e}")))?;
                b[0] |= 1 << (bit % 8);
                host.write(at, &b)
                    .map_err(|e| HvError::Memory(format!("{e}")))?;
            }
            Ok(())
        };
        let efer_msr = matches!(paging, Paging::Shadow(_)).then_some(IA32_EFER);
        for msr in [IA32_APIC_BASE, 0x3a, 0x6e0]
            .into_iter()
            .chain(0x480..=0x493)
            .chain(0x800..=0x8ff)
            .chain(efer_msr)
        {
            intercept(msr)?;
        }
        host.vmclear(vmcs.addr())?;
        host.vmptrld(vmcs.addr())?;
        let mut vm = Self {
            cfg,
            paging,
            vmcs,
            msr_bitmap,
            regs: GuestRegs::default(),
            launched: false,
            uart: Uart::new(Buffer::default(), LatchedLine::default()),
            pic: PicPair::new(),
            fw_cfg: FwCfg::new(cfg.ram, 1),
            pci: PciHost::new(),
            apic: crate::vlapic::VLapic::new(0, 39),
            counters: Counters::default(),
        };
        vm.setup_vmcs(host)?;
        Ok(vm)
    }

    /// The host-physical address of the guest's VMCS region.
    pub fn vmcs_region(&self) -> Hpa {
        self.vmcs.addr()
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        if let Paging::Shadow(s) = &self.paging {
            c.shadow = Some(s.counters());
            c.tlb_flushes += s.flushes;
        }
        c
    }

    /// The controls a VMCS field must hold: `want` plus the bits the capability MSR `msr`
    /// requires, or an error naming a wanted bit the processor does not allow.
    fn adjust<V: Vmx>(vmx: &mut V, msr: u32, want: u32) -> Result<u64, HvError> {
        let cap = vmx.capability(msr)?;
        let (must, may) = (cap as u32, (cap >> 32) as u32);
        if want & !may != 0 {
            return Err(HvError::Vmx(VmxError::Backend(format!(
                "the processor lacks VMX control bits {:#x} (capability MSR {msr:#x})",
                want & !may
            ))));
        }
        Ok(u64::from(want | must))
    }

    fn setup_vmcs<H: Host>(&mut self, vmx: &mut H) -> Result<(), HvError> {
        use x86::msr::{
            IA32_VMX_PROCBASED_CTLS2, IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
            IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS,
        };
        // The machine's own interrupts are the hypervisor's, never the guest's: external-
        // interrupt exiting with "acknowledge interrupt on exit" (the guest's interrupts come
        // from its virtual devices only).
        let pin = Self::adjust(
            vmx,
            IA32_VMX_TRUE_PINBASED_CTLS,
            pin_based::ACTIVATE_PREEMPTION_TIMER | pin_based::EXTERNAL_INTERRUPT_EXITING,
        )?;
        let shadow = matches!(self.paging, Paging::Shadow(_));
        // Shadow paging: CR3 loads and stores and INVLPG exit (with "enable INVPCID",
        // INVLPG exiting makes INVPCID exit too, SDM Vol. 3C §26.1.3); no EPT, and so no
        // unrestricted guest.
        let (paging_primary, paging_secondary) = if shadow {
            (
                primary_proc::CR3_LOAD_EXITING
                    | primary_proc::CR3_STORE_EXITING
                    | primary_proc::INVLPG_EXITING,
                0,
            )
        } else {
            (
                0,
                secondary_proc::ENABLE_EPT | secondary_proc::UNRESTRICTED_GUEST,
            )
        };
        let primary = Self::adjust(
            vmx,
            IA32_VMX_TRUE_PROCBASED_CTLS,
            primary_proc::HLT_EXITING
                | primary_proc::UNCONDITIONAL_IO_EXITING
                | primary_proc::USE_MSR_BITMAPS
                | primary_proc::ACTIVATE_SECONDARY_CONTROLS
                | paging_primary,
        )?;
        let secondary = Self::adjust(
            vmx,
            IA32_VMX_PROCBASED_CTLS2,
            paging_secondary
                | secondary_proc::ENABLE_VPID
                | secondary_proc::ENABLE_RDTSCP
                | secondary_proc::ENABLE_INVPCID,
        )?;
        let exit_ctls = Self::adjust(
            vmx,
            IA32_VMX_TRUE_EXIT_CTLS,
            exit::HOST_ADDRESS_SPACE_SIZE
                | exit::ACKNOWLEDGE_INTERRUPT_ON_EXIT
                | exit::SAVE_IA32_EFER
                | exit::LOAD_IA32_EFER
                | exit::SAVE_IA32_PAT
                | exit::LOAD_IA32_PAT,
        )?;
        let entry_ctls = Self::adjust(
            vmx,
            IA32_VMX_TRUE_ENTRY_CTLS,
            entry::LOAD_IA32_EFER | entry::LOAD_IA32_PAT,
        )?;
        let flat = |code: bool| -> (u64, u64, u64, u64) {
            (
                if code { 0x08 } else { 0x10 },
                0,
                0xffff_ffff,
                if code { 0xc09b } else { 0xc093 },
            )
        };
        let mut fields: Vec<(F, u64)> = alloc::vec![
            (F::PinBasedControls, pin),
            (F::PrimaryProcBasedControls, primary),
            (F::SecondaryProcBasedControls, secondary),
            (F::PrimaryVmExitControls, exit_ctls),
            (F::VmEntryControls, entry_ctls),
            (F::ExceptionBitmap, 0),
            (F::MsrBitmaps, self.msr_bitmap.addr().raw()),
            (F::Vpid, u64::from(self.cfg.vpid)),
            (F::VmcsLinkPointer, u64::MAX),
            // The guest owns CR0 and CR4 but for the bits VMX fixes: NE (kept 1, read as the
            // guest last set it) and VMXE (kept 1, read as 0).
            (F::Cr0GuestHostMask, cr0::NE),
            (F::Cr0ReadShadow, cr0::PE | cr0::ET),
            (F::Cr4GuestHostMask, cr4::VMXE),
            (F::Cr4ReadShadow, 0),
            // The multiboot entry state (Multiboot 0.6.96 §3.2).
            (F::GuestCr0, cr0::PE | cr0::ET | cr0::NE),
            (F::GuestCr3, 0),
            (F::GuestCr4, cr4::VMXE),
            (F::GuestDr7, 0x400),
            (F::GuestIa32Efer, 0),
            (F::GuestIa32Pat, 0x0007_0406_0007_0406),
            (F::GuestRip, u64::from(self.cfg.entry)),
            (F::GuestRsp, 0),
            (F::GuestRflags, rflags::FIXED1),
            (F::GuestLdtrAccessRights, 0x1_0000),
            (F::GuestTrAccessRights, 0x8b),
            (F::GuestTrLimit, 0xffff),
            (F::GuestGdtrLimit, 0xffff),
            (F::GuestIdtrLimit, 0xffff),
            (F::GuestActivityState, 0),
            (F::GuestInterruptibilityState, 0),
        ];
        for (sel, base, limit, ar, code) in [
            (
                F::GuestCsSelector,
                F::GuestCsBase,
                F::GuestCsLimit,
                F::GuestCsAccessRights,
                true,
            ),
            (
                F::GuestSsSelector,
                F::GuestSsBase,
                F::GuestSsLimit,
                F::GuestSsAccessRights,
                false,
            ),
            (
                F::GuestDsSelector,
                F::GuestDsBase,
                F::GuestDsLimit,
                F::GuestDsAccessRights,
                false,
            ),
            (
                F::GuestEsSelector,
                F::GuestEsBase,
                F::GuestEsLimit,
                F::GuestEsAccessRights,
                false,
            ),
            (
                F::GuestFsSelector,
                F::GuestFsBase,
                F::GuestFsLimit,
                F::GuestFsAccessRights,
                false,
            ),
            (
                F::GuestGsSelector,
                F::GuestGsBase,
                F::GuestGsLimit,
                F::GuestGsAccessRights,
                false,
            ),
        ] {
            let (s, b, l, a) = flat(code);
            fields.extend([(sel, s), (base, b), (limit, l), (ar, a)]);
        }
        match &mut self.paging {
            Paging::Ept(ept) => fields.push((F::EptPointer, ept.eptp().raw())),
            // The shadow MMU's fields come after the EPT defaults above and override them.
            Paging::Shadow(s) => fields.extend(s.setup(vmx)?),
        }
        fields.extend_from_slice(vmx.host_state());
        for (f, v) in fields {
            vmx.vmwrite(f, v)?;
        }
        self.regs.gpr[0] = 0x2bad_b002;
        self.regs.gpr[3] = u64::from(self.cfg.multiboot_info);
        Ok(())
    }

    /// Runs the guest until its run ends.
    pub fn run<H: Host>(&mut self, host: &mut H) -> Result<Ending, HvError> {
        let vmx = host;
        loop {
            self.before_entry(vmx)?;
            self.counters.entries += 1;
            let launch = !self.launched;
            match vmx.run(launch, &mut self.regs) {
                Ok(RunOutcome::Exited) => {}
                Ok(RunOutcome::Preempted { halted: false }) => {
                    self.launched = true;
                    if vmx.budget_exhausted() {
                        return Ok(Ending::InstructionLimit);
                    }
                    continue;
                }
                Ok(RunOutcome::Preempted { halted: true }) => {
                    // HLT exiting is on: a halted guest always exits first.
                    return Ok(Ending::Unsupported(String::from(
                        "the guest halted without a HLT exit",
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            self.launched = true;
            let info = ExitInfo::read(vmx)?;
            log::debug!(
                "exit {:?} at RIP {:#x} (length {}, vectoring {:?})",
                info.exit,
                info.guest_rip,
                info.instruction_length,
                info.vectoring
            );
            let reason = match info.exit {
                Exit::Unknown { reason, .. } => reason,
                _ => vmx.vmread(F::ExitReason)? as u16,
            };
            *self.counters.exits.entry(reason).or_default() += 1;
            let action = self.handle(vmx, &info)?;
            self.flush_console(vmx);
            let action = match action {
                Ok(action) => action,
                Err(ending) => {
                    *self.counters.outcomes.entry("end").or_default() += 1;
                    return Ok(ending);
                }
            };
            let outcome = match action {
                Action::Resume => "resume",
                Action::Skip => "skip",
                Action::SkipBy(_) => "emulate",
                Action::Fault(..) | Action::PageFault { .. } => "fault",
            };
            *self.counters.outcomes.entry(outcome).or_default() += 1;
            // RIP advances and events are injected here, and only here.
            match action {
                // An exit that interrupted the delivery of an event (an EPT violation on the
                // guest's IDT or stack, say) leaves the event undelivered: it is injected
                // again, with its error code and, for a software event, its length
                // (SDM Vol. 3C §28.2.4, §27.6; KVM's `vmx_complete_interrupts`).
                Action::Resume if info.vectoring.is_some() => {
                    if let Some(event) = info.vectoring {
                        self.reinject(vmx, event, info.instruction_length)?;
                    }
                }
                Action::Resume => {}
                Action::Skip | Action::SkipBy(_) => {
                    let len = match action {
                        Action::SkipBy(len) => len,
                        _ => info.instruction_length,
                    };
                    vmx.vmwrite(F::GuestRip, info.guest_rip.wrapping_add(len))?;
                    // Skipping an instruction ends blocking by STI or MOV SS.
                    let i = vmx.vmread(F::GuestInterruptibilityState)?;
                    vmx.vmwrite(
                        F::GuestInterruptibilityState,
                        i & !u64::from(interruptibility::STI | interruptibility::MOV_SS),
                    )?;
                }
                Action::Fault(vector, error) => {
                    let mut info =
                        InterruptionInfo::new(vector, InterruptionType::HardwareException);
                    if let Some(code) = error {
                        info = info.with_error_code();
                        vmx.vmwrite(F::VmEntryExceptionErrorCode, u64::from(code))?;
                    }
                    vmx.vmwrite(F::VmEntryInterruptionInfo, u64::from(info.0))?;
                }
                Action::PageFault { addr, error_code } => {
                    self.regs.cr2 = addr;
                    let info = InterruptionInfo::new(14, InterruptionType::HardwareException)
                        .with_error_code();
                    vmx.vmwrite(F::VmEntryExceptionErrorCode, u64::from(error_code))?;
                    vmx.vmwrite(F::VmEntryInterruptionInfo, u64::from(info.0))?;
                }
            }
        }
    }

    /// Injects `event` again at the next entry.
    fn reinject<H: Host>(&mut self, vmx: &mut H, event: Event, length: u64) -> Result<(), HvError> {
        log::debug!("re-inject {event:?}");
        let mut info = InterruptionInfo::new(event.vector, event.kind);
        if let Some(code) = event.error_code {
            info = info.with_error_code();
            vmx.vmwrite(F::VmEntryExceptionErrorCode, u64::from(code))?;
        }
        if event.kind.is_software() {
            vmx.vmwrite(F::VmEntryInstructionLength, length)?;
        }
        vmx.vmwrite(F::VmEntryInterruptionInfo, u64::from(info.0))?;
        self.counters.reinjected += 1;
        Ok(())
    }

    fn flush_console<H: Host>(&mut self, platform: &mut H) {
        for b in self.uart.sink_mut().0.drain(..) {
            platform.console(b);
        }
    }

    /// Before each entry: the guest's long-mode state into the entry controls, the virtual
    /// APIC's interrupt injected when the guest can take it (or an interrupt window asked
    /// for), and the preemption timer set to its next timer deadline.
    fn before_entry<H: Host>(&mut self, vmx: &mut H) -> Result<(), HvError> {
        if let Paging::Shadow(s) = &mut self.paging {
            s.before_entry(vmx)?;
        }
        let efer_value = vmx.vmread(F::GuestIa32Efer)?;
        let entry_ctls = vmx.vmread(F::VmEntryControls)?;
        let ia32e = u64::from(entry::IA32E_MODE_GUEST);
        let want = if efer_value & efer::LMA != 0 {
            entry_ctls | ia32e
        } else {
            entry_ctls & !ia32e
        };
        if want != entry_ctls {
            vmx.vmwrite(F::VmEntryControls, want)?;
        }
        let tsc = vmx.tsc();
        self.apic
            .advance(tsc)
            .map_err(|u| HvError::Memory(format!("the guest's local APIC: {u}")))?;
        let primary = vmx.vmread(F::PrimaryProcBasedControls)?;
        let window = u64::from(primary_proc::INTERRUPT_WINDOW_EXITING);
        let pending_event =
            vmx.vmread(F::VmEntryInterruptionInfo)? & u64::from(InterruptionInfo::VALID) != 0;
        // An interrupt that cannot go in now (another event is being injected, or the guest
        // blocks interrupts) waits for the interrupt window.
        let mut want_window = pending_event && self.apic.pending_interrupt().is_some();
        if !pending_event && self.apic.pending_interrupt().is_some() {
            let flags = vmx.vmread(F::GuestRflags)?;
            let blocked = vmx.vmread(F::GuestInterruptibilityState)?
                & u64::from(interruptibility::STI | interruptibility::MOV_SS)
                != 0;
            if flags & rflags::IF != 0 && !blocked {
                let vector = self.apic.acknowledge();
                log::debug!("inject external interrupt {vector:#x}");
                let info = InterruptionInfo::new(vector, InterruptionType::ExternalInterrupt);
                vmx.vmwrite(F::VmEntryInterruptionInfo, u64::from(info.0))?;
                vmx.vmwrite(F::GuestActivityState, 0)?;
                self.counters.injected += 1;
            } else {
                want_window = true;
            }
        }
        let new_primary = if want_window {
            primary | window
        } else {
            primary & !window
        };
        if new_primary != primary {
            vmx.vmwrite(F::PrimaryProcBasedControls, new_primary)?;
        }
        // The timer's next deadline bounds the guest's run (rate: IA32_VMX_MISC[4:0]).
        let rate = vmx.capability(x86::msr::IA32_VMX_MISC)? & 0x1f;
        // The timer counts down each time TSC bit `rate` changes (SDM Vol. 3C §26.5.1), from
        // the current TSC rounded down: rounding the count up makes it expire at or after
        // the deadline, never before it.
        let ticks = match self.apic.next_deadline(tsc) {
            Some(d) => {
                let start = tsc >> rate << rate;
                (d.saturating_sub(start) + (1 << rate) - 1) >> rate
            }
            None => 0xffff_ffff,
        }
        .min(0xffff_ffff);
        vmx.vmwrite(F::VmxPreemptionTimerValue, ticks)?;
        Ok(())
    }

    /// One exit: `Ok(Ok(action))` to go on, `Ok(Err(ending))` when the run ends.
    fn handle<H: Host>(
        &mut self,
        vmx: &mut H,
        info: &ExitInfo,
    ) -> Result<Result<Action, Ending>, HvError> {
        Ok(Ok(match info.exit {
            Exit::Cpuid => {
                let leaf = self.regs.gpr[0] as u32;
                let sub = self.regs.gpr[1] as u32;
                let [a, b, mut c, d] = vmx.cpuid(leaf, sub);
                let shadow = matches!(self.paging, Paging::Shadow(_));
                if leaf == 1 {
                    // No VMX, x2APIC or TSC deadline for the guest; a hypervisor is present.
                    c &= !((1 << 5) | (1 << 21) | (1 << 24));
                    c |= 1 << 31;
                    if shadow {
                        // No PCIDs under shadow paging (CR4.PCIDE is refused).
                        c &= !(1 << 17);
                    }
                }
                if leaf == 7 && sub == 0 && shadow {
                    // No protection keys or 5-level paging under shadow paging.
                    c &= !((1 << 3) | (1 << 16));
                }
                self.regs.gpr[0] = u64::from(a);
                self.regs.gpr[3] = u64::from(b);
                self.regs.gpr[1] = u64::from(c);
                self.regs.gpr[2] = u64::from(d);
                Action::Skip
            }
            Exit::Hlt => {
                let flags = vmx.vmread(F::GuestRflags)?;
                let tsc = vmx.tsc();
                match self.apic.next_deadline(tsc) {
                    Some(deadline) if flags & rflags::IF != 0 => {
                        if self.apic.pending_interrupt().is_none() {
                            vmx.idle_until(deadline);
                        }
                        Action::Skip
                    }
                    _ if self.apic.pending_interrupt().is_some() && flags & rflags::IF != 0 => {
                        Action::Skip
                    }
                    _ => return Ok(Err(Ending::HaltedForever)),
                }
            }
            Exit::Io { qualification, .. } => match self.io(qualification) {
                Ok(Some(end)) => return Ok(Err(end)),
                Ok(None) => Action::Skip,
                Err(what) => return Ok(Err(Ending::Unsupported(what))),
            },
            Exit::Msr { write } => match self.msr(vmx, write)? {
                Ok(action) => action,
                Err(end) => return Ok(Err(end)),
            },
            Exit::ExceptionOrNmi {
                event,
                qualification,
            } if event.vector == 14 && matches!(self.paging, Paging::Shadow(_)) => {
                match self.shadow_page_fault(
                    vmx,
                    qualification,
                    event.error_code.unwrap_or(0),
                    info,
                )? {
                    Ok(action) => action,
                    Err(end) => return Ok(Err(end)),
                }
            }
            Exit::CrAccess(q) => match &mut self.paging {
                Paging::Shadow(s) => match s.cr_access(vmx, &mut self.regs, q)? {
                    Ok(action) => action,
                    Err(end) => return Ok(Err(end)),
                },
                Paging::Ept(_) => {
                    return Ok(Err(Ending::Unsupported(format!(
                        "a control-register exit under EPT: {q:?} at guest RIP {:#x}",
                        info.guest_rip
                    ))));
                }
            },
            Exit::Invlpg { linear } => match &mut self.paging {
                Paging::Shadow(s) => match s.invlpg(vmx, linear)? {
                    Ok(action) => action,
                    Err(end) => return Ok(Err(end)),
                },
                Paging::Ept(_) => {
                    return Ok(Err(Ending::Unsupported(String::from(
                        "an INVLPG exit under EPT",
                    ))));
                }
            },
            Exit::Instruction {
                reason: x86::vmx::ExitReason::Invpcid,
                info: insn_info,
                qualification,
            } => match &mut self.paging {
                Paging::Shadow(s) => match s.invpcid(vmx, &self.regs, insn_info, qualification)? {
                    Ok(action) => action,
                    Err(end) => return Ok(Err(end)),
                },
                Paging::Ept(_) => {
                    return Ok(Err(Ending::Unsupported(String::from(
                        "an INVPCID exit under EPT",
                    ))));
                }
            },
            Exit::EptViolation { gpa, .. } => {
                // The APIC's page wins over RAM where they overlap (it may be moved there).
                if matches!(self.paging, Paging::Shadow(_)) {
                    return Ok(Err(Ending::Unsupported(String::from(
                        "an EPT violation under shadow paging",
                    ))));
                }
                if gpa.raw() < self.cfg.ram && !self.apic.contains(gpa) {
                    self.map_ram(vmx, gpa)?;
                    self.counters.ept_maps += 1;
                    Action::Resume
                } else {
                    match self.mmio(vmx, gpa, info)? {
                        Ok(len) => Action::SkipBy(len),
                        Err(what) => return Ok(Err(Ending::Unsupported(what))),
                    }
                }
            }
            // A host interrupt, taken by the exit (acknowledged): the hypervisor has no use for
            // it (guest-hv masks the legacy PIC; the software CPU's board raises none).
            Exit::ExternalInterrupt { .. } | Exit::PreemptionTimer => Action::Resume,
            Exit::InterruptWindow => Action::Resume,
            Exit::TripleFault => return Ok(Err(Ending::TripleFault)),
            Exit::EntryFailure {
                reason,
                qualification,
            } => {
                return Ok(Err(Ending::Unsupported(format!(
                    "VM entry failed: exit reason {} qualification {qualification}",
                    reason as u16
                ))));
            }
            other => {
                return Ok(Err(Ending::Unsupported(format!(
                    "an exit this hypervisor does not handle: {other:?} at guest RIP {:#x}",
                    info.guest_rip
                ))));
            }
        }))
    }

    /// A page fault under shadow paging: fixed in the shadow, the guest's own (injected, with
    /// the double-fault rules of SDM Vol. 3A §6.15 Table 6-5 when it interrupted the delivery
    /// of an exception), an access to a device's page (emulated), or a write to a guest page
    /// table the shadow MMU write-protects (emulated).
    fn shadow_page_fault<H: Host>(
        &mut self,
        vmx: &mut H,
        gva: u64,
        error: u32,
        info: &ExitInfo,
    ) -> Result<Result<Action, Ending>, HvError> {
        let ac = vmx.vmread(F::GuestRflags)? & rflags::AC != 0;
        let ram = self.cfg.ram;
        let apic = self.apic.mmio_base();
        let is_ram = |gpa: u64| gpa < ram && apic.is_none_or(|b| gpa >> 12 != b.raw() >> 12);
        let Paging::Shadow(s) = &mut self.paging else {
            return Ok(Err(Ending::Unsupported(String::from(
                "a page-fault exit under EPT",
            ))));
        };
        let st = s.st;
        let fault = s.mmu.page_fault(vmx, &st, gva, error, ac, &is_ram)?;
        log::debug!("#PF at {gva:#x} error {error:#x}: {fault:?} (guest {st:x?})");
        Ok(match fault {
            ShadowFault::Fixed => Ok(Action::Resume),
            ShadowFault::Inject { error_code } => match info.vectoring {
                Some(ev) if ev.kind == InterruptionType::HardwareException && ev.vector == 8 => {
                    Err(Ending::TripleFault)
                }
                Some(ev) if ev.kind == InterruptionType::HardwareException && ev.vector == 14 => {
                    Ok(Action::Fault(8, Some(0)))
                }
                _ => Ok(Action::PageFault {
                    addr: gva,
                    error_code,
                }),
            },
            ShadowFault::Mmio { .. } if info.vectoring.is_some() => Err(Ending::Unsupported(
                format!("event delivery touched device memory at {gva:#x}"),
            )),
            ShadowFault::Mmio { gpa } => match self.mmio(vmx, gpa, info)? {
                Ok(len) => Ok(Action::SkipBy(len)),
                Err(what) => Err(Ending::Unsupported(what)),
            },
            ShadowFault::WriteTracked { gpa } => self.emulate_table_write(vmx, gpa, info)?,
        })
    }

    /// A write to a guest page table that the shadow MMU write-protects: the instruction is
    /// decoded and its store done on the guest's RAM, then the shadow entries of the written
    /// guest entry are dropped. A store the decoder does not know (or one during event
    /// delivery) unprotects the table instead, and the guest runs the instruction itself.
    fn emulate_table_write<H: Host>(
        &mut self,
        vmx: &mut H,
        gpa: Gpa,
        info: &ExitInfo,
    ) -> Result<Result<Action, Ending>, HvError> {
        let mut insn = None;
        if info.vectoring.is_none()
            && let Ok((bytes, n)) = self.fetch(vmx, info.guest_rip)?
        {
            let efer_value = vmx.vmread(F::GuestIa32Efer)?;
            let cs_ar = vmx.vmread(F::GuestCsAccessRights)?;
            let mode = code_mode(efer_value, cs_ar);
            insn = crate::mmio::decode(&bytes[..n], mode)
                .ok()
                .filter(|i| i.is_write() && gpa.page_offset() + u64::from(i.size) <= 4096);
        }
        let Paging::Shadow(s) = &mut self.paging else {
            return Ok(Err(Ending::Unsupported(String::from(
                "a page-table write under EPT",
            ))));
        };
        let Some(insn) = insn else {
            return Ok(match s.mmu.unprotect(vmx, gpa.raw() >> 12) {
                Ok(()) => Ok(Action::Resume),
                Err(e) => Err(Ending::Unsupported(format!("{e}"))),
            });
        };
        self.regs.gpr[4] = vmx.vmread(F::GuestRsp)?;
        let layout = s.mmu.layout();
        let mut ram = GuestRamDevice { mem: vmx, layout };
        if let Err(e) = crate::mmio::emulate(&insn, &mut self.regs.gpr, &mut ram, gpa) {
            return Ok(Err(Ending::Unsupported(format!(
                "a write to a guest page table at {gpa:?}: {e}"
            ))));
        }
        s.mmu.guest_wrote(vmx, gpa, u64::from(insn.size))?;
        Ok(Ok(Action::SkipBy(u64::from(insn.len))))
    }

    /// Maps the guest RAM around `gpa`: the 2-MiB page when it lies wholly in RAM, else the
    /// 4-KiB page.
    fn map_ram<H: Host>(&mut self, mem: &mut H, gpa: Gpa) -> Result<(), HvError> {
        let big = gpa.align_down(PageSize::Size2M.bytes());
        // A 2-MiB page must not cover the APIC's register page, which must keep faulting.
        let apic_inside = self
            .apic
            .mmio_base()
            .is_some_and(|b| b.align_down(PageSize::Size2M.bytes()) == big);
        let (page, size) = if big.raw() + PageSize::Size2M.bytes() <= self.cfg.ram && !apic_inside {
            (big, PageSize::Size2M)
        } else {
            (gpa.align_down(PageSize::Size4K.bytes()), PageSize::Size4K)
        };
        let hpa = self.cfg.ram_base.wrapping_add(page.raw());
        if let Paging::Ept(e) = &mut self.paging {
            e.map(mem, page, hpa, size, ept::RWX)?;
        }
        Ok(())
    }

    /// Port I/O (the qualification of Table 28-5): `Ok(Some(ending))` for the debug-exit port.
    fn io(&mut self, q: IoQualification) -> Result<Option<Ending>, String> {
        self.counters.io += 1;
        if q.is_string() {
            return Err(format!("string I/O (port {:#x})", q.port()));
        }
        let size = q.size().unwrap_or(1);
        let port = q.port();
        let mask = if size >= 4 {
            u64::from(u32::MAX)
        } else {
            (1u64 << (8 * size)) - 1
        };
        if q.is_in() {
            let v = match port {
                COM1..=0x3ff => u32::from(self.uart.read(port - COM1)),
                p if PicPair::claims(p) => u32::from(self.pic.read(p)),
                0x510 | 0x511 => self.fw_cfg.read(port, size),
                p if PciHost::claims(p) => self.pci.read(p, size),
                _ => u32::MAX,
            };
            // A 32-bit destination is zero-extended (in 64-bit mode the upper half is
            // architecturally 0; outside it, not visible); 8/16-bit keep the rest.
            self.regs.gpr[0] = if size >= 4 {
                u64::from(v)
            } else {
                (self.regs.gpr[0] & !mask) | (u64::from(v) & mask)
            };
        } else {
            let v = (self.regs.gpr[0] & mask) as u32;
            match port {
                COM1..=0x3ff => self.uart.write(port - COM1, v as u8),
                devices::debug_exit::PORT => {
                    return Ok(Some(Ending::DebugExit(ExitRequest { value: v })));
                }
                p if PicPair::claims(p) => {
                    self.pic.write(p, v as u8).map_err(|u| format!("{u}"))?;
                }
                0x510 | 0x511 => self.fw_cfg.write(port, size, v),
                p if PciHost::claims(p) => self.pci.write(p, size, v),
                _ => {}
            }
        }
        Ok(None)
    }

    /// An intercepted RDMSR or WRMSR.
    fn msr<H: Host>(
        &mut self,
        vmx: &mut H,
        write: bool,
    ) -> Result<Result<Action, Ending>, HvError> {
        let index = self.regs.gpr[1] as u32;
        let value = (self.regs.gpr[2] << 32) | (self.regs.gpr[0] & 0xffff_ffff);
        Ok(Ok(match (index, write) {
            (IA32_EFER, _) => match &mut self.paging {
                Paging::Shadow(s) if write => return s.write_efer(vmx, value),
                Paging::Shadow(s) => {
                    let v = s.read_efer();
                    self.regs.gpr[0] = v & 0xffff_ffff;
                    self.regs.gpr[2] = v >> 32;
                    Action::Skip
                }
                Paging::Ept(_) => Action::Fault(13, Some(0)),
            },
            (IA32_APIC_BASE, false) => {
                let v = self.apic.apic_base();
                self.regs.gpr[0] = v & 0xffff_ffff;
                self.regs.gpr[2] = v >> 32;
                Action::Skip
            }
            (IA32_APIC_BASE, true) => {
                let before = self.apic.mmio_base();
                match self.apic.set_apic_base(value) {
                    Ok(()) => {
                        let after = self.apic.mmio_base();
                        if before != after {
                            self.apic_moved(vmx, [before, after])?;
                        }
                        Action::Skip
                    }
                    Err(_) => Action::Fault(13, Some(0)),
                }
            }
            // IA32_FEATURE_CONTROL: locked, VMX not enabled.
            (0x3a, false) => {
                self.regs.gpr[0] = 1;
                self.regs.gpr[2] = 0;
                Action::Skip
            }
            _ => Action::Fault(13, Some(0)),
        }))
    }

    /// The APIC's register page moved (or appeared, or went away): the EPT leaves over its
    /// old and new places are dropped, and INVEPT drops what the processor cached, so that
    /// the new page faults to the APIC and the old one faults back in as RAM.
    fn apic_moved<H: Host>(
        &mut self,
        vmx: &mut H,
        places: [Option<Gpa>; 2],
    ) -> Result<(), HvError> {
        let ept = match &mut self.paging {
            Paging::Ept(e) => e,
            Paging::Shadow(s) => {
                for gpa in places.into_iter().flatten() {
                    s.mmu.zap_gfn(vmx, gpa.raw() >> 12)?;
                }
                return Ok(());
            }
        };
        let mut dropped = false;
        for gpa in places.into_iter().flatten() {
            if gpa.raw() < self.cfg.ram {
                dropped |= ept.unmap(vmx, gpa)?;
            }
        }
        if dropped {
            vmx.invept(x86::vmx::caps::InveptType::SingleContext, ept.eptp().raw())?;
            self.counters.tlb_flushes += 1;
        }
        Ok(())
    }

    /// An access to guest-physical memory that is not RAM: the local APIC's page, emulated;
    /// anything else reads as all ones and ignores writes, as on the board.
    fn mmio<H: Host>(
        &mut self,
        vmx: &mut H,
        gpa: Gpa,
        info: &ExitInfo,
    ) -> Result<Result<u64, String>, HvError> {
        self.counters.mmio += 1;
        let (bytes, n) = match self.fetch(vmx, info.guest_rip)? {
            Ok(b) => b,
            Err(what) => return Ok(Err(what)),
        };
        let bytes = &bytes[..n];
        let efer_value = vmx.vmread(F::GuestIa32Efer)?;
        let cs_ar = vmx.vmread(F::GuestCsAccessRights)?;
        let mode = code_mode(efer_value, cs_ar);
        let insn = match crate::mmio::decode(bytes, mode) {
            Ok(i) => i,
            Err(e) => {
                return Ok(Err(format!(
                    "MMIO at {gpa:?} by an instruction the hypervisor cannot emulate ({e:?}) at RIP {:#x}",
                    info.guest_rip
                )));
            }
        };
        // RSP is in the VMCS, not in the saved registers.
        self.regs.gpr[4] = vmx.vmread(F::GuestRsp)?;
        let tsc = vmx.tsc();
        let result = if self.apic.contains(gpa) {
            crate::mmio::emulate(&insn, &mut self.regs.gpr, &mut self.apic.at(tsc), gpa)
        } else {
            crate::mmio::emulate(&insn, &mut self.regs.gpr, &mut Unbacked, gpa)
        };
        if let Err(e) = result {
            return Ok(Err(format!("MMIO at {gpa:?}: {e}")));
        }
        vmx.vmwrite(F::GuestRsp, self.regs.gpr[4])?;
        // EPT violations report no instruction length: the decoder's is the one to skip.
        Ok(Ok(u64::from(insn.len)))
    }

    /// The 15 bytes at the guest's linear `rip` (through its paging and EPT): enough for one
    /// instruction.
    fn fetch<H: Host>(
        &mut self,
        vmx: &mut H,
        rip: u64,
    ) -> Result<Result<([u8; 15], usize), String>, HvError> {
        let cs_base = vmx.vmread(F::GuestCsBase)?;
        let lin = rip.wrapping_add(cs_base);
        let regs = match &self.paging {
            Paging::Shadow(s) => s.paging_regs(),
            Paging::Ept(_) => PagingRegs {
                cr0: vmx.vmread(F::GuestCr0)?,
                cr3: vmx.vmread(F::GuestCr3)?,
                cr4: vmx.vmread(F::GuestCr4)?,
                efer: vmx.vmread(F::GuestIa32Efer)?,
            },
        };
        let layout = RamLayout {
            base: self.cfg.ram_base,
            size: self.cfg.ram,
        };
        // As many bytes as are readable, up to 15: the decoder says whether the instruction
        // is complete in them.
        let mut out = [0u8; 15];
        let mut n = 0;
        for (i, b) in out.iter_mut().enumerate() {
            let at = lin.wrapping_add(i as u64);
            let Some(gpa) = crate::guest::translate(vmx, &regs, layout, at) else {
                break;
            };
            // Only the guest's RAM: never the hypervisor's memory beyond it.
            if gpa >= self.cfg.ram {
                break;
            }
            let mut one = [0u8];
            if vmx
                .read(self.cfg.ram_base.wrapping_add(gpa), &mut one)
                .is_err()
            {
                break;
            }
            *b = one[0];
            n = i + 1;
        }
        if n == 0 {
            return Ok(Err(format!(
                "cannot read the guest's instruction at {lin:#x}"
            )));
        }
        Ok(Ok((out, n)))
    }
}

/// Memory that is not there: reads all ones, writes vanish.
struct Unbacked;

impl crate::mmio::MmioDevice for Unbacked {
    fn read(&mut self, _gpa: Gpa, size: u8) -> Result<u64, devices::Unimplemented> {
        Ok(if size >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * u32::from(size))) - 1
        })
    }
    fn write(&mut self, _gpa: Gpa, _size: u8, _value: u64) -> Result<(), devices::Unimplemented> {
        Ok(())
    }
}

/// The code size of the guest's CS (IA32_EFER.LMA with CS.L, else CS.D), for the decoder.
fn code_mode(efer_value: u64, cs_ar: u64) -> crate::mmio::CodeMode {
    if efer_value & efer::LMA != 0 && cs_ar & (1 << 13) != 0 {
        crate::mmio::CodeMode::Bits64
    } else if cs_ar & (1 << 14) != 0 {
        crate::mmio::CodeMode::Bits32
    } else {
        crate::mmio::CodeMode::Bits16
    }
}

/// The guest's RAM as the target of an emulated store (a write to a guest page table).
struct GuestRamDevice<'a, M> {
    mem: &'a mut M,
    layout: RamLayout,
}

impl<M: crate::memory::PhysMemory> GuestRamDevice<'_, M> {
    fn at(&self, gpa: Gpa, size: u8) -> Result<Hpa, devices::Unimplemented> {
        if gpa.raw().saturating_add(u64::from(size)) > self.layout.size {
            return Err(devices::Unimplemented("a guest-RAM store beyond RAM"));
        }
        Ok(self.layout.base.wrapping_add(gpa.raw()))
    }
}

impl<M: crate::memory::PhysMemory> crate::mmio::MmioDevice for GuestRamDevice<'_, M> {
    fn read(&mut self, gpa: Gpa, size: u8) -> Result<u64, devices::Unimplemented> {
        let at = self.at(gpa, size)?;
        let mut b = [0u8; 8];
        let n = usize::from(size.min(8));
        self.mem
            .read(at, &mut b[..n])
            .map_err(|_| devices::Unimplemented("a guest-RAM read the host cannot do"))?;
        Ok(u64::from_le_bytes(b))
    }

    fn write(&mut self, gpa: Gpa, size: u8, value: u64) -> Result<(), devices::Unimplemented> {
        let at = self.at(gpa, size)?;
        let n = usize::from(size.min(8));
        self.mem
            .write(at, &value.to_le_bytes()[..n])
            .map_err(|_| devices::Unimplemented("a guest-RAM write the host cannot do"))
    }
}
