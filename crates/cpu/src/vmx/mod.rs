//! The VMX silicon of the software CPU (SDM Vol. 3C chapters 23–30, "Introduction to Virtual
//! Machine Extensions" to "VMX Instruction Reference", and Vol. 3D Appendix A). Section numbers
//! are those of the SDM editions that number "VM Entries" chapter 26, as issue 5 does; the
//! 2023–2024 editions (which `crates/x86` cites) add one to every VMX chapter number, with the
//! same subsection numbers.
//!
//! - [`capabilities`]: the capability MSRs of the modeled processor ([`capabilities::MODEL`]),
//!   the contract everything else implements (Vol. 3D Appendix A).
//! - [`vmcs`]: VMCS storage, the region format, launch state, VMREAD/VMWRITE (§24.2, §24.11,
//!   §30.3).
//! - [`checks`]: the VM-entry checks on controls, host state and guest state, as pure
//!   functions that name the failing rule (§26.2, §26.3.1, §26.7).
//!
//! Not wired into the interpreter yet: VMX is not advertised (CPUID.1:ECX.VMX = 0, CR4.VMXE is
//! reserved), so nothing here changes what a guest sees.

pub mod capabilities;
pub mod checks;
pub mod vmcs;
