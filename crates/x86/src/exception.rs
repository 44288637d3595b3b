//! Exception vectors, their classes, and the error-code formats.
//!
//! SDM Vol. 3A §6.3 (Table 6-1, vectors), §6.5 (fault, trap, abort), §6.13 (selector error
//! codes, Figure 6-7), §6.15 (the benign / contributory / page-fault classes and Table 6-5, which
//! decides when two exceptions make a double fault), and §4.7 (the page-fault error code).

/// An exception vector (0–31 are architecture-defined).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Exception {
    /// #DE divide error.
    DivideError = 0,
    /// #DB debug.
    Debug = 1,
    /// NMI interrupt.
    Nmi = 2,
    /// #BP breakpoint (INT3).
    Breakpoint = 3,
    /// #OF overflow (INTO).
    Overflow = 4,
    /// #BR BOUND range exceeded.
    BoundRange = 5,
    /// #UD invalid opcode.
    InvalidOpcode = 6,
    /// #NM device not available.
    DeviceNotAvailable = 7,
    /// #DF double fault.
    DoubleFault = 8,
    /// Coprocessor segment overrun (reserved since the 486).
    CoprocessorSegmentOverrun = 9,
    /// #TS invalid TSS.
    InvalidTss = 10,
    /// #NP segment not present.
    SegmentNotPresent = 11,
    /// #SS stack-segment fault.
    StackFault = 12,
    /// #GP general protection.
    GeneralProtection = 13,
    /// #PF page fault.
    PageFault = 14,
    /// #MF x87 floating-point error.
    X87Float = 16,
    /// #AC alignment check.
    AlignmentCheck = 17,
    /// #MC machine check.
    MachineCheck = 18,
    /// #XM SIMD floating-point exception.
    SimdFloat = 19,
    /// #VE virtualization exception.
    Virtualization = 20,
    /// #CP control-protection exception.
    ControlProtection = 21,
}

/// How an exception reports the instruction it interrupted (SDM Vol. 3A §6.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Reported before the faulting instruction; the saved RIP points at it.
    Fault,
    /// Reported after the instruction; the saved RIP points at the next one.
    Trap,
    /// Neither: the interrupted program cannot continue.
    Abort,
    /// An interrupt (NMI).
    Interrupt,
}

/// The exception classes of SDM Vol. 3A Table 6-4, used to decide double faults.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Never makes a double fault with another exception.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP (and #CP).
    Contributory,
    /// #PF (and #VE).
    PageFault,
    /// #DF itself: a further contributory or page fault during its delivery is a triple fault.
    DoubleFault,
}

/// What happens when `second` is raised while delivering `first` (SDM Vol. 3A Table 6-5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Combination {
    /// Deliver the second exception serially (the first is forgotten).
    Serial,
    /// Deliver a double fault (#DF with error code 0).
    DoubleFault,
    /// Shut down: a triple fault.
    TripleFault,
}

impl Exception {
    /// The exception for an architecture-defined vector, or `None` for 15, 22–31 and above.
    pub const fn from_vector(vector: u8) -> Option<Self> {
        use Exception::*;
        Some(match vector {
            0 => DivideError,
            1 => Debug,
            2 => Nmi,
            3 => Breakpoint,
            4 => Overflow,
            5 => BoundRange,
            6 => InvalidOpcode,
            7 => DeviceNotAvailable,
            8 => DoubleFault,
            9 => CoprocessorSegmentOverrun,
            10 => InvalidTss,
            11 => SegmentNotPresent,
            12 => StackFault,
            13 => GeneralProtection,
            14 => PageFault,
            16 => X87Float,
            17 => AlignmentCheck,
            18 => MachineCheck,
            19 => SimdFloat,
            20 => Virtualization,
            21 => ControlProtection,
            _ => return None,
        })
    }

    /// The vector number.
    pub const fn vector(self) -> u8 {
        self as u8
    }

    /// The SDM mnemonic, e.g. `#GP`.
    pub const fn mnemonic(self) -> &'static str {
        use Exception::*;
        match self {
            DivideError => "#DE",
            Debug => "#DB",
            Nmi => "NMI",
            Breakpoint => "#BP",
            Overflow => "#OF",
            BoundRange => "#BR",
            InvalidOpcode => "#UD",
            DeviceNotAvailable => "#NM",
            DoubleFault => "#DF",
            CoprocessorSegmentOverrun => "#CSO",
            InvalidTss => "#TS",
            SegmentNotPresent => "#NP",
            StackFault => "#SS",
            GeneralProtection => "#GP",
            PageFault => "#PF",
            X87Float => "#MF",
            AlignmentCheck => "#AC",
            MachineCheck => "#MC",
            SimdFloat => "#XM",
            Virtualization => "#VE",
            ControlProtection => "#CP",
        }
    }

    /// Whether delivery pushes an error code (SDM Vol. 3A Table 6-1). In real mode no exception
    /// pushes one; that is the delivering CPU's concern.
    pub const fn has_error_code(self) -> bool {
        use Exception::*;
        matches!(
            self,
            DoubleFault
                | InvalidTss
                | SegmentNotPresent
                | StackFault
                | GeneralProtection
                | PageFault
                | AlignmentCheck
                | ControlProtection
        )
    }

    /// Fault, trap, abort or interrupt. #DB is a fault for instruction breakpoints and
    /// general-detect and a trap otherwise; this returns `Trap`, and the CPU decides per cause.
    pub const fn kind(self) -> Kind {
        use Exception::*;
        match self {
            Debug | Breakpoint | Overflow => Kind::Trap,
            Nmi => Kind::Interrupt,
            DoubleFault | MachineCheck => Kind::Abort,
            _ => Kind::Fault,
        }
    }

    /// The class of SDM Vol. 3A Table 6-4.
    pub const fn class(self) -> Class {
        use Exception::*;
        match self {
            DivideError | InvalidTss | SegmentNotPresent | StackFault | GeneralProtection
            | ControlProtection => Class::Contributory,
            PageFault | Virtualization => Class::PageFault,
            DoubleFault => Class::DoubleFault,
            _ => Class::Benign,
        }
    }
}

