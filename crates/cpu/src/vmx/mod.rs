//! The VMX silicon of the software CPU (SDM Vol. 3C chapters 24–31, "Introduction to Virtual
//! Machine Extensions" to "VMX Instruction Reference", and Vol. 3D Appendix A). Section numbers
//! are those of the 2023–2024 SDM editions, as everywhere in nestvisor; older editions (and
//! the issues) number every VMX chapter one lower, with the same subsection numbers.
//!
//! - [`capabilities`]: the capability MSRs of the modeled processor ([`capabilities::MODEL`]),
//!   the contract everything else implements (Vol. 3D Appendix A).
//! - [`vmcs`]: VMCS storage, the region format, launch state, VMREAD/VMWRITE (§25.2, §25.11,
//!   §31.3).
//! - [`checks`]: the VM-entry checks on controls, host state and guest state, as pure
//!   functions that name the failing rule (§27.2, §27.3.1, §27.7).
//! - [`exit`]: a VM exit as the detecting part of the silicon describes it (§28.2).
//!
//! The VMX instructions live in `ops/vmx` and `ops/vmx_inv` (SDM Vol. 3C chapter 31), VM
//! entry, non-root operation and VM exits in `nonroot`, EPT and VPID in `mmu` and `tlb`. All
//! of it sits behind the model switch [`crate::CpuFeatures::vmx`] (the board turns it on):
//! without it VMX is not advertised (CPUID.1:ECX.VMX = 0, CR4.VMXE is reserved) and nothing here
//! changes what a guest sees. `docs/vmx.md` is the overview.

pub mod capabilities;
pub mod checks;
pub mod exit;
pub mod vmcs;
