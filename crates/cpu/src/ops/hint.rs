//! RDPMC, MONITOR and MWAIT (SDM Vol. 2B "MONITOR—Set Up Monitor Address", "MWAIT—Monitor Wait"),
//! RDRAND and RDSEED (Vol. 2B "RDRAND—Read Random Number", "RDSEED—Read Random SEED";
//! Vol. 1 §7.3.17).
//!
//! MWAIT is a hint: the processor may leave the optimized state at any time for
//! implementation-specific reasons (Vol. 2B), and this one leaves it at once, so MWAIT retires
//! as a no-op after its checks. CPUID leaf 5 reports no MWAIT extensions, so ECX must be 0.
//!
//! RDRAND and RDSEED must be deterministic here (the same image gives the same output on every
//! run): they return a fixed pseudo-random sequence (xorshift64*), always with CF = 1. Good
//! enough for a guest's KASLR or a hash seed; not a source of entropy, and documented so.

use iced_x86::{Code, Instruction, Mnemonic as M};
use x86::reg::rflags;

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault};

/// State of the hint and random-number instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HintState {
    /// xorshift64* state of RDRAND and RDSEED.
    pub rng: u64,
    /// MONITOR armed the monitoring hardware (reported in MWAIT's VM-exit qualification).
    pub monitor_armed: bool,
}

/// The generator's seed after RESET.
const SEED: u64 = 0x6e65_7374_7669_736f; // "nestviso"

impl Default for HintState {
    fn default() -> Self {
        Self {
            rng: SEED,
            monitor_armed: false,
        }
    }
}

impl Cpu {
    /// MONITOR and MWAIT: #UD above CPL 0; MONITOR checks DS:RAX as a read of one byte;
    /// MWAIT takes no extensions (ECX must be 0).
    #[inline(never)]
    pub(crate) fn monitor_mwait<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if self.cpl != 0 {
            return Err(Fault::ud().into());
        }
        if ins.mnemonic() == M::Monitor {
            // DS:RAX (EAX, AX by the address size), segment overridable.
            let seg = crate::exec::seg_of(ins.memory_segment());
            let bits = match ins.code() {
                Code::Monitorw => 16,
                Code::Monitord => 32,
                _ => 64,
            };
            let off = self.gpr[0] & crate::exec::width_mask(bits);
            self.read_seg(bus, seg, off, 1)?;
            self.hint.monitor_armed = true;
        } else {
            if self.gpr[1] as u32 != 0 {
                return Err(Fault::gp(0).into());
            }
            self.hint.monitor_armed = false;
        }
        Ok(())
    }

    /// RDRAND and RDSEED: the next value of the deterministic generator, CF = 1 and OF, SF,
    /// ZF, AF, PF = 0.
    #[inline(never)]
    pub(crate) fn rdrand(&mut self, ins: &Instruction) -> Ex<()> {
        let mut x = self.hint.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.hint.rng = x;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let dst = ins.op0_register();
        self.set_reg(dst, v & crate::exec::width_mask((dst.size() * 8) as u32));
        self.flags.set_status(rflags::CF);
        Ok(())
    }
}

impl Cpu {
    /// RDPMC (Vol. 2B "RDPMC—Read Performance-Monitoring Counters"): the processor reports no
    /// performance-monitoring counters (CPUID leaf 0AH is beyond its maximum leaf), so every
    /// counter index is invalid: #GP(0), as it is at CPL > 0 with CR4.PCE = 0. (In VMX
    /// non-root operation "RDPMC exiting" turns it into a VM exit first.)
    #[inline(never)]
    pub(crate) fn rdpmc(&mut self) -> Ex<()> {
        Err(Fault::gp(0).into())
    }
}

#[cfg(test)]
mod tests {
    use crate::fault::Fault;
    use crate::test_utils::{first_fault, run_bytes64};
    use x86::reg::rflags;

    const RDRAND_RAX: [u8; 4] = [0x48, 0x0f, 0xc7, 0xf0];
    const RDSEED_ECX: [u8; 3] = [0x0f, 0xc7, 0xf9];

    #[test]
    fn rdrand_and_rdseed_succeed_with_a_deterministic_sequence() {
        let code = [&RDRAND_RAX[..], &RDSEED_ECX].concat();
        let (a, _) = run_bytes64(&code, |c| c.gpr[1] = u64::MAX);
        let (b, _) = run_bytes64(&code, |_| {});
        assert_eq!(a.gpr[0], b.gpr[0], "the same run gives the same numbers");
        assert_ne!(a.gpr[0], 0);
        assert_eq!(a.gpr[1] >> 32, 0, "a 32-bit destination is zero-extended");
        assert_ne!(a.gpr[1] as u32, a.gpr[0] as u32, "the sequence moves on");
        let status = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;
        assert_eq!(a.flags.bits() & status, rflags::CF);
    }

    #[test]
    fn monitor_and_mwait_checks() {
        // monitor (rax = RIP-relative-free scratch); mwait: #UD at CPL 3.
        assert_eq!(first_fault(&[0x0f, 0x01, 0xc8], |c| c.cpl = 3), Fault::ud());
        assert_eq!(first_fault(&[0x0f, 0x01, 0xc9], |c| c.cpl = 3), Fault::ud());
        // MWAIT with an extension requested in ECX: #GP(0) (CPUID.05H:ECX reports none).
        assert_eq!(
            first_fault(&[0x0f, 0x01, 0xc9], |c| c.gpr[1] = 1),
            Fault::gp(0)
        );
        // MONITOR of DS:RAX at an unmapped address: #PF, as a read.
        let f = first_fault(&[0x0f, 0x01, 0xc8], |c| c.gpr[0] = 0x4000_0000);
        assert_eq!(f.vector, crate::fault::vector::PF);
        // Both retire at CPL 0 with valid operands.
        let (cpu, _) = run_bytes64(&[0x0f, 0x01, 0xc8, 0x0f, 0x01, 0xc9], |c| c.gpr[0] = 0x1000);
        assert!(!cpu.hint.monitor_armed, "MWAIT consumed the armed monitor");
    }

    #[test]
    fn rdpmc_finds_no_counter() {
        assert_eq!(first_fault(&[0x0f, 0x33], |_| {}), Fault::gp(0));
    }
}
