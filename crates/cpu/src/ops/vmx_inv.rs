//! INVEPT and INVVPID in VMX root operation (SDM Vol. 3C §31.3 "INVEPT—Invalidate
//! Translations Derived from EPT" and "INVVPID—Invalidate Translations Based on VPID"), over
//! the TLB's VPID/EP4TA tagging (§29.4.3.1 "Operations that Invalidate Cached Mappings").
//!
//! Both take the type in a register (64 bits in 64-bit mode, 32 otherwise) and a 128-bit
//! descriptor in memory. A type the processor does not report in IA32_VMX_EPT_VPID_CAP fails
//! with VM-instruction error 28 before the descriptor is read; so does an INVEPT
//! single-context descriptor whose EPTP VM entry would refuse (§27.2.1.1), an INVVPID
//! descriptor with bits 63:16 set, VPID 0 for the types that name one VPID (0, 1 and 3), and a
//! non-canonical address for the individual-address type. The types implemented are those the
//! model advertises ([`crate::vmx::capabilities::MODEL`]): INVEPT single-context (the
//! guest-physical and combined mappings of one EP4TA, every VPID and PCID) and all-context;
//! INVVPID individual-address, single-context, all-context (every VPID but 0) and
//! single-context-retaining-globals (the linear and combined mappings of the VPID, every PCID
//! and EP4TA).
//!
//! In VMX non-root operation both instructions cause VM exits; the dispatcher handles that
//! before calling here, so these functions are for root operation only.

use iced_x86::Instruction;
use paging::{Ept, EptCaps};
use x86::paging::Eptp;
use x86::vmx::VmInstructionError;
use x86::vmx::caps::{InveptType, InvvpidType};
use x86::{Gpa, Hpa};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::Loc;
use crate::fault::{Ex, Fault};
use crate::mmu::canonical;
use crate::ops::vmx::{VmFail, VmResult};
use crate::vmx::capabilities::MODEL;

/// INVVPID descriptor bits 63:16, reserved (§31.3).
const INVVPID_RESERVED: u64 = !0xffff;

impl Cpu {
    /// The type operand of INVEPT and INVVPID: 64 bits in 64-bit mode, 32 bits otherwise.
    fn inv_type(&self, ins: &Instruction) -> u64 {
        self.reg(ins.op0_register()) & crate::flags::mask(self.vmx_operand_bits())
    }

    /// The 128-bit descriptor (low and high quadwords) of INVEPT and INVVPID. The register
    /// form does not exist (#UD if the decoder ever yielded one).
    fn inv_descriptor<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<(u64, u64)> {
        let Loc::Mem(seg, off) = self.loc(ins, 1) else {
            return Err(Fault::ud().into());
        };
        let low = self.read_seg(bus, seg, off, 8)?;
        let high = self.read_seg(bus, seg, off.wrapping_add(8), 8)?;
        Ok((low, high))
    }

