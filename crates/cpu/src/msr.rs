//! Model-specific registers the CPU keeps itself (SDM Vol. 4 Table 2-2 "IA-32 Architectural
//! MSRs"), RDMSR/WRMSR with their #GP(0) rules, and RDTSC/RDTSCP (Vol. 2B). The board's MSRs
//! (APIC base, x2APIC, TSC deadline) are asked first through [`crate::Bus::rdmsr`]; anything
//! nobody implements raises #GP(0). The TSC is virtual time plus an offset that WRMSR IA32_TSC
//! sets; the board hears of every new offset ([`crate::Bus::tsc_offset_changed`]) so that its
//! TSC-deadline timer and RDTSC/RDTSCP read the same counter.

use iced_x86::{Instruction, Mnemonic as M};

use crate::Cpu;
use crate::bus::{Bus, MsrAccess};
use crate::fault::{Ex, Fault};
use crate::mmu::{MAXPHYADDR, canonical};
use crate::regs::Gpr;
use crate::state::Seg;
use x86::reg::{cr4, efer};

#[allow(missing_docs)]
pub(crate) mod index {
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const BIOS_SIGN_ID: u32 = 0x8b;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const MTRRCAP: u32 = 0xfe;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const MTRR_PHYSBASE0: u32 = 0x200;
    pub const MTRR_FIX64K: u32 = 0x250;
    pub const MTRR_FIX16K_80000: u32 = 0x258;
    pub const MTRR_FIX16K_A0000: u32 = 0x259;
    pub const MTRR_FIX4K_C0000: u32 = 0x268;
    pub const PAT: u32 = 0x277;
    pub const MTRR_DEF_TYPE: u32 = 0x2ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const FMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// IA32_PAT after reset (SDM Vol. 3A §13.12.4).
pub(crate) const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// IA32_MTRRCAP: 8 variable ranges, fixed ranges, write-combining (Vol. 3A §13.11.2.1).
const MTRRCAP_VALUE: u64 = 8 | (1 << 8) | (1 << 10);
/// IA32_FEATURE_CONTROL bits this model accepts without VMX: lock only (SDM Vol. 3C §24.7).
const FEATURE_CONTROL_LOCK: u64 = x86::msr::feature_control::LOCK;
/// With VMX: lock and "enable VMX outside SMX operation" (no SMX, so not bit 1).
const FEATURE_CONTROL_VMX: u64 = FEATURE_CONTROL_LOCK | x86::msr::feature_control::VMX_OUTSIDE_SMX;

fn valid_mem_type(t: u8) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl Cpu {
    /// RDMSR of a CPU MSR, or #GP(0).
    pub(crate) fn read_msr(&self, msr: u32) -> Result<u64, Fault> {
        use index::*;
        let m = &self.msr;
        Ok(match msr {
            TSC => self.now().tsc().wrapping_add(m.tsc_offset),
            // No platform ID bits, no microcode update loaded (revision 0 in bits 63:32).
            PLATFORM_ID | BIOS_SIGN_ID => 0,
            FEATURE_CONTROL => m.feature_control,
            MTRRCAP => MTRRCAP_VALUE,
            SYSENTER_CS => m.sysenter_cs,
            SYSENTER_ESP => m.sysenter_esp,
            SYSENTER_EIP => m.sysenter_eip,
            MISC_ENABLE => m.misc_enable,
            0x200..=0x20f => m.mtrr_var[(msr - MTRR_PHYSBASE0) as usize],
            MTRR_FIX64K => m.mtrr_fixed[0],
            MTRR_FIX16K_80000 | MTRR_FIX16K_A0000 => m.mtrr_fixed[(msr - 0x257) as usize],
            0x268..=0x26f => m.mtrr_fixed[(msr - MTRR_FIX4K_C0000 + 3) as usize],
            PAT => m.pat,
            MTRR_DEF_TYPE => m.mtrr_def_type,
            EFER => self.efer,
            STAR => m.star,
            LSTAR => m.lstar,
            CSTAR => m.cstar,
            FMASK => m.fmask,
            FS_BASE => self.seg[Seg::Fs as usize].base,
            GS_BASE => self.seg[Seg::Gs as usize].base,
            KERNEL_GS_BASE => m.kernel_gs_base,
            TSC_AUX => m.tsc_aux,
            // The VMX capability MSRs (SDM Vol. 3D Appendix A), read-only, only with VMX.
            x86::msr::IA32_VMX_BASIC..=x86::msr::IA32_VMX_VMFUNC if self.features.vmx => {
                crate::vmx::capabilities::MODEL
                    .read_msr(msr)
                    .ok_or(Fault::gp(0))?
            }
            _ => return Err(Fault::gp(0)),
        })
    }

    /// WRMSR of a CPU MSR, with the reserved-bit and canonical checks; #GP(0) otherwise.
    pub(crate) fn write_msr(&mut self, msr: u32, v: u64) -> Result<(), Fault> {
        use index::*;
        let gp = Err(Fault::gp(0));
        let phys_high = !((1u64 << MAXPHYADDR) - 1);
        match msr {
            TSC => self.msr.tsc_offset = v.wrapping_sub(self.now().tsc()),
            // Writing IA32_BIOS_SIGN_ID prepares a revision read through CPUID.1; there is no
            // microcode, so the revision stays 0 (SDM Vol. 3A §10.11.7).
            BIOS_SIGN_ID => {}
            FEATURE_CONTROL => {
                let valid = if self.features.vmx {
                    FEATURE_CONTROL_VMX
                } else {
                    FEATURE_CONTROL_LOCK
                };
                if self.msr.feature_control & FEATURE_CONTROL_LOCK != 0 || v & !valid != 0 {
                    return gp;
                }
                self.msr.feature_control = v;
            }
            SYSENTER_CS => self.msr.sysenter_cs = v & 0xffff_ffff,
            SYSENTER_ESP | SYSENTER_EIP | LSTAR | CSTAR | FS_BASE | GS_BASE | KERNEL_GS_BASE => {
                if !canonical(v) {
                    return gp;
                }
                match msr {
                    SYSENTER_ESP => self.msr.sysenter_esp = v,
                    SYSENTER_EIP => self.msr.sysenter_eip = v,
                    LSTAR => self.msr.lstar = v,
                    CSTAR => self.msr.cstar = v,
                    FS_BASE => self.seg[Seg::Fs as usize].base = v,
                    GS_BASE => self.seg[Seg::Gs as usize].base = v,
                    _ => self.msr.kernel_gs_base = v,
                }
            }
            // Fast-strings enable (bit 0) and the few bits OSes write back unchanged.
            MISC_ENABLE => self.msr.misc_enable = v & 1,
            0x200..=0x20f => {
                let base = (msr - MTRR_PHYSBASE0).is_multiple_of(2);
                let rsvd = if base {
                    phys_high | 0xf00
                } else {
                    phys_high | 0x7ff
                };
                if v & rsvd != 0 || (base && !valid_mem_type(v as u8)) {
                    return gp;
                }
                self.msr.mtrr_var[(msr - MTRR_PHYSBASE0) as usize] = v;
            }
            MTRR_FIX64K | MTRR_FIX16K_80000 | MTRR_FIX16K_A0000 | 0x268..=0x26f => {
                if !v.to_le_bytes().iter().all(|&t| valid_mem_type(t)) {
                    return gp;
                }
                let i = match msr {
                    MTRR_FIX64K => 0,
                    MTRR_FIX16K_80000 | MTRR_FIX16K_A0000 => (msr - 0x257) as usize,
                    _ => (msr - MTRR_FIX4K_C0000 + 3) as usize,
                };
                self.msr.mtrr_fixed[i] = v;
            }
            PAT => {
                if !v
                    .to_le_bytes()
                    .iter()
                    .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
                {
                    return gp;
                }
                self.msr.pat = v;
            }
            MTRR_DEF_TYPE => {
                if v & !0xcff != 0 || !valid_mem_type(v as u8) {
                    return gp;
                }
                self.msr.mtrr_def_type = v;
            }
            EFER => {
                // LMA is read-only (ignored on write); LME cannot change while paging is on.
                if v & !(efer::SCE | efer::LME | efer::LMA | efer::NXE) != 0 {
                    return gp;
                }
                let paging = self.cr0 & x86::reg::cr0::PG != 0;
                if paging && (v ^ self.efer) & efer::LME != 0 {
                    return gp;
                }
                let old = self.efer;
                self.efer = (v & !efer::LMA) | (old & efer::LMA);
                if (old ^ self.efer) & efer::NXE != 0 {
                    self.tlb.flush_all();
                    self.counters.tlb_flushes += 1;
                }
            }
            STAR => self.msr.star = v,
            FMASK => self.msr.fmask = v & 0xffff_ffff,
            TSC_AUX => {
                if v >> 32 != 0 {
                    return gp;
                }
                self.msr.tsc_aux = v;
            }
            _ => return gp,
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn msr_insn<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if self.cpl != 0 {
            return Err(Fault::gp(0).into());
        }
        let msr = self.gpr[Gpr::Rcx as usize] as u32;
        let now = self.now();
        self.touched_device = true;
        if ins.mnemonic() == M::Rdmsr {
            let v = match bus.rdmsr(msr, now) {
                MsrAccess::Done(v) => v,
                MsrAccess::Fault => return Err(Fault::gp(0).into()),
                MsrAccess::NotMine => self.read_msr(msr)?,
            };
            self.gpr[Gpr::Rax as usize] = v & 0xffff_ffff;
            self.gpr[Gpr::Rdx as usize] = v >> 32;
        } else {
            let v =
                (self.gpr[Gpr::Rdx as usize] << 32) | (self.gpr[Gpr::Rax as usize] & 0xffff_ffff);
            match bus.wrmsr(msr, v, now) {
                MsrAccess::Done(_) => {}
                MsrAccess::Fault => return Err(Fault::gp(0).into()),
                MsrAccess::NotMine => {
                    self.write_msr(msr, v)?;
                    if msr == index::TSC {
                        // The board's TSC-deadline timer compares against the TSC RDTSC reads.
                        bus.tsc_offset_changed(self.msr.tsc_offset, now);
                    }
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn rdtsc(&mut self, ins: &Instruction) -> Ex<()> {
        if self.cr4 & cr4::TSD != 0 && self.cpl != 0 {
            return Err(Fault::gp(0).into());
        }
        let tsc = self.now().tsc().wrapping_add(self.msr.tsc_offset);
        self.gpr[Gpr::Rax as usize] = tsc & 0xffff_ffff;
        self.gpr[Gpr::Rdx as usize] = tsc >> 32;
        if ins.mnemonic() == M::Rdtscp {
            self.gpr[Gpr::Rcx as usize] = self.msr.tsc_aux;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::StopReason;
    use crate::bus::{AccessSize, Bus, VirtualTime};
    use crate::fault::Fault;
    use crate::test_utils::{CODE, TestBus, first_fault, long_mode, run_bytes64};
    use x86::{Hfn, Hpa};

    #[test]
    fn msr_rules() {
        let mut bus = TestBus::new();
        let mut cpu = long_mode(&mut bus);
        // Unknown MSR: #GP(0).
        assert_eq!(cpu.read_msr(0x1234), Err(Fault::gp(0)));
        // Non-canonical LSTAR: #GP(0); canonical: stored.
        assert_eq!(
            cpu.write_msr(super::index::LSTAR, 0x0000_8000_0000_0000),
            Err(Fault::gp(0))
        );
        assert_eq!(
            cpu.write_msr(super::index::LSTAR, 0xffff_8000_0000_1000),
            Ok(())
        );
        assert_eq!(cpu.read_msr(super::index::LSTAR), Ok(0xffff_8000_0000_1000));
        // EFER: reserved bits #GP; LME cannot change while paging is on.
        assert_eq!(cpu.write_msr(super::index::EFER, 1 << 2), Err(Fault::gp(0)));
        assert_eq!(cpu.write_msr(super::index::EFER, 0x400), Err(Fault::gp(0)));
        // PAT entries must be valid memory types.
        assert_eq!(cpu.write_msr(super::index::PAT, 2), Err(Fault::gp(0)));
        // FEATURE_CONTROL: only the lock bit; locked means read-only.
        assert_eq!(
            cpu.write_msr(super::index::FEATURE_CONTROL, 1 << 2),
            Err(Fault::gp(0)),
            "no VMX yet"
        );
        assert_eq!(cpu.write_msr(super::index::FEATURE_CONTROL, 1), Ok(()));
        assert_eq!(
            cpu.write_msr(super::index::FEATURE_CONTROL, 1),
            Err(Fault::gp(0))
        );
        // TSC writes offset the virtual-time TSC.
        assert_eq!(cpu.write_msr(super::index::TSC, 1000), Ok(()));
        assert_eq!(cpu.read_msr(super::index::TSC), Ok(1000));
    }

    /// A [`TestBus`] that records [`Bus::tsc_offset_changed`].
    #[derive(Debug)]
    struct OffsetBus {
        inner: TestBus,
        offsets: Vec<(u64, VirtualTime)>,
    }

    impl Bus for OffsetBus {
        fn ram(&self) -> &[u8] {
            self.inner.ram()
        }
        fn ram_mut(&mut self) -> &mut [u8] {
            self.inner.ram_mut()
        }
        fn ram_offset(&self, frame: Hfn) -> Option<usize> {
            self.inner.ram_offset(frame)
        }
        fn mmio_read(&mut self, addr: Hpa, size: AccessSize, now: VirtualTime) -> u64 {
            self.inner.mmio_read(addr, size, now)
        }
        fn mmio_write(&mut self, addr: Hpa, size: AccessSize, value: u64, now: VirtualTime) {
            self.inner.mmio_write(addr, size, value, now)
        }
        fn io_in(&mut self, port: u16, size: AccessSize, now: VirtualTime) -> u32 {
            self.inner.io_in(port, size, now)
        }
        fn io_out(&mut self, port: u16, size: AccessSize, value: u32, now: VirtualTime) {
            self.inner.io_out(port, size, value, now)
        }
        fn has_interrupt(&mut self, now: VirtualTime) -> bool {
            self.inner.has_interrupt(now)
        }
        fn acknowledge_interrupt(&mut self, now: VirtualTime) -> Option<u8> {
            self.inner.acknowledge_interrupt(now)
        }
        fn tsc_offset_changed(&mut self, offset: u64, now: VirtualTime) {
            self.offsets.push((offset, now));
        }
    }

    #[test]
    fn wrmsr_tsc_tells_the_board_the_offset_rdtsc_uses() {
        let mut inner = TestBus::new();
        inner.load(
            CODE,
            &[
                0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 0x10 (IA32_TSC)
                0xb8, 0xe8, 0x03, 0x00, 0x00, // mov eax, 1000
                0x31, 0xd2, // xor edx, edx
                0x0f, 0x30, // wrmsr
                0x0f, 0x31, // rdtsc
                0xf4, // hlt
            ],
        );
        let mut cpu = long_mode(&mut inner);
        let mut bus = OffsetBus {
            inner,
            offsets: Vec::new(),
        };
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        // WRMSR retires at tick 3: the TSC then reads 1000, so the offset is 997, and RDTSC one
        // tick later reads now.tsc() + offset.
        let t3 = VirtualTime::from_ticks(3);
        assert_eq!(bus.offsets, [(1000 - t3.tsc(), t3)]);
        assert_eq!(cpu.msr.tsc_offset, 1000 - t3.tsc());
        assert_eq!(cpu.gpr[0], 1000 + crate::TSC_PER_TICK);
    }

    #[test]
    fn rdmsr_rdtsc_instructions() {
        // mov ecx, 0xc0000080; rdmsr -> EFER.LME|LMA in EAX
        let (c, _) = run_bytes64(&[0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32], |_| {});
        assert_eq!(c.gpr[0], 0x500);
        // rdtsc after two instructions: TSC = retired ticks
        let (c, _) = run_bytes64(&[0x90, 0x90, 0x0f, 0x31], |_| {});
        assert_eq!((c.gpr[0], c.gpr[2]), (2 * crate::TSC_PER_TICK, 0));
        // rdmsr at CPL 3: #GP(0); rdtsc at CPL 3 with CR4.TSD: #GP(0)
        assert_eq!(first_fault(&[0x0f, 0x32], |c| c.cpl = 3), Fault::gp(0));
        assert_eq!(
            first_fault(&[0x0f, 0x31], |c| {
                c.cpl = 3;
                c.cr4 |= x86::reg::cr4::TSD;
            }),
            Fault::gp(0)
        );
    }
}
