//! Control-register, EFER, RFLAGS and XCR0 bits.
//!
//! SDM Vol. 3A §2.5 (control registers, Figure 2-7), §2.2.1 and Vol. 4 (IA32_EFER), Vol. 1 §3.4.3
//! (EFLAGS, Figure 3-8) and Vol. 1 §13.3 (XCR0). Each register is a module of `u64` masks; values
//! move through the CPU and the VMCS as plain `u64`, exactly as the hardware stores them.

/// CR0 (SDM Vol. 3A §2.5).
pub mod cr0 {
    /// Protection Enable: protected mode.
    pub const PE: u64 = 1 << 0;
    /// Monitor Coprocessor: WAIT/FWAIT honour TS.
    pub const MP: u64 = 1 << 1;
    /// Emulation: x87 instructions raise #NM.
    pub const EM: u64 = 1 << 2;
    /// Task Switched: the next x87/SSE instruction raises #NM.
    pub const TS: u64 = 1 << 3;
    /// Extension Type: hard-wired to 1 on every processor since the 486.
    pub const ET: u64 = 1 << 4;
    /// Numeric Error: native x87 error reporting (#MF) instead of the external FERR# pin.
    pub const NE: u64 = 1 << 5;
    /// Write Protect: supervisor writes honour read-only pages.
    pub const WP: u64 = 1 << 16;
    /// Alignment Mask: with EFLAGS.AC and CPL 3, misaligned accesses raise #AC.
    pub const AM: u64 = 1 << 18;
    /// Not Write-through (cache control).
    pub const NW: u64 = 1 << 29;
    /// Cache Disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
    /// Every bit that is defined; MOV to CR0 with any other bit of 63:32 set raises #GP.
    pub const DEFINED: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR3 (SDM Vol. 3A §4.5, §4.10.4.1).
pub mod cr3 {
    /// Page-level write-through of the top-level paging structure (without PCIDs).
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable of the top-level paging structure (without PCIDs).
    pub const PCD: u64 = 1 << 4;
    /// The process-context identifier, bits 11:0, when CR4.PCIDE = 1.
    pub const PCID_MASK: u64 = 0xfff;
    /// On MOV to CR3 with CR4.PCIDE = 1: do not invalidate the new PCID's TLB entries. The bit is
    /// never stored in CR3.
    pub const NO_FLUSH: u64 = 1 << 63;
    /// The page-aligned physical address of the top-level table (bits 51:12; the processor
    /// further limits it to MAXPHYADDR).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// With PAE paging, the 32-byte-aligned physical address of the PDPT (bits 31:5).
    pub const PAE_PDPT_MASK: u64 = 0xffff_ffe0;
}

/// CR4 (SDM Vol. 3A §2.5).
pub mod cr4 {
    /// Virtual-8086 Mode Extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode Virtual Interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time Stamp Disable: RDTSC/RDTSCP privileged.
    pub const TSD: u64 = 1 << 2;
    /// Debugging Extensions.
    pub const DE: u64 = 1 << 3;
    /// Page Size Extensions: 4-MiB pages with 32-bit paging.
    pub const PSE: u64 = 1 << 4;
    /// Physical Address Extension: PAE, 4-level and 5-level paging.
    pub const PAE: u64 = 1 << 5;
    /// Machine-Check Enable.
    pub const MCE: u64 = 1 << 6;
    /// Page Global Enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance-Monitoring Counter Enable: RDPMC at any CPL.
    pub const PCE: u64 = 1 << 8;
    /// OS support for FXSAVE/FXRSTOR.
    pub const OSFXSR: u64 = 1 << 9;
    /// OS support for unmasked SIMD floating-point exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-Mode Instruction Prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 57-bit linear addresses (5-level paging).
    pub const LA57: u64 = 1 << 12;
    /// VMX Enable.
    pub const VMXE: u64 = 1 << 13;
    /// SMX Enable.
    pub const SMXE: u64 = 1 << 14;
    /// FSGSBASE instructions enable.
    pub const FSGSBASE: u64 = 1 << 16;
    /// Process-context identifiers.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and processor extended states enable.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Key Locker enable.
    pub const KL: u64 = 1 << 19;
    /// Supervisor-Mode Execution Prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-Mode Access Prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user-mode pages.
    pub const PKE: u64 = 1 << 22;
    /// Control-flow Enforcement Technology.
    pub const CET: u64 = 1 << 23;
    /// Protection keys for supervisor-mode pages.
    pub const PKS: u64 = 1 << 24;
    /// Bits whose change on MOV to CR4 invalidates cached translations. SDM Vol. 3A §4.10.4.1
    /// gives each one's scope: changing PGE, or clearing PCIDE, flushes everything including
    /// global entries; changing PAE or PSE, or setting SMEP or SMAP, flushes the current PCID.
    pub const TLB_FLUSH_BITS: u64 = PSE | PAE | PGE | PCIDE | SMEP | SMAP | LA57;
}

/// IA32_EFER (SDM Vol. 3A §2.2.1, Vol. 4 Table 2-2).
pub mod efer {
    /// SYSCALL/SYSRET enable.
    pub const SCE: u64 = 1 << 0;
    /// IA-32e (long) mode enable.
    pub const LME: u64 = 1 << 8;
    /// IA-32e mode active (read-only to software: set by the processor when CR0.PG enables
    /// paging with LME = 1).
    pub const LMA: u64 = 1 << 10;
    /// Execute-disable bit enable.
    pub const NXE: u64 = 1 << 11;
    /// Bits that an Intel processor implements; WRMSR setting any other bit raises #GP.
    pub const DEFINED: u64 = SCE | LME | LMA | NXE;
}

/// RFLAGS (SDM Vol. 1 §3.4.3, Figure 3-8).
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Reserved, always reads as 1.
    pub const FIXED1: u64 = 1 << 1;
    /// Parity (of the low byte of the result).
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (out of bit 3).
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap (single-step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction (string instructions decrement when set).
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level, bits 13:12.
    pub const IOPL: u64 = 3 << 12;
    /// Shift of the IOPL field.
    pub const IOPL_SHIFT: u32 = 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume: suppresses instruction-breakpoint #DB for one instruction.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check / access control (SMAP override).
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available (software can toggle it).
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
    /// Every bit that is not reserved.
    pub const DEFINED: u64 =
        STATUS | FIXED1 | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}

/// XCR0, the XSAVE feature-enable register (SDM Vol. 1 §13.3).
pub mod xcr0 {
    /// x87 state; must always be 1.
    pub const X87: u64 = 1 << 0;
    /// SSE state (XMM registers and MXCSR).
    pub const SSE: u64 = 1 << 1;
    /// AVX state (upper halves of YMM registers); requires SSE.
    pub const AVX: u64 = 1 << 2;
    /// MPX bound registers.
    pub const BNDREG: u64 = 1 << 3;
    /// MPX configuration and status.
    pub const BNDCSR: u64 = 1 << 4;
    /// AVX-512 opmask registers.
    pub const OPMASK: u64 = 1 << 5;
    /// AVX-512 upper halves of ZMM0–15.
    pub const ZMM_HI256: u64 = 1 << 6;
    /// AVX-512 ZMM16–31.
    pub const HI16_ZMM: u64 = 1 << 7;
    /// Protection-key rights register.
    pub const PKRU: u64 = 1 << 9;
}

/// DR6 and DR7 (SDM Vol. 3A §18.2).
pub mod dr {
    /// DR6 bits that read as 1 (bits 31:16 except RTM, bit 11 and bits 15:12 reserved-1 pattern).
    pub const DR6_FIXED1: u64 = 0xffff_0ff0;
    /// DR6.BS: single-step trap.
    pub const DR6_BS: u64 = 1 << 14;
    /// DR6.BD: debug-register access detected.
    pub const DR6_BD: u64 = 1 << 13;
    /// DR6.BT: task switch.
    pub const DR6_BT: u64 = 1 << 15;
    /// DR7 bit 10 reads as 1.
    pub const DR7_FIXED1: u64 = 1 << 10;
    /// DR7.GD: general-detect enable.
    pub const DR7_GD: u64 = 1 << 13;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_match_the_sdm() {
        assert_eq!(cr0::PG | cr0::PE, 0x8000_0001);
        assert_eq!(cr0::WP, 0x1_0000);
        assert_eq!(cr4::PAE, 0x20);
        assert_eq!(cr4::VMXE, 0x2000);
        assert_eq!(cr4::PCIDE, 0x2_0000);
        assert_eq!(cr4::SMEP | cr4::SMAP, 0x30_0000);
        assert_eq!(efer::LME | efer::LMA | efer::NXE, 0xd00);
        assert_eq!(rflags::IF, 0x200);
        assert_eq!(rflags::STATUS, 0x8d5);
        assert_eq!(rflags::DEFINED, 0x3f_7fd7);
    }
}
