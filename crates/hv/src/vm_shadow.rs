//! The VM's side of shadow paging (`--mmu shadow`): the guest's view of CR0, CR3, CR4 and
//! IA32_EFER, kept by the hypervisor while the processor runs on the shadow MMU's tables
//! ([`crate::shadow`]), and the exits that change it.
//!
//! Without EPT there is no "unrestricted guest" (SDM Vol. 3C §26.6.1): the processor runs
//! the guest with CR0.PE, CR0.PG and CR0.WP set, CR4.PAE set, and IA32_EFER.LME equal to the
//! guest's LMA. The CR0 and CR4 bits that differ, or that change how the guest's tables
//! translate, are owned by the hypervisor through the guest/host masks (§25.6.6), so that
//! writing them exits and reading them gives the read shadow; CR3 loads and stores exit
//! (§25.6.2); IA32_EFER reads and writes exit through the MSR bitmap. The checks of MOV to
//! CR0/CR3/CR4 and of WRMSR to IA32_EFER are the SDM's (Vol. 2B "MOV—Move to/from Control
//! Registers", Vol. 3A §4.1.1, §4.4.1, §10.8.5): a bad value gets #GP(0).
//!
//! The guest's TLB flush points (Vol. 3A §4.10.4.1) become the shadow MMU's resynchronisation
//! points: MOV to CR3 (there are no PCIDs: CPUID does not offer them under shadow paging),
//! a change of CR0.PG/WP or of CR4.PGE/PAE/PSE/SMEP/SMAP, of IA32_EFER.NXE, INVLPG and
//! INVPCID. The processor's own TLB, tagged with the guest's VPID, is flushed with INVVPID
//! where the architecture says the guest's would be.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use x86::reg::{cr0, cr4, efer};
use x86::vmx::VmcsField as F;
use x86::vmx::caps::InvvpidType;
use x86::vmx::exit::{
    AddressSize, CrAccessQualification, CrAccessType, InvalidationInfo, SegmentRegister,
};

use crate::guest::PagingRegs;
use crate::platform::Host;
use crate::shadow::{GuestPagingState, ShadowConfig, ShadowCounters, ShadowError, ShadowMmu};
use crate::vm::{Action, Ending, HvError};
use crate::vmx::GuestRegs;

/// The CR0 bits the hypervisor owns under shadow paging.
pub(crate) const CR0_MASK: u64 = cr0::PE | cr0::PG | cr0::WP | cr0::NE;
/// The CR4 bits the hypervisor owns under shadow paging: those that select or change
/// translation, and those it does not offer.
pub(crate) const CR4_MASK: u64 = cr4::PSE
    | cr4::PAE
    | cr4::PGE
    | cr4::SMEP
    | cr4::SMAP
    | cr4::PCIDE
    | cr4::LA57
    | cr4::VMXE
    | cr4::PKE
    | cr4::PKS
    | cr4::CET;
/// CR4 bits the guest may never set here (features CPUID does not offer it).
const CR4_NOT_OFFERED: u64 = cr4::PCIDE | cr4::LA57 | cr4::VMXE | cr4::PKE | cr4::PKS | cr4::CET;

/// What a handler of this module decided: an action, or the end of the run.
pub(crate) type Outcome = Result<Action, Ending>;

impl From<ShadowError> for HvError {
    fn from(e: ShadowError) -> Self {
        Self::Memory(format!("{e}"))
    }
}

/// Shadow paging for one vCPU: the MMU and the guest's view of its paging registers.
#[derive(Debug)]
pub(crate) struct ShadowPaging {
    pub(crate) mmu: ShadowMmu,
    /// The guest's CR0/CR3/CR4/EFER as it sees them (the CR0 and CR4 bits it owns are
    /// refreshed from the VMCS before use).
    pub(crate) st: GuestPagingState,
    maxphyaddr: u8,
    /// The CR4 bits the processor allows in VMX operation (IA32_VMX_CR4_FIXED1).
    cr4_fixed1: u64,
    vpid: u16,
    /// INVVPIDs done.
    pub(crate) flushes: u64,
}

