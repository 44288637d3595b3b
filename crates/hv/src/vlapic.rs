//! The guest's virtual local APIC: the state machine of [`devices::lapic`] (SDM Vol. 3A chapter
//! 11) with what the hypervisor needs around it. The guest reaches it through exits only: its
//! register page (§11.4.1, default base 0xFEE00000) is left unmapped in EPT, so every access is
//! an EPT violation that [`crate::mmio`] decodes and performs through [`VLapic::at`]; RDMSR and
//! WRMSR of IA32_APIC_BASE (§11.4.4) exit through the MSR bitmap to [`VLapic::apic_base`] and
//! [`VLapic::set_apic_base`]. The timer (§11.5.4) runs on the guest's TSC — virtual time, which
//! the caller passes in — and what it raises is injected with [`VLapic::pending_interrupt`] and
//! [`VLapic::acknowledge`].
//!
//! x2APIC (§11.12) is not virtualized yet: the APIC reports no x2APIC support, so setting
//! IA32_APIC_BASE.EXTD raises #GP and the x2APIC MSRs stay unreachable. Nothing delivers
//! level-triggered interrupts to this APIC (no I/O APIC; the timer and self-IPIs are edge), so
//! an EOI never has an I/O APIC to notify.

use devices::Unimplemented;
use devices::lapic::{ApicError, Lapic, LapicState, MMIO_SIZE};
use x86::Gpa;

use crate::mmio::MmioDevice;

/// The guest's local APIC.
#[derive(Clone, Debug)]
pub struct VLapic {
    lapic: Lapic,
}

impl VLapic {
    /// The APIC of the bootstrap processor with APIC ID `initial_id` after power-up (§11.4.7.1):
    /// globally enabled in xAPIC mode at the default base 0xFEE00000, software-disabled, no
    /// x2APIC support. `phys_bits` is the guest's physical-address width (what CPUID.80000008H
    /// reports to it), above which IA32_APIC_BASE bits are reserved.
    pub fn new(initial_id: u32, phys_bits: u8) -> Self {
        Self {
            lapic: Lapic::new(initial_id, phys_bits, false),
        }
    }