    /// INVEPT in VMX root operation (§31.3).
    pub(crate) fn invept<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        let kind = self.inv_type(ins);
        // An unsupported type fails before the descriptor is read.
        if InveptType::from_u64(kind).is_none_or(|k| !MODEL.caps.ept_vpid.supports_invept(k)) {
            self.vm_fail(VmInstructionError::InvalidInveptInvvpidOperand);
            return Ok(());
        }
        let (low, _) = self.inv_descriptor(bus, ins)?;
        let r = self.vmx_op_invept(kind, low);
        self.vm_status(r);
        Ok(())
    }

    /// The operation of INVEPT of type `kind` with the descriptor's EPTP `eptp`: VMfail(28)
    /// for an unsupported type or, single-context, an EPTP that VM entry would refuse.
    pub(crate) fn vmx_op_invept(&mut self, kind: u64, eptp: u64) -> VmResult<()> {
        let caps = MODEL.caps.ept_vpid;
        let invalid = VmFail::Valid(VmInstructionError::InvalidInveptInvvpidOperand);
        let Some(kind) = InveptType::from_u64(kind).filter(|&k| caps.supports_invept(k)) else {
            return Err(self.fail_or_invalid(invalid));
        };
        match kind {
            InveptType::SingleContext => {
                let eptp = Eptp::new(eptp);
                let ept_caps = EptCaps::from_msr(caps.0);
                if Ept::<Gpa, Hpa>::new(eptp, &ept_caps, MODEL.maxphyaddr, false).is_err() {
                    return Err(self.fail_or_invalid(invalid));
                }
                self.tlb.flush_ept(eptp.root_raw());
            }
            InveptType::Global => self.tlb.flush_all_ept(),
        }
        self.counters.tlb_flushes += 1;
        Ok(())
    }

    pub(crate) fn invvpid<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        let kind = self.inv_type(ins);
        if InvvpidType::from_u64(kind).is_none_or(|k| !MODEL.caps.ept_vpid.supports_invvpid(k)) {
            self.vm_fail(VmInstructionError::InvalidInveptInvvpidOperand);
            return Ok(());
        }
        let (low, address) = self.inv_descriptor(bus, ins)?;
        let r = self.vmx_op_invvpid(kind, low, address);
        self.vm_status(r);
        Ok(())
    }

    /// The operation of INVVPID of type `kind` with the descriptor (`low`: VPID in bits 15:0,
    /// bits 63:16 reserved; `address`): VMfail(28) for an unsupported type, reserved bits,
    /// VPID 0 where a VPID is named, or a non-canonical individual address.
    pub(crate) fn vmx_op_invvpid(&mut self, kind: u64, low: u64, address: u64) -> VmResult<()> {
        let caps = MODEL.caps.ept_vpid;
        let invalid = VmFail::Valid(VmInstructionError::InvalidInveptInvvpidOperand);
        let Some(kind) = InvvpidType::from_u64(kind).filter(|&k| caps.supports_invvpid(k)) else {
            return Err(self.fail_or_invalid(invalid));
        };
        let vpid = (low & 0xffff) as u16;
        let valid = low & INVVPID_RESERVED == 0
            && match kind {
                InvvpidType::IndividualAddress => vpid != 0 && canonical(address),
                InvvpidType::SingleContext | InvvpidType::SingleContextRetainingGlobals => {
                    vpid != 0
                }
                InvvpidType::AllContext => true,
            };
        if !valid {
            return Err(self.fail_or_invalid(invalid));
        }
        match kind {
            InvvpidType::IndividualAddress => self.tlb.flush_vpid_page(vpid, address),
            InvvpidType::SingleContext => self.tlb.flush_vpid(vpid, false),
            InvvpidType::AllContext => self.tlb.flush_all_vpids(),
            InvvpidType::SingleContextRetainingGlobals => self.tlb.flush_vpid(vpid, true),
        }
        self.counters.tlb_flushes += 1;
        Ok(())
    }

    /// VMfailValid(n) needs a current VMCS to hold n; without one it is VMfailInvalid.
    fn fail_or_invalid(&self, fail: VmFail) -> VmFail {
        if self.vmx.vmcs().is_some() {
            fail
        } else {
            VmFail::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StopReason;
    use crate::test_utils::{CODE, TestBus, long_mode};
    use crate::vmx::capabilities::REVISION_ID;
    use iced_x86::{Decoder, DecoderOptions};
    use x86::msr::feature_control;
    use x86::paging::ept;
    use x86::reg::{cr0, cr4, rflags};

    const VMXON: u64 = 0x20_0000;
    const VMCS: u64 = 0x20_1000;
    const PTR_AX: u64 = 0x20_8000;
    const PTR_BX: u64 = 0x20_8008;
    /// Where the descriptor goes.
    const DESC: u64 = 0x20_9000;
    /// Where VMREAD of the error field runs.
    const READ_ERROR: u64 = CODE + 0x800;
    const STATUS: u64 = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;

    const INVEPT: [u8; 5] = [0x66, 0x0f, 0x38, 0x80, 0x07]; // invept rax, [rdi]
    const INVVPID: [u8; 5] = [0x66, 0x0f, 0x38, 0x81, 0x07]; // invvpid rax, [rdi]

    /// EPT for the end-to-end tests: PML4 at 0x60_0000, guest-physical 0–2 MiB identity with
    /// 4-KiB pages except page 0x5000 → 0x7000, 2–8 MiB identity with 2-MiB pages.
    const EPT_PML4: u64 = 0x60_0000;
    const EPT_PT: u64 = 0x60_3000;
    const EPTP: u64 = EPT_PML4 | (3 << 3) | 6;

    /// A 64-bit CPU in VMX root operation (VMXON done), with a current VMCS if `vmcs`.
    fn vmx_cpu(vmcs: bool) -> (Cpu, TestBus) {
        let mut bus = TestBus::new();
        let mut code = vec![0xf3, 0x0f, 0xc7, 0x30]; // vmxon [rax]
        if vmcs {
            code.extend([0x0f, 0xc7, 0x33]); // vmptrld [rbx]
        }
        code.push(0xf4);
        bus.load(CODE, &code);
        bus.load(READ_ERROR, &[0x0f, 0x78, 0xcb, 0xf4]); // vmread rbx, rcx; hlt
        for region in [VMXON, VMCS] {
            bus.load(region, &REVISION_ID.to_le_bytes());
        }
        bus.write_u64(PTR_AX, VMXON);
        bus.write_u64(PTR_BX, VMCS);
        let mut cpu = long_mode(&mut bus);
        cpu.features.vmx = true;
        cpu.cr0 |= cr0::NE;
        cpu.cr4 |= cr4::VMXE;
        cpu.msr.feature_control = feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX;
        cpu.gpr[0] = PTR_AX;
        cpu.gpr[3] = PTR_BX;
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        cpu.halted = false;
        (cpu, bus)
    }

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, CODE, DecoderOptions::NONE).decode()
    }

    /// Runs INVEPT (`bytes` = [`INVEPT`]) or INVVPID with type `ty` and descriptor `desc`.
    fn inv(cpu: &mut Cpu, bus: &mut TestBus, bytes: &[u8], ty: u64, desc: [u64; 2]) -> Ex<()> {
        bus.write_u64(DESC, desc[0]);
        bus.write_u64(DESC + 8, desc[1]);
        cpu.gpr[0] = ty;
        cpu.gpr[7] = DESC;
        cpu.flags.set_status(STATUS);
        let ins = decode(bytes);
        if bytes == INVEPT {
            cpu.invept(bus, &ins)
        } else {
            cpu.invvpid(bus, &ins)
        }
    }

    /// The outcome: "ok" (VMsucceed), "invalid" (VMfailInvalid) or the error number of
    /// VMfailValid, read back with VMREAD.
    fn outcome(cpu: &mut Cpu, bus: &mut TestBus) -> String {
        match cpu.flags.bits() & STATUS {
            0 => "ok".into(),
            rflags::CF => "invalid".into(),
            rflags::ZF => {
                cpu.rip = READ_ERROR;
                cpu.gpr[1] = 0x4400; // VM-instruction error
                assert_eq!(cpu.run(bus, 10), Ok(StopReason::Halted));
                cpu.halted = false;
                format!("valid {}", cpu.gpr[3])
            }
            s => format!("status {s:#x}"),
        }
    }

    fn check(bytes: &[u8], ty: u64, desc: [u64; 2], vmcs: bool) -> String {
        let (mut cpu, mut bus) = vmx_cpu(vmcs);
        assert_eq!(inv(&mut cpu, &mut bus, bytes, ty, desc), Ok(()));
        outcome(&mut cpu, &mut bus)
    }

    #[test]
    fn invept_types_and_descriptors() {
        let cases: [(u64, [u64; 2], &str); 9] = [
            (1, [EPTP, 0], "ok"),
            (1, [EPTP | Eptp::AD_ENABLE, u64::MAX], "ok"),
            (2, [0, 0], "ok"),
            (2, [u64::MAX, u64::MAX], "ok"),
            (0, [EPTP, 0], "valid 28"),
            (3, [EPTP, 0], "valid 28"),
            (1 << 32 | 1, [EPTP, 0], "valid 28"),
            // An EPTP VM entry would refuse: memory type 1 (WC), walk length 5, bit 8.
            (1, [EPT_PML4 | (3 << 3) | 1, 0], "valid 28"),
            (1, [EPT_PML4 | (4 << 3) | 6, 0], "valid 28"),
        ];
        for (ty, desc, want) in cases {
            assert_eq!(
                check(&INVEPT, ty, desc, true),
                want,
                "type {ty:#x} {desc:x?}"
            );
        }
        assert_eq!(check(&INVEPT, 1, [EPTP | 1 << 8, 0], true), "valid 28");
        assert_eq!(check(&INVEPT, 1, [EPTP | 1 << 39, 0], true), "valid 28");
        // Without a current VMCS a failure is VMfailInvalid; success is still success.
        assert_eq!(check(&INVEPT, 7, [EPTP, 0], false), "invalid");
        assert_eq!(check(&INVEPT, 1, [0, 0], false), "invalid");
        assert_eq!(check(&INVEPT, 2, [0, 0], false), "ok");
    }

    #[test]
    fn invvpid_types_and_descriptors() {
        let cases: [(u64, [u64; 2], &str); 14] = [
            (0, [5, 0x7fff_ffff_f000], "ok"),
            (0, [5, 0xffff_8000_0000_0000], "ok"),
            (0, [5, 0x8000_0000_0000], "valid 28"),
            (0, [0, 0x1000], "valid 28"),
            (1, [5, u64::MAX], "ok"),
            (1, [0, 0], "valid 28"),
            (2, [0, u64::MAX], "ok"),
            (2, [5, 0], "ok"),
            (3, [0xffff, 0], "ok"),
            (3, [0, 0], "valid 28"),
            (4, [5, 0], "valid 28"),
            (1 << 32 | 1, [5, 0], "valid 28"),
            // Bits 63:16 of the descriptor are reserved, whatever the type.
            (2, [1 << 16, 0], "valid 28"),
            (1, [5 | 1 << 63, 0], "valid 28"),
        ];
        for (ty, desc, want) in cases {
            assert_eq!(
                check(&INVVPID, ty, desc, true),
                want,
                "type {ty:#x} {desc:x?}"
            );
        }
        assert_eq!(check(&INVVPID, 1, [0, 0], false), "invalid");
        assert_eq!(check(&INVVPID, 2, [0, 0], false), "ok");
    }

    #[test]
    fn the_type_operand_is_32_bits_outside_64_bit_mode() {
        let (mut cpu, mut bus) = vmx_cpu(true);
        // 32-bit protected mode (paging off, flat segments) after VMXON.
        cpu.cr0 &= !cr0::PG;
        cpu.efer = 0;
        cpu.seg[crate::state::Seg::Cs as usize] = crate::state::Segment::flat32(0x08, true, 0);
        cpu.update_mode();
        assert_eq!(cpu.vmx_operand_bits(), 32);
        bus.write_u64(DESC, EPTP);
        bus.write_u64(DESC + 8, 0);
        // invept eax, [edi] / invvpid eax, [edi]: the same bytes in 32-bit code.
        for (bytes, desc0) in [(INVEPT, EPTP), (INVVPID, 5)] {
            bus.write_u64(DESC, desc0);
            let ins = Decoder::with_ip(32, &bytes, CODE, DecoderOptions::NONE).decode();
            // Bits 63:32 of RAX are not part of the operand: the type is 1.
            cpu.gpr[0] = 0xffff_ffff_0000_0001;
            cpu.gpr[7] = DESC;
            cpu.flags.set_status(STATUS);
            let r = if bytes == INVEPT {
                cpu.invept(&mut bus, &ins)
            } else {
                cpu.invvpid(&mut bus, &ins)
            };
            assert_eq!(r, Ok(()));
            assert_eq!(cpu.flags.bits() & STATUS, 0, "VMsucceed");
        }
    }

    #[test]
    fn an_unsupported_type_fails_before_the_descriptor_is_read() {
        for bytes in [INVEPT, INVVPID] {
            let (mut cpu, mut bus) = vmx_cpu(true);
            // A non-canonical descriptor address would be #GP(0) if it were read.
            let ins = decode(&bytes);
            cpu.gpr[0] = 9;
            cpu.gpr[7] = 0x8000_0000_0000;
            let r = if bytes == INVEPT {
                cpu.invept(&mut bus, &ins)
            } else {
                cpu.invvpid(&mut bus, &ins)
            };
            assert_eq!(r, Ok(()));
            assert_eq!(outcome(&mut cpu, &mut bus), "valid 28");
            cpu.gpr[0] = 1;
            let r = if bytes == INVEPT {
                cpu.invept(&mut bus, &ins)
            } else {
                cpu.invvpid(&mut bus, &ins)
            };
            assert_eq!(r, Err(Fault::gp(0).into()), "a supported type reads it");
        }
    }

    #[test]
    fn ud_outside_vmx_operation_and_gp_above_cpl_0() {
        for bytes in [INVEPT, INVVPID] {
            let mut bus = TestBus::new();
            let mut cpu = long_mode(&mut bus);
            cpu.features.vmx = true;
            cpu.cr4 |= cr4::VMXE;
            assert_eq!(
                inv(&mut cpu, &mut bus, &bytes, 1, [EPTP, 0]),
                Err(Fault::ud().into()),
                "not in VMX operation"
            );
            let (mut cpu, mut bus) = vmx_cpu(true);
            cpu.cpl = 3;
            assert_eq!(
                inv(&mut cpu, &mut bus, &bytes, 1, [EPTP, 0]),
                Err(Fault::gp(0).into()),
                "CPL 3"
            );
        }
    }

    // --- what they invalidate ---------------------------------------------------------------

    const LIN: u64 = 0x5000;

    fn build_ept(bus: &mut TestBus) {
        bus.write_u64(EPT_PML4, 0x60_1000 | ept::RWX);
        bus.write_u64(0x60_1000, 0x60_2000 | ept::RWX);
        bus.write_u64(0x60_2000, EPT_PT | ept::RWX);
        for i in 1..4 {
            bus.write_u64(
                0x60_2000 + 8 * i,
                (i << 21) | ept::LARGE_PAGE | ept::RWX | (6 << 3),
            );
        }
        for i in 0..512 {
            bus.write_u64(EPT_PT + 8 * i, (i << 12) | ept::RWX | (6 << 3));
        }
        bus.write_u64(EPT_PT + 8 * 5, 0x7000 | ept::RWX | (6 << 3));
        bus.write_u64(0x7000, 0x77);
        bus.write_u64(0x8000, 0x88);
    }

    fn enter(cpu: &mut Cpu, ept: Option<u64>, vpid: u16) {
        cpu.vmx.non_root = true;
        cpu.vmx.ept = ept.map(Eptp::new);
        cpu.vmx.vpid = vpid;
        cpu.tlb_vmx_transition();
    }

    fn exit(cpu: &mut Cpu) {
        cpu.vmx.non_root = false;
        cpu.vmx.ept = None;
        cpu.vmx.vpid = 0;
        cpu.tlb_vmx_transition();
    }

    fn read(cpu: &mut Cpu, bus: &mut TestBus, lin: u64) -> u64 {
        match cpu.read_lin(bus, lin, 8, false) {
            Ok(v) => v,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_hypervisor_that_forgets_invept_sees_stale_translations() {
        let (mut cpu, mut bus) = vmx_cpu(true);
        build_ept(&mut bus);
        enter(&mut cpu, Some(EPTP | Eptp::AD_ENABLE), 1);
        assert_eq!(read(&mut cpu, &mut bus, LIN), 0x77);
        exit(&mut cpu);
        // The hypervisor remaps guest-physical 0x5000 to host 0x8000.
        bus.write_u64(EPT_PT + 8 * 5, 0x8000 | ept::RWX | (6 << 3));
        enter(&mut cpu, Some(EPTP | Eptp::AD_ENABLE), 1);
        assert_eq!(read(&mut cpu, &mut bus, LIN), 0x77, "no INVEPT: stale");
        exit(&mut cpu);
        // INVEPT of another EPTP leaves it; single-context of this one (whatever bits 11:0
        // say) drops it.
        inv(&mut cpu, &mut bus, &INVEPT, 1, [0x61_0000 | 0x1e, 0]).unwrap();
        assert_eq!(outcome(&mut cpu, &mut bus), "ok");
        enter(&mut cpu, Some(EPTP | Eptp::AD_ENABLE), 1);
        assert_eq!(read(&mut cpu, &mut bus, LIN), 0x77, "another EPT's flush");
        exit(&mut cpu);
        inv(&mut cpu, &mut bus, &INVEPT, 1, [EPTP, 0]).unwrap();
        enter(&mut cpu, Some(EPTP | Eptp::AD_ENABLE), 1);
        assert_eq!(read(&mut cpu, &mut bus, LIN), 0x88, "INVEPT single-context");
        // All-context, from root again, for a second remapping.
        exit(&mut cpu);
        bus.write_u64(EPT_PT + 8 * 5, 0x7000 | ept::RWX | (6 << 3));
        inv(&mut cpu, &mut bus, &INVEPT, 2, [0, 0]).unwrap();
        enter(&mut cpu, Some(EPTP), 1);
        assert_eq!(read(&mut cpu, &mut bus, LIN), 0x77, "INVEPT all-context");
    }

    /// A 4-KiB guest page table at 0x4000 for linear 0x40_0000–0x5f_ffff (no EPT): PTE 0
    /// maps 0x40_0000 to 0x50_0000 (holding 0xa) and PTE 1 maps 0x40_1000 to 0x52_0000,
    /// global (holding 0xc).
    fn guest_tables(cpu: &mut Cpu, bus: &mut TestBus) {
        bus.write_u64(0x3000 + 8 * 2, 0x4000 | 7);
        bus.write_u64(0x4000, 0x50_0007);
        bus.write_u64(0x4008, 0x52_0107);
        bus.write_u64(0x50_0000, 0xa);
        bus.write_u64(0x51_0000, 0xb);
        bus.write_u64(0x52_0000, 0xc);
        bus.write_u64(0x53_0000, 0xd);
        cpu.cr4 |= cr4::PGE;
    }

    /// Fills the TLB of VPIDs 5 and 6 with both pages, then remaps both behind its back.
    fn fill_then_remap(cpu: &mut Cpu, bus: &mut TestBus) {
        for vpid in [5, 6] {
            enter(cpu, None, vpid);
            assert_eq!(read(cpu, bus, 0x40_0000), 0xa);
            assert_eq!(read(cpu, bus, 0x40_1000), 0xc);
            exit(cpu);
        }
        bus.write_u64(0x4000, 0x51_0007);
        bus.write_u64(0x4008, 0x53_0107);
    }

    fn seen(cpu: &mut Cpu, bus: &mut TestBus, vpid: u16) -> (u64, u64) {
        enter(cpu, None, vpid);
        let r = (read(cpu, bus, 0x40_0000), read(cpu, bus, 0x40_1000));
        exit(cpu);
        r
    }

    #[test]
    fn invvpid_single_context_drops_one_vpid_only() {
        let (mut cpu, mut bus) = vmx_cpu(true);
        guest_tables(&mut cpu, &mut bus);
        fill_then_remap(&mut cpu, &mut bus);
        assert_eq!(
            seen(&mut cpu, &mut bus, 5),
            (0xa, 0xc),
            "stale across exits"
        );
        inv(&mut cpu, &mut bus, &INVVPID, 1, [5, 0]).unwrap();
        assert_eq!(outcome(&mut cpu, &mut bus), "ok");
        assert_eq!(seen(&mut cpu, &mut bus, 5), (0xb, 0xd));
        assert_eq!(seen(&mut cpu, &mut bus, 6), (0xa, 0xc));
        inv(&mut cpu, &mut bus, &INVVPID, 2, [0, 0]).unwrap();
        assert_eq!(seen(&mut cpu, &mut bus, 6), (0xb, 0xd), "all-context");
    }

    #[test]
    fn invvpid_individual_address_and_retaining_globals() {
        let (mut cpu, mut bus) = vmx_cpu(true);
        guest_tables(&mut cpu, &mut bus);
        fill_then_remap(&mut cpu, &mut bus);
        // Individual address: one page of one VPID.
        inv(&mut cpu, &mut bus, &INVVPID, 0, [5, 0x40_1234]).unwrap();
        assert_eq!(outcome(&mut cpu, &mut bus), "ok");
        assert_eq!(seen(&mut cpu, &mut bus, 5), (0xa, 0xd));
        assert_eq!(seen(&mut cpu, &mut bus, 6), (0xa, 0xc));
        // Retaining globals: the global page 0x40_1000 survives.
        inv(&mut cpu, &mut bus, &INVVPID, 3, [6, 0]).unwrap();
        assert_eq!(seen(&mut cpu, &mut bus, 6), (0xb, 0xc));
        // Root's own translation (VPID 0) is no INVVPID's business.
        assert_eq!(read(&mut cpu, &mut bus, 0x40_0000), 0xb);
        bus.write_u64(0x4000, 0x50_0007);
        inv(&mut cpu, &mut bus, &INVVPID, 2, [0, 0]).unwrap();
        assert_eq!(read(&mut cpu, &mut bus, 0x40_0000), 0xb, "VPID 0 kept");
    }
}
