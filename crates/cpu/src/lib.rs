//! The software x86-64 CPU: decode (iced-x86), execute, flags, exceptions and interrupts, the
//! real, protected and long modes, the TLB, and the VMX silicon (VMX instructions, VMCS, VM-entry
//! checks, non-root operation, EPT, VPID). Deterministic: time advances with retired
//! instructions, never with the host clock.
//!
//! (Being built; the board interface, [`bus`], is final.)

pub mod bus;

pub use bus::{Bus, MsrAccess, TSC_PER_TICK, VirtualTime};
