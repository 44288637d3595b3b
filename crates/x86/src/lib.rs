//! Architectural definitions of x86-64 and Intel VMX, shared by every nestvisor crate.
//!
//! Nothing here executes anything: these are the names, bit positions, encodings and formats of
//! the Intel 64 and IA-32 Architectures Software Developer's Manual (the SDM), so that the
//! hardware model, the page walker and the hypervisor all speak of the same things with the same
//! words. Addresses are typed ([`Gva`], [`Gpa`], [`NGpa`], [`Hpa`]) so that a translation step
//! that confuses two address spaces does not compile.
//!
//! Modules and the SDM chapters they follow:
//! - [`addr`]: address and frame-number newtypes.
//! - [`reg`]: CR0, CR4, EFER, RFLAGS and XCR0 bits (SDM Vol. 3A §2.5, Vol. 1 §3.4.3).
//! - [`segment`]: selectors, segment and gate descriptors (SDM Vol. 3A §3.4, §5.8, §6.11).
//! - [`exception`]: exception vectors and error-code formats (SDM Vol. 3A §6.3, §6.13, §4.7).
//! - [`msr`]: model-specific register numbers (SDM Vol. 4).
//! - [`paging`]: paging-structure entry formats for every paging mode and EPT (SDM Vol. 3A §4,
//!   Vol. 3C §29.3).
//! - [`vmx`]: VMCS field encodings, exit reasons, VM-instruction errors, VMX controls and
//!   capability MSR layouts (SDM Vol. 3C §24–§31, Appendices A–C).

#![no_std]

pub mod addr;
pub mod exception;
pub mod msr;
pub mod paging;
pub mod reg;
pub mod segment;
pub mod vmx;

pub use addr::{Gfn, Gpa, Gva, Hfn, Hpa, NGfn, NGpa};
