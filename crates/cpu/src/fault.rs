//! Architectural exceptions as values: an instruction returns `Err(Exc::Fault(..))` and the run
//! loop delivers it through the IDT (SDM Vol. 3A §6.3 vectors, §6.13 error codes, §6.15
//! per-exception details, §4.7 page-fault error code).

use crate::error::CpuError;

/// Exception vectors (SDM Vol. 3A §6.3.1, Table 6-1).
#[allow(missing_docs)]
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
}

/// Page-fault error-code bits (SDM Vol. 3A §4.7, Figure 4-12).
#[allow(missing_docs)]
pub mod pf {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const I: u32 = 1 << 4;
}

/// An exception raised by an instruction or by event delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The vector.
    pub vector: u8,
    /// The error code pushed on the stack, for the vectors that have one.
    pub error_code: Option<u32>,
    /// The faulting linear address (#PF only; loaded into CR2 on delivery).
    pub address: u64,
}

impl Fault {
    /// An exception without error code.
    pub const fn new(vector: u8) -> Self {
        Self {
            vector,
            error_code: None,
            address: 0,
        }
    }

    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Self {
            vector,
            error_code: Some(code),
            address: 0,
        }
    }

    /// #GP(code).
    pub const fn gp(code: u32) -> Self {
        Self::with_code(vector::GP, code)
    }

    /// #UD.
    pub const fn ud() -> Self {
        Self::new(vector::UD)
    }

    /// #PF at `address` with `code`.
    pub const fn page(address: u64, code: u32) -> Self {
        Self {
            vector: vector::PF,
            error_code: Some(code),
            address,
        }
    }

    /// The exception class for double-fault detection (SDM Vol. 3A §6.15, Table 6-4).
    pub const fn class(self) -> Class {
        match self.vector {
            vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => Class::Contributory,
            vector::PF => Class::PageFault,
            vector::DF => Class::DoubleFault,
            _ => Class::Benign,
        }
    }
}

/// Exception classes of SDM Vol. 3A §6.15, Table 6-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Benign exceptions and interrupts.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    /// #PF.
    PageFault,
    /// #DF itself.
    DoubleFault,
}

/// What can interrupt the execution of an instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exc {
    /// An architectural fault, delivered to the guest.
    Fault(Fault),
    /// The model cannot go on.
    Error(Box<CpuError>),
    /// In VMX non-root operation: the instruction or event causes a VM exit instead
    /// (SDM Vol. 3C chapter 26). Boxed to keep `Ex` small on the hot path.
    VmExit(Box<crate::vmx::exit::VmExit>),
    /// A triple fault (SDM Vol. 3A §6.15, "Interrupt 8"): shutdown, or in VMX non-root
    /// operation a VM exit.
    Shutdown,
}

impl Exc {
    /// A VM exit.
    pub(crate) fn vm_exit(exit: crate::vmx::exit::VmExit) -> Self {
        Exc::VmExit(Box::new(exit))
    }
}

impl From<Fault> for Exc {
    fn from(f: Fault) -> Self {
        Exc::Fault(f)
    }
}

/// Result of an instruction step.
pub(crate) type Ex<T> = Result<T, Exc>;