    /// RDMSR IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.lapic.apic_base()
    }

    /// WRMSR IA32_APIC_BASE. `Err(ApicError::GeneralProtection)` is the #GP(0) the caller
    /// injects (reserved bits, EXTD without x2APIC support, the illegal transitions of
    /// §11.12.5). A write that moves or disables the register page changes [`Self::mmio_base`]:
    /// the caller compares it before and after and updates EPT.
    pub fn set_apic_base(&mut self, value: u64) -> Result<(), ApicError> {
        self.lapic.set_apic_base(value)
    }

    /// The guest-physical base of the register page, while it is decoded (the APIC globally
    /// enabled in xAPIC mode).
    pub fn mmio_base(&self) -> Option<Gpa> {
        self.lapic.mmio_base()
    }

    /// Whether `gpa` is in the register page.
    pub fn contains(&self, gpa: Gpa) -> bool {
        self.offset(gpa).is_some()
    }

    fn offset(&self, gpa: Gpa) -> Option<u64> {
        gpa.offset_from(self.mmio_base()?)
            .filter(|&off| off < MMIO_SIZE)
    }

    fn page_offset(&self, gpa: Gpa) -> Result<u64, Unimplemented> {
        self.offset(gpa).ok_or(Unimplemented(
            "local APIC access outside its decoded register page",
        ))
    }

    /// A read of `size` bytes at `gpa` at guest TSC `tsc`. Accesses other than 16-byte aligned
    /// 32-bit ones, and addresses outside the decoded page, are refused.
    pub fn mmio_read(&mut self, gpa: Gpa, size: u8, tsc: u64) -> Result<u32, Unimplemented> {
        let offset = self.page_offset(gpa)?;
        self.lapic.mmio_read(offset, size, tsc)
    }

    /// A write of `size` bytes at `gpa` at guest TSC `tsc`, refused as [`Self::mmio_read`]
    /// refuses.
    pub fn mmio_write(
        &mut self,
        gpa: Gpa,
        size: u8,
        value: u32,
        tsc: u64,
    ) -> Result<(), Unimplemented> {
        let offset = self.page_offset(gpa)?;
        // The level-triggered EOI vector the Lapic returns is for an I/O APIC; there is none,
        // and no level-triggered interrupt reaches this APIC (see the module documentation).
        self.lapic.mmio_write(offset, size, value, tsc).map(|_| ())
    }

    /// The APIC as an [`MmioDevice`] at guest TSC `tsc`, for [`crate::mmio::emulate`].
    pub fn at(&mut self, tsc: u64) -> VLapicAt<'_> {
        VLapicAt { vlapic: self, tsc }
    }

    /// Brings the timer up to guest TSC `tsc`: an expiry sets its vector pending.
    pub fn advance(&mut self, tsc: u64) -> Result<(), Unimplemented> {
        self.lapic.advance(tsc)
    }

    /// The guest TSC at which the timer next fires, seen at guest TSC `tsc`, if it is armed:
    /// when the hypervisor must regain control (a preemption-timer deadline, say).
    pub fn next_deadline(&self, tsc: u64) -> Option<u64> {
        self.lapic.next_timer_event(tsc)
    }

    /// The vector the guest would take now (the highest pending one above the processor
    /// priority, §11.8.3.1), if any: what the caller injects once the guest can take it.
    pub fn pending_interrupt(&self) -> Option<u8> {
        self.lapic.pending_vector()
    }

    /// Accepts the pending interrupt (INTA, §11.8.4): moves it to in-service and returns its
    /// vector; the spurious vector (§11.9) if nothing is pending any more.
    pub fn acknowledge(&mut self) -> u8 {
        self.lapic.acknowledge()
    }

    /// A snapshot of the APIC.
    pub fn state(&self) -> LapicState {
        self.lapic.state()
    }
}

/// A [`VLapic`] at one point of guest time, as the [`MmioDevice`] of an emulated access.
#[derive(Debug)]
pub struct VLapicAt<'a> {
    vlapic: &'a mut VLapic,
    tsc: u64,
}