impl ShadowPaging {
    pub(crate) fn new(cfg: ShadowConfig, cr4_fixed1: u64, vpid: u16) -> Self {
        Self {
            mmu: ShadowMmu::new(cfg),
            st: GuestPagingState {
                // The multiboot entry state: protected mode, paging off.
                cr0: cr0::PE | cr0::ET,
                ..GuestPagingState::default()
            },
            maxphyaddr: cfg.maxphyaddr,
            cr4_fixed1,
            vpid,
            flushes: 0,
        }
    }

    pub(crate) fn counters(&self) -> ShadowCounters {
        self.mmu.counters().clone()
    }

    fn real_cr0(&self) -> u64 {
        self.st.cr0 | cr0::PE | cr0::PG | cr0::WP | cr0::NE
    }

    fn real_cr4(&self) -> u64 {
        (self.st.cr4 & !(cr4::PSE | CR4_NOT_OFFERED)) | cr4::PAE | cr4::VMXE
    }

    fn real_efer(&self) -> u64 {
        if self.st.efer & efer::LMA != 0 {
            self.st.efer | efer::LME
        } else {
            self.st.efer & !(efer::LME | efer::LMA)
        }
    }

    /// The guest's paging registers, for software walks of its tables.
    pub(crate) fn paging_regs(&self) -> PagingRegs {
        PagingRegs {
            cr0: self.st.cr0,
            cr3: self.st.cr3,
            cr4: self.st.cr4,
            efer: self.st.efer,
        }
    }

    /// The first root, and the VMCS fields that differ from EPT's.
    pub(crate) fn setup<H: Host>(&mut self, host: &mut H) -> Result<Vec<(F, u64)>, HvError> {
        self.mmu.switch_root(host, &self.st)?;
        self.mmu.take_root_changed();
        let root = self
            .mmu
            .root()
            .ok_or_else(|| HvError::Memory(String::from("no shadow root")))?;
        Ok(alloc::vec![
            // Every #PF exits (mask and match 0: SDM Vol. 3C §25.6.3).
            (F::ExceptionBitmap, 1 << 14),
            (F::PageFaultErrorCodeMask, 0),
            (F::PageFaultErrorCodeMatch, 0),
            (F::Cr3TargetCount, 0),
            (F::Cr0GuestHostMask, CR0_MASK),
            (F::Cr0ReadShadow, self.st.cr0),
            (F::Cr4GuestHostMask, CR4_MASK),
            (F::Cr4ReadShadow, self.st.cr4),
            (F::GuestCr0, self.real_cr0()),
            (F::GuestCr3, root.raw()),
            (F::GuestCr4, self.real_cr4()),
            (F::GuestIa32Efer, self.real_efer()),
        ])
    }

    /// Before an entry: the new root into the guest's CR3 field and the TLB invalidations the
    /// shadow MMU's changes need.
    pub(crate) fn before_entry<H: Host>(&mut self, host: &mut H) -> Result<(), HvError> {
        if self.mmu.take_root_changed() {
            let root = self
                .mmu
                .root()
                .ok_or_else(|| HvError::Memory(String::from("no shadow root")))?;
            host.vmwrite(F::GuestCr3, root.raw())?;
        }
        let flush = self.mmu.take_flush();
        if flush.all {
            host.invvpid(InvvpidType::SingleContext, self.vpid, 0)?;
            self.flushes += 1;
        } else {
            if flush.non_global {
                host.invvpid(InvvpidType::SingleContextRetainingGlobals, self.vpid, 0)?;
                self.flushes += 1;
            }
            for gva in flush.addresses {
                host.invvpid(InvvpidType::IndividualAddress, self.vpid, canonical(gva))?;
                self.flushes += 1;
            }
        }
        Ok(())
    }

    /// Brings the CR0 and CR4 bits the guest owns up to date from the VMCS.
    fn refresh<H: Host>(&mut self, host: &mut H) -> Result<(), HvError> {
        let real0 = host.vmread(F::GuestCr0)?;
        self.st.cr0 = (real0 & !CR0_MASK) | (self.st.cr0 & CR0_MASK);
        let real4 = host.vmread(F::GuestCr4)?;
        self.st.cr4 = (real4 & !CR4_MASK) | (self.st.cr4 & CR4_MASK);
        Ok(())
    }

