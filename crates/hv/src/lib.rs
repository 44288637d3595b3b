//! The hypervisor core, generic over a `Vmx` backend and a physical-memory trait: VMs, vCPUs,
//! exit handling, memory virtualization (EPT, shadow paging, nested EPT, shadow-on-EPT), nested
//! VMX and virtual devices. The same code runs natively as L0 on the software CPU and, compiled
//! into the bare-metal guest-hv image, on real VMX instructions at every level above.
//!
//! Built so far (`docs/hv.md`): the backend traits ([`vmx`], [`memory`], [`platform`]), exits
//! parsed once into typed values ([`exit`]), one VM with one vCPU on EPT ([`vm`], [`ept`]),
//! MMIO emulation and the guest's local APIC ([`mmio`], [`vlapic`]), software walks of the
//! guest's page tables ([`guest`]), shadow paging ([`shadow`]) as the alternative to EPT, and a
//! scripted mock backend for unit tests ([`mock`]). Nested VMX is to come.

#![no_std]

extern crate alloc;

pub mod ept;
pub mod exit;
pub mod guest;
pub mod memory;
pub mod mmio;
pub mod mock;
pub mod platform;
pub mod shadow;
#[cfg(test)]
mod shadow_tests;
pub mod vlapic;
pub mod vm;
mod vm_shadow;
#[cfg(test)]
mod vm_tests;
pub mod vmx;
