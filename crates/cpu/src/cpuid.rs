//! CPUID (SDM Vol. 2A "CPUID"): GenuineIntel, and only the features this model implements.
//!
//! Advertised: FPU = 0 (no x87), TSC, MSR, PAE, CX8, APIC (the board's local APIC), SEP,
//! MTRR (the registers, as storage), PGE, CMOV, PAT, PSE, DE; CX16, POPCNT, PCID, x2APIC and
//! TSC-deadline (the board's local APIC again); LM, NX, SYSCALL, RDTSCP, 1-GiB pages,
//! LAHF/SAHF, LZCNT; INVPCID, SMEP, SMAP; VMX only with the model switch
//! [`crate::CpuFeatures::vmx`]. Not advertised: SSE*, x87, BMI1, XSAVE, leaf 0BH (the x2APIC
//! topology leaf is optional: the maximum basic leaf is 7, and the x2APIC ID is 0).
//!
//! The APIC flags are promises about the board, which owns the local APIC behind
//! [`crate::Bus`]: IA32_APIC_BASE with the EXTD bit, the x2APIC MSRs 0x800–0x8FF and
//! IA32_TSC_DEADLINE. The PC board (`machine::Board`) implements all three and checks in its
//! tests that what CPUID says here and what its APIC accepts agree; the TSC the deadline is
//! compared with is the one RDTSC reads ([`crate::Bus::tsc_offset_changed`]).

use crate::Cpu;
use crate::mmu::MAXPHYADDR;
use crate::regs::Gpr;

/// CPUID.1:ECX bit 5: VMX, advertised only with [`crate::CpuFeatures::vmx`].
pub(crate) const VMX: u32 = 1 << 5;

/// CPUID.1:ECX bit 21: x2APIC (SDM Vol. 3A §11.12), implemented by the board's local APIC.
pub(crate) const X2APIC: u32 = 1 << 21;

/// CPUID.1:ECX bit 24: the local APIC timer's TSC-deadline mode (SDM Vol. 3A §11.5.4.1) and
/// IA32_TSC_DEADLINE, implemented by the board's local APIC.
pub(crate) const TSC_DEADLINE: u32 = 1 << 24;

/// Family 6, model 0x3a (Ivy Bridge-like), stepping 9: the processor signature.
pub(crate) const SIGNATURE: u32 = 0x0003_06a9;

/// Returns (EAX, EBX, ECX, EDX) for a leaf and sub-leaf.
pub(crate) fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    match leaf {
        0 => [
            0x7,
            u32::from_le_bytes(*b"Genu"),
            u32::from_le_bytes(*b"ntel"),
            u32::from_le_bytes(*b"ineI"),
        ],
        1 => {
            let edx = (1 << 2) // DE
                | (1 << 3) // PSE
                | (1 << 4) // TSC
                | (1 << 5) // MSR
                | (1 << 6) // PAE
                | (1 << 8) // CX8
                | (1 << 9) // APIC
                | (1 << 11) // SEP
                | (1 << 12) // MTRR
                | (1 << 13) // PGE
                | (1 << 15) // CMOV
                | (1 << 16); // PAT
            let ecx = (1 << 3) // MONITOR/MWAIT
                | (1 << 13) // CMPXCHG16B
                | (1 << 17) // PCID
                | X2APIC
                | (1 << 23) // POPCNT
                | TSC_DEADLINE
                | (1 << 30); // RDRAND
            // EBX: APIC ID 0, one logical processor, CLFLUSH line size 8 (x 8 bytes).
            [SIGNATURE, 8 << 8, ecx, edx]
        }
        7 if sub == 0 => {
            let ebx = (1 << 7) // SMEP
                | (1 << 10) // INVPCID
                | (1 << 18) // RDSEED
                | (1 << 20); // SMAP
            [0, ebx, 0, 0]
        }
        // MONITOR/MWAIT: 64-byte monitor lines, no extensions, no C-states enumerated.
        5 => [64, 64, 0, 0],
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        0x8000_0001 => {
            let ecx = 1 // LAHF/SAHF in 64-bit mode
                | (1 << 5); // LZCNT
            let edx = (1 << 11) // SYSCALL/SYSRET
                | (1 << 20) // NX
                | (1 << 26) // 1-GiB pages
                | (1 << 27) // RDTSCP
                | (1 << 29); // Intel 64
            [0, 0, ecx, edx]
        }
        0x8000_0002..=0x8000_0004 => {
            let name = *b"nestvisor software x86-64 CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
            let i = ((leaf - 0x8000_0002) * 16) as usize;
            let w = |k: usize| {
                u32::from_le_bytes([
                    name[i + k],
                    name[i + k + 1],
                    name[i + k + 2],
                    name[i + k + 3],
                ])
            };
            [w(0), w(4), w(8), w(12)]
        }
        // Physical and linear address sizes.
        0x8000_0008 => [MAXPHYADDR | (48 << 8), 0, 0, 0],
        // Leaves above the maximum return the data of the highest basic leaf (Intel behaviour).
        _ if leaf < 0x8000_0000 && leaf > 7 => cpuid(7, sub),
        _ if leaf > 0x8000_0008 => cpuid(7, sub),
        _ => [0; 4],
    }
}