    /// Writes the guest's view and the processor's values of CR0, CR4 and IA32_EFER.
    fn store<H: Host>(&mut self, host: &mut H) -> Result<(), HvError> {
        host.vmwrite(F::GuestCr0, self.real_cr0())?;
        host.vmwrite(F::Cr0ReadShadow, self.st.cr0)?;
        host.vmwrite(F::GuestCr4, self.real_cr4())?;
        host.vmwrite(F::Cr4ReadShadow, self.st.cr4)?;
        host.vmwrite(F::GuestIa32Efer, self.real_efer())?;
        Ok(())
    }

    /// The translation context changed (paging mode, CR0.WP, CR4.PGE/PSE/SMEP/SMAP, EFER.NXE):
    /// a full flush of the guest's TLB, so every unsync table is resynchronised and the root
    /// for the new context made current.
    fn context_changed<H: Host>(&mut self, host: &mut H) -> Result<(), HvError> {
        self.mmu.sync_all(host)?;
        self.mmu.switch_root(host, &self.st)?;
        host.invvpid(InvvpidType::SingleContext, self.vpid, 0)?;
        self.flushes += 1;
        Ok(())
    }

    fn pae_paging(&self) -> bool {
        self.st.cr0 & cr0::PG != 0 && self.st.cr4 & cr4::PAE != 0 && self.st.efer & efer::LMA == 0
    }

    /// Loads the PDPTE registers from CR3, as MOV to CR3/CR0/CR4 does in PAE paging: `false`
    /// when a present entry has a reserved bit set (#GP(0)).
    fn load_pdptes<H: Host>(&mut self, host: &mut H) -> bool {
        match self.mmu.load_pdptes(host, self.st.cr3) {
            Some(p) => {
                self.st.pdptes = p;
                true
            }
            None => false,
        }
    }

    /// A control-register access that exited (Table 28-3).
    pub(crate) fn cr_access<H: Host>(
        &mut self,
        host: &mut H,
        regs: &mut GuestRegs,
        q: CrAccessQualification,
    ) -> Result<Outcome, HvError> {
        self.refresh(host)?;
        log::debug!("{q:?} with guest state {:x?}", self.st);
        let gpr = usize::from(q.gpr());
        let read_gpr = |host: &mut H, regs: &GuestRegs| -> Result<u64, HvError> {
            Ok(if gpr == 4 {
                host.vmread(F::GuestRsp)?
            } else {
                regs.gpr[gpr]
            })
        };
        match (q.access_type(), q.cr()) {
            (CrAccessType::MovToCr, 0) => {
                let v = read_gpr(host, regs)?;
                self.write_cr0(host, v)
            }
            (CrAccessType::Lmsw, 0) => {
                // LMSW writes PE, MP, EM and TS, and cannot clear PE.
                let src = u64::from(q.lmsw_source());
                let v = (self.st.cr0 & !0xe) | (src & 0xf) | (self.st.cr0 & cr0::PE);
                self.write_cr0(host, v)
            }
            (CrAccessType::MovToCr, 3) => {
                let v = read_gpr(host, regs)?;
                self.write_cr3(host, v)
            }
            (CrAccessType::MovFromCr, 3) => {
                if gpr == 4 {
                    host.vmwrite(F::GuestRsp, self.st.cr3)?;
                } else {
                    regs.gpr[gpr] = self.st.cr3;
                }
                Ok(Ok(Action::Skip))
            }
            (CrAccessType::MovToCr, 4) => {
                let v = read_gpr(host, regs)?;
                self.write_cr4(host, v)
            }
            (access, cr) => Ok(Err(Ending::Unsupported(format!(
                "a control-register exit the hypervisor does not expect: {access:?} CR{cr}"
            )))),
        }
    }

