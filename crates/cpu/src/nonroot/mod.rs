//! VMX non-root operation and the transitions into and out of it (SDM Vol. 3C chapter 26
//! "VMX Non-Root Operation", chapter 27 "VM Entries", chapter 28 "VM Exits").

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::fault::{Ex, Exc};
use crate::state::Seg;
use crate::vmx::exit::VmExit;

impl Cpu {
    /// The events of an instruction boundary in non-root operation that cause VM exits
    /// before anything else happens there (SDM Vol. 3C §26.2, §26.7).
    pub(crate) fn nonroot_boundary<B: Bus>(&mut self, _bus: &mut B) -> Ex<()> {
        Ok(())
    }

    /// Performs a VM exit (SDM Vol. 3C chapter 28).
    pub(crate) fn vm_exit<B: Bus>(&mut self, _bus: &mut B, exit: VmExit) -> Ex<()> {
        let _ = exit;
        Err(Exc::Error(Box::new(CpuError::Unsupported {
            rip: self.seg[Seg::Cs as usize].base.wrapping_add(self.rip),
            what: "VM exit",
        })))
    }
}