impl Cpu {
    #[inline(never)]
    pub(crate) fn cpuid(&mut self) -> crate::fault::Ex<()> {
        let leaf = self.gpr[Gpr::Rax as usize] as u32;
        let sub = self.gpr[Gpr::Rcx as usize] as u32;
        let [a, b, mut c, d] = cpuid(leaf, sub);
        if leaf == 1 && self.features.vmx {
            c |= VMX;
        }
        self.gpr[Gpr::Rax as usize] = u64::from(a);
        self.gpr[Gpr::Rbx as usize] = u64::from(b);
        self.gpr[Gpr::Rcx as usize] = u64::from(c);
        self.gpr[Gpr::Rdx as usize] = u64::from(d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::cpuid;

    #[test]
    fn vendor_and_no_unimplemented_features() {
        let [max, b, c, d] = cpuid(0, 0);
        assert_eq!(max, 7);
        let mut v = Vec::new();
        for r in [b, d, c] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&v, b"GenuineIntel");
        let [_, _, ecx, edx] = cpuid(1, 0);
        assert_eq!(
            ecx & (1 << 5),
            0,
            "VMX comes from the model switch (Cpu::cpuid)"
        );
        assert_eq!(edx & 1, 0, "no x87");
        assert_eq!(edx & (1 << 25 | 1 << 26), 0, "no SSE/SSE2");
        // No SSE3, SSSE3, SSE4.1, SSE4.2, XSAVE.
        assert_eq!(ecx & (1 << 0 | 1 << 9 | 1 << 19 | 1 << 20 | 1 << 26), 0);
        // The board's local APIC: x2APIC (bit 21) and the TSC-deadline timer (bit 24).
        assert_eq!(ecx & (1 << 21 | 1 << 24), 1 << 21 | 1 << 24);
        // MONITOR/MWAIT and RDRAND (ops::hint), RDSEED in leaf 7.
        assert_eq!(ecx & (1 << 3 | 1 << 30), 1 << 3 | 1 << 30);
        assert_eq!(cpuid(7, 0)[1] & (1 << 18), 1 << 18);
        assert_eq!(cpuid(5, 0), [64, 64, 0, 0], "no MWAIT extensions");
        assert_eq!(edx & (1 << 9), 1 << 9, "APIC");
        // No leaf 0BH: the maximum basic leaf stays 7.
        assert_eq!(cpuid(0xb, 0), cpuid(7, 0));
        let [_, ebx7, _, _] = cpuid(7, 0);
        assert_eq!(ebx7 & (1 << 3), 0, "no BMI1");
        let [a8, ..] = cpuid(0x8000_0008, 0);
        assert_eq!(a8 & 0xff, super::MAXPHYADDR);
    }
}