    fn write_cr0<H: Host>(&mut self, host: &mut H, v: u64) -> Result<Outcome, HvError> {
        let gp = Ok(Ok(Action::Fault(13, Some(0))));
        let v = v | cr0::ET;
        if v >> 32 != 0
            || (v & cr0::PG != 0 && v & cr0::PE == 0)
            || (v & cr0::NW != 0 && v & cr0::CD == 0)
        {
            return gp;
        }
        if v & cr0::PE == 0 {
            return Ok(Err(Ending::Unsupported(String::from(
                "the guest left protected mode: real mode needs \"unrestricted guest\", which shadow paging runs without",
            ))));
        }
        let old = self.st;
        let cs_l = host.vmread(F::GuestCsAccessRights)? & (1 << 13) != 0;
        if (old.cr0 ^ v) & cr0::PG != 0 {
            if v & cr0::PG != 0 {
                if self.st.efer & efer::LME != 0 {
                    if self.st.cr4 & cr4::PAE == 0 || cs_l {
                        return gp;
                    }
                    self.st.efer |= efer::LMA;
                }
            } else {
                if self.st.efer & efer::LMA != 0 && cs_l {
                    return gp;
                }
                self.st.efer &= !efer::LMA;
            }
        }
        self.st.cr0 = v;
        if (old.cr0 ^ v) & (cr0::PG | cr0::CD | cr0::NW) != 0
            && self.pae_paging()
            && !self.load_pdptes(host)
        {
            self.st = old;
            return gp;
        }
        self.store(host)?;
        if (old.cr0 ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
            self.context_changed(host)?;
        }
        Ok(Ok(Action::Skip))
    }

    fn write_cr3<H: Host>(&mut self, host: &mut H, v: u64) -> Result<Outcome, HvError> {
        let long = self.st.efer & efer::LMA != 0;
        if long && v >> self.maxphyaddr != 0 {
            return Ok(Ok(Action::Fault(13, Some(0))));
        }
        let old = self.st;
        self.st.cr3 = if long { v } else { v & 0xffff_ffff };
        if self.pae_paging() && !self.load_pdptes(host) {
            self.st = old;
            return Ok(Ok(Action::Fault(13, Some(0))));
        }
        // A CR3 load flushes every non-global translation: the unsync tables are
        // resynchronised, and the processor's TLB flushed but for global pages.
        self.mmu.sync_all(host)?;
        self.mmu.switch_root(host, &self.st)?;
        host.invvpid(InvvpidType::SingleContextRetainingGlobals, self.vpid, 0)?;
        self.flushes += 1;
        Ok(Ok(Action::Skip))
    }