/// SDM Vol. 3A Table 6-5: the outcome of raising `second` while delivering `first`.
pub const fn combine(first: Exception, second: Exception) -> Combination {
    match (first.class(), second.class()) {
        (Class::DoubleFault, Class::Contributory | Class::PageFault | Class::DoubleFault) => {
            Combination::TripleFault
        }
        (Class::Contributory, Class::Contributory) => Combination::DoubleFault,
        (Class::PageFault, Class::Contributory | Class::PageFault) => Combination::DoubleFault,
        _ => Combination::Serial,
    }
}

/// Selector error codes (SDM Vol. 3A §6.13, Figure 6-7): pushed by #TS, #NP, #SS and #GP when a
/// selector is at fault.
pub mod selector_error {
    /// EXT: the exception occurred while delivering an external event.
    pub const EXT: u32 = 1 << 0;
    /// IDT: the index refers to an IDT gate.
    pub const IDT: u32 = 1 << 1;
    /// TI: with IDT = 0, the index refers to the LDT (otherwise the GDT).
    pub const TI: u32 = 1 << 2;

    /// The error code naming a GDT/LDT selector (its index and TI bit; RPL bits replaced).
    pub const fn for_selector(selector: u16, ext: bool) -> u32 {
        (selector as u32 & 0xfffc) | ext as u32
    }

    /// The error code naming IDT vector `vector`.
    pub const fn for_vector(vector: u8, ext: bool) -> u32 {
        ((vector as u32) << 3) | IDT | ext as u32
    }
}

/// The page-fault error code (SDM Vol. 3A §4.7, Figure 4-12).
pub mod pf_error {
    /// P: 0 = not-present page, 1 = protection violation (including reserved bits).
    pub const PRESENT: u32 = 1 << 0;
    /// W/R: the access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// U/S: the access was a user-mode access.
    pub const USER: u32 = 1 << 2;
    /// RSVD: a reserved bit was set in some paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// I/D: the access was an instruction fetch.
    pub const FETCH: u32 = 1 << 4;
    /// PK: protection-key violation.
    pub const PK: u32 = 1 << 5;
    /// SS: shadow-stack access.
    pub const SHADOW_STACK: u32 = 1 << 6;
    /// HLAT: fault during HLAT paging.
    pub const HLAT: u32 = 1 << 7;
    /// SGX: violation of SGX-specific access-control requirements.
    pub const SGX: u32 = 1 << 15;
}

#[cfg(test)]
mod tests {
    use super::*;
    use Exception::*;

    #[test]
    fn vectors_round_trip() {
        for v in 0..=255u8 {
            if let Some(e) = Exception::from_vector(v) {
                assert_eq!(e.vector(), v);
            } else {
                assert!(v == 15 || v >= 22, "vector {v} must be defined");
            }
        }
    }

    #[test]
    fn error_codes_per_table_6_1() {
        let with: [Exception; 8] = [
            DoubleFault,
            InvalidTss,
            SegmentNotPresent,
            StackFault,
            GeneralProtection,
            PageFault,
            AlignmentCheck,
            ControlProtection,
        ];
        for v in 0..32 {
            if let Some(e) = Exception::from_vector(v) {
                assert_eq!(e.has_error_code(), with.contains(&e), "{}", e.mnemonic());
            }
        }
    }

    #[test]
    fn double_fault_table_6_5() {
        // Rows: first exception; columns: second (benign, contributory, page fault).
        let cases = [
            (Debug, InvalidOpcode, Combination::Serial),
            (Debug, GeneralProtection, Combination::Serial),
            (Debug, PageFault, Combination::Serial),
            (GeneralProtection, InvalidOpcode, Combination::Serial),
            (
                GeneralProtection,
                SegmentNotPresent,
                Combination::DoubleFault,
            ),
            (DivideError, StackFault, Combination::DoubleFault),
            (GeneralProtection, PageFault, Combination::Serial),
            (PageFault, Breakpoint, Combination::Serial),
            (PageFault, InvalidTss, Combination::DoubleFault),
            (PageFault, PageFault, Combination::DoubleFault),
            (DoubleFault, GeneralProtection, Combination::TripleFault),
            (DoubleFault, PageFault, Combination::TripleFault),
            (DoubleFault, InvalidOpcode, Combination::Serial),
        ];
        for (first, second, want) in cases {
            assert_eq!(
                combine(first, second),
                want,
                "{} then {}",
                first.mnemonic(),
                second.mnemonic()
            );
        }
    }

    #[test]
    fn selector_error_codes() {
        assert_eq!(selector_error::for_selector(0x2b, false), 0x28);
        assert_eq!(selector_error::for_selector(0x0f, true), 0x0d);
        assert_eq!(selector_error::for_vector(14, false), 0x72);
    }
}