impl MmioDevice for VLapicAt<'_> {
    fn read(&mut self, gpa: Gpa, size: u8) -> Result<u64, Unimplemented> {
        self.vlapic.mmio_read(gpa, size, self.tsc).map(u64::from)
    }

    fn write(&mut self, gpa: Gpa, size: u8, value: u64) -> Result<(), Unimplemented> {
        // Only 32-bit accesses reach a register (the Lapic refuses other sizes first), so the
        // low half is all of the value.
        self.vlapic.mmio_write(gpa, size, value as u32, self.tsc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::{CodeMode, decode, emulate};
    use alloc::string::ToString;
    use devices::lapic::{BASE_BSP, BASE_EN, BASE_EXTD, DEFAULT_BASE};

    const BASE: u64 = 0xfee0_0000;
    /// guest-os's vectors and count (guests/os/src/apic.rs, trap.rs).
    const TIMER_VECTOR: u8 = 0x20;
    const SPURIOUS_VECTOR: u8 = 0xff;
    const INITIAL_COUNT: u64 = 20_000;
    /// One timer period in TSC ticks: the initial count times divide-by-16.
    const PERIOD: u64 = INITIAL_COUNT * 16;

    /// Runs one MMIO instruction of 64-bit code against the APIC at `gpa`, with the registers
    /// given.
    fn exec(v: &mut VLapic, bytes: &[u8], regs: &mut [u64; 16], gpa: u64, tsc: u64) {
        let insn = decode(bytes, CodeMode::Bits64).unwrap();
        assert_eq!(usize::from(insn.len), bytes.len());
        emulate(&insn, regs, &mut v.at(tsc), Gpa::new(gpa)).unwrap();
    }

    /// `mov dword ptr [rax+disp32], ecx` with RAX = the APIC base, ECX = `value`: how rustc
    /// compiles guest-os's `write(reg, value)`.
    fn write_reg(v: &mut VLapic, offset: u32, value: u32, tsc: u64) {
        let d = offset.to_le_bytes();
        let mut regs = [0; 16];
        regs[0] = BASE;
        regs[1] = u64::from(value);
        exec(
            v,
            &[0x89, 0x88, d[0], d[1], d[2], d[3]],
            &mut regs,
            BASE + u64::from(offset),
            tsc,
        );
    }

    /// `mov eax, dword ptr [rdx+disp32]` with RDX = the APIC base; returns RAX.
    fn read_reg(v: &mut VLapic, offset: u32, tsc: u64) -> u64 {
        let d = offset.to_le_bytes();
        let mut regs = [u64::MAX; 16];
        regs[2] = BASE;
        exec(
            v,
            &[0x8b, 0x82, d[0], d[1], d[2], d[3]],
            &mut regs,
            BASE + u64::from(offset),
            tsc,
        );
        regs[0]
    }

    #[test]
    fn power_up_state() {
        let v = VLapic::new(0, 39);
        assert_eq!(v.apic_base(), BASE | BASE_BSP | BASE_EN);
        assert_eq!(v.mmio_base(), Some(DEFAULT_BASE));
        assert!(v.contains(Gpa::new(BASE)));
        assert!(v.contains(Gpa::new(BASE + 0xfff)));
        assert!(!v.contains(Gpa::new(BASE + 0x1000)));
        assert!(!v.contains(Gpa::new(BASE - 1)));
        assert_eq!(v.pending_interrupt(), None);
        assert_eq!(v.next_deadline(0), None);
    }

    #[test]
    fn guest_os_timer_through_mmio_exits() {
        let mut v = VLapic::new(0, 39);
        // apic::init, in order, as 32-bit stores.
        write_reg(&mut v, 0xf0, 0x100 | u32::from(SPURIOUS_VECTOR), 0); // SVR: enable
        write_reg(&mut v, 0x350, 1 << 16, 0); // LVT LINT0 masked
        write_reg(&mut v, 0x360, 1 << 16, 0); // LVT LINT1 masked
        write_reg(&mut v, 0x3e0, 0b0011, 0); // divide by 16
        write_reg(&mut v, 0x320, (1 << 17) | u32::from(TIMER_VECTOR), 0); // periodic, 0x20
        let start = 1_000;
        write_reg(&mut v, 0x380, INITIAL_COUNT as u32, start); // initial count
        assert_eq!(read_reg(&mut v, 0x320, start), (1 << 17) | 0x20);
        assert_eq!(read_reg(&mut v, 0xf0, start), 0x1ff);
        // The current count runs down on the guest's TSC, 1 per 16 ticks; the read
        // zero-extends into RAX.
        assert_eq!(read_reg(&mut v, 0x390, start + 160), INITIAL_COUNT - 10);
        assert_eq!(v.next_deadline(start), Some(start + PERIOD));

        // Not yet due.
        v.advance(start + PERIOD - 1).unwrap();
        assert_eq!(v.pending_interrupt(), None);
        // Due: the vector is pending and the next period is armed.
        v.advance(start + PERIOD).unwrap();
        assert_eq!(v.pending_interrupt(), Some(TIMER_VECTOR));
        assert_eq!(v.next_deadline(start + PERIOD), Some(start + 2 * PERIOD));
        // IRR holds it (vector 0x20: bit 0 of IRR1 at 0x210).
        assert_eq!(read_reg(&mut v, 0x210, start + PERIOD) & 1, 1);

        // Injection: INTA moves it to ISR; nothing else pending.
        assert_eq!(v.acknowledge(), TIMER_VECTOR);
        assert_eq!(v.pending_interrupt(), None);
        assert_eq!(read_reg(&mut v, 0x110, start + PERIOD) & 1, 1); // ISR1
        assert_eq!(read_reg(&mut v, 0x210, start + PERIOD) & 1, 0); // IRR1
        // A second expiry while in service is held back by the processor priority.
        v.advance(start + 2 * PERIOD).unwrap();
        assert_eq!(v.pending_interrupt(), None);
        assert_eq!(read_reg(&mut v, 0xa0, start + 2 * PERIOD), 0x20); // PPR

        // EOI as guest-os writes it: mov dword ptr [rax+0xb0], 0.
        let mut regs = [0; 16];
        regs[0] = BASE;
        exec(
            &mut v,
            &[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            &mut regs,
            BASE + 0xb0,
            start + 2 * PERIOD,
        );
        assert_eq!(read_reg(&mut v, 0x110, start + 2 * PERIOD) & 1, 0);
        assert_eq!(v.pending_interrupt(), Some(TIMER_VECTOR));
        assert_eq!(v.acknowledge(), TIMER_VECTOR);
        // With nothing pending, INTA yields the spurious vector.
        assert_eq!(v.acknowledge(), SPURIOUS_VECTOR);
    }

    #[test]
    fn apic_base_msr_faults_are_values() {
        let mut v = VLapic::new(0, 39);
        let base = v.apic_base();
        // No x2APIC support: EXTD raises #GP.
        assert_eq!(
            v.set_apic_base(base | BASE_EXTD),
            Err(ApicError::GeneralProtection)
        );
        // Reserved bits: bit 9, bits at and above the physical-address width.
        assert_eq!(
            v.set_apic_base(base | 1 << 9),
            Err(ApicError::GeneralProtection)
        );
        assert_eq!(
            v.set_apic_base(base | 1 << 39),
            Err(ApicError::GeneralProtection)
        );
        assert_eq!(v.apic_base(), base);
        // Moving the page moves what the APIC decodes.
        v.set_apic_base(0xfed0_0000 | BASE_EN).unwrap();
        assert_eq!(v.mmio_base(), Some(Gpa::new(0xfed0_0000)));
        assert!(!v.contains(Gpa::new(BASE)));
        assert_eq!(v.apic_base(), 0xfed0_0000 | BASE_EN | BASE_BSP);
        // Disabling it: no page, and accesses are refused.
        v.set_apic_base(0xfed0_0000).unwrap();
        assert_eq!(v.mmio_base(), None);
        assert!(v.mmio_read(Gpa::new(0xfed0_0030), 4, 0).is_err());
    }

    #[test]
    fn refusals_pass_through() {
        let mut v = VLapic::new(0, 39);
        // Outside the page.
        assert_eq!(
            v.mmio_read(Gpa::new(BASE + 0x1000), 4, 0),
            Err(Unimplemented(
                "local APIC access outside its decoded register page"
            ))
        );
        assert!(v.mmio_write(Gpa::new(BASE - 4), 4, 0, 0).is_err());
        // A byte read of the version register (mov al, byte ptr [rdx+0x30]): the Lapic's own
        // refusal, through emulate.
        let insn = decode(&[0x8a, 0x42, 0x30], CodeMode::Bits64).unwrap();
        let mut regs = [0; 16];
        let err = emulate(&insn, &mut regs, &mut v.at(0), Gpa::new(BASE + 0x30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MMIO device: not implemented: xAPIC register access that is not a 16-byte \
             aligned 32-bit access"
        );
        // A 64-bit store (mov qword ptr [rax+0x80], rcx) is refused too.
        let insn = decode(&[0x48, 0x89, 0x88, 0x80, 0, 0, 0], CodeMode::Bits64).unwrap();
        assert!(emulate(&insn, &mut regs, &mut v.at(0), Gpa::new(BASE + 0x80)).is_err());
        // The version register through a 32-bit read.
        assert_eq!(v.mmio_read(Gpa::new(BASE + 0x30), 4, 0), Ok(0x0005_0014));
    }

    #[test]
    fn state_is_the_lapics() {
        let mut v = VLapic::new(3, 39);
        v.mmio_write(Gpa::new(BASE + 0x80), 4, 0x40, 0).unwrap(); // TPR
        let s = v.state();
        assert_eq!((s.initial_id, s.tpr), (3, 0x40));
    }
}