    fn write_cr4<H: Host>(&mut self, host: &mut H, v: u64) -> Result<Outcome, HvError> {
        let gp = Ok(Ok(Action::Fault(13, Some(0))));
        let long = self.st.efer & efer::LMA != 0;
        let allowed = (self.cr4_fixed1 | cr4::PSE | cr4::PAE) & !CR4_NOT_OFFERED;
        if v & !allowed != 0 || (long && v & cr4::PAE == 0) {
            return gp;
        }
        let old = self.st;
        self.st.cr4 = v;
        if (old.cr4 ^ v) & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP) != 0
            && self.pae_paging()
            && !self.load_pdptes(host)
        {
            self.st = old;
            return gp;
        }
        self.store(host)?;
        if (old.cr4 ^ v) & cr4::TLB_FLUSH_BITS != 0 {
            self.context_changed(host)?;
        }
        Ok(Ok(Action::Skip))
    }

    /// RDMSR of IA32_EFER: the guest's view.
    pub(crate) fn read_efer(&self) -> u64 {
        self.st.efer
    }

    /// WRMSR of IA32_EFER: LMA is read-only, LME cannot change while paging is on.
    pub(crate) fn write_efer<H: Host>(&mut self, host: &mut H, v: u64) -> Result<Outcome, HvError> {
        self.refresh(host)?;
        let paging = self.st.cr0 & cr0::PG != 0;
        if v & !efer::DEFINED != 0 || (paging && (v ^ self.st.efer) & efer::LME != 0) {
            return Ok(Ok(Action::Fault(13, Some(0))));
        }
        let old = self.st.efer;
        self.st.efer = (v & !efer::LMA) | (old & efer::LMA);
        self.store(host)?;
        if (old ^ self.st.efer) & efer::NXE != 0 {
            self.context_changed(host)?;
        }
        Ok(Ok(Action::Skip))
    }

    /// INVLPG of `linear` (a no-op for a non-canonical address).
    pub(crate) fn invlpg<H: Host>(
        &mut self,
        host: &mut H,
        linear: u64,
    ) -> Result<Outcome, HvError> {
        if is_canonical(linear) {
            self.mmu.invlpg(host, linear)?;
        }
        Ok(Ok(Action::Skip))
    }

    /// INVPCID (Vol. 2B "INVPCID"): the type from a register, the descriptor from memory.
    /// Without CR4.PCIDE every translation has PCID 0.
    pub(crate) fn invpcid<H: Host>(
        &mut self,
        host: &mut H,
        regs: &GuestRegs,
        info: u32,
        displacement: u64,
    ) -> Result<Outcome, HvError> {
        let info = InvalidationInfo(info);
        let Some(op) = info.descriptor() else {
            return Ok(Err(Ending::Unsupported(format!(
                "INVPCID with instruction information {:#x}",
                info.0
            ))));
        };
        let rsp = host.vmread(F::GuestRsp)?;
        let reg = |r: u8| -> u64 {
            if r == 4 {
                rsp
            } else {
                regs.gpr[usize::from(r & 15)]
            }
        };
        let long = self.st.efer & efer::LMA != 0;
        let kind = regs.gpr[usize::from(info.type_reg() & 15)];
        let kind = if long { kind } else { kind & 0xffff_ffff };
        let mut offset = displacement;
        if let Some(b) = op.base {
            offset = offset.wrapping_add(reg(b));
        }
        if let Some(i) = op.index {
            offset = offset.wrapping_add(reg(i) << op.scaling);
        }
        offset &= match op.address_size {
            AddressSize::Bits16 => 0xffff,
            AddressSize::Bits32 => 0xffff_ffff,
            AddressSize::Bits64 => u64::MAX,
        };
        let cs_l = host.vmread(F::GuestCsAccessRights)? & (1 << 13) != 0;
        let base = match op.segment {
            SegmentRegister::Fs => host.vmread(F::GuestFsBase)?,
            SegmentRegister::Gs => host.vmread(F::GuestGsBase)?,
            _ if long && cs_l => 0,
            SegmentRegister::Es => host.vmread(F::GuestEsBase)?,
            SegmentRegister::Cs => host.vmread(F::GuestCsBase)?,
            SegmentRegister::Ss => host.vmread(F::GuestSsBase)?,
            SegmentRegister::Ds => host.vmread(F::GuestDsBase)?,
        };
        let mut linear = base.wrapping_add(offset);
        if !(long && cs_l) {
            linear &= 0xffff_ffff;
        }
        let mut descriptor = [0u64; 2];
        for (i, half) in descriptor.iter_mut().enumerate() {
            let at = linear.wrapping_add(8 * i as u64);
            let gpa = match self.mmu.guest_read(host, &self.st, at)? {
                Ok(gpa) => gpa,
                Err(error_code) => {
                    return Ok(Ok(Action::PageFault {
                        addr: at,
                        error_code,
                    }));
                }
            };
            *half = self.read_guest_u64(host, gpa);
        }
        let [pcid_word, address] = descriptor;
        let gp = Ok(Ok(Action::Fault(13, Some(0))));
        if kind > 3 || pcid_word >> 12 != 0 {
            return gp;
        }
        // PCIDE is 0: only PCID 0 exists (types 0 and 1 name one).
        if kind <= 1 && pcid_word & 0xfff != 0 {
            return gp;
        }
        if kind == 0 {
            if !is_canonical(address) {
                return gp;
            }
            self.mmu.invlpg(host, address)?;
        } else {
            self.mmu.sync_all(host)?;
            host.invvpid(InvvpidType::SingleContext, self.vpid, 0)?;
            self.flushes += 1;
        }
        Ok(Ok(Action::Skip))
    }

    /// Reads guest-physical `gpa` (all ones beyond RAM, as on the board).
    fn read_guest_u64<H: Host>(&self, host: &mut H, gpa: u64) -> u64 {
        let layout = self.mmu.layout();
        if gpa.saturating_add(8) > layout.size {
            return u64::MAX;
        }
        host.read_u64(layout.base.wrapping_add(gpa))
            .unwrap_or(u64::MAX)
    }
}

/// Whether `addr` is canonical with 48-bit linear addresses.
fn is_canonical(addr: u64) -> bool {
    let top = (addr as i64) >> 47;
    top == 0 || top == -1
}

/// `addr` as INVVPID takes it: canonical (an address the guest uses in 32-bit mode is).
fn canonical(addr: u64) -> u64 {
    if is_canonical(addr) { addr } else { 0 }
}
