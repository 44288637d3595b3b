//! What the hypervisor runs on besides VMX and memory ([`Platform`]), and the three together
//! ([`Host`]): one object per machine (the software CPU's board natively, the bare-metal image
//! on real hardware), so that the hypervisor holds one borrow of it.

use x86::vmx::VmcsField as F;

use crate::memory::PhysMemory;
use crate::vmx::Vmx;

/// Everything the hypervisor runs on: VMX, its memory, and the rest of the machine.
pub trait Host: Vmx + PhysMemory + Platform {}

impl<T: Vmx + PhysMemory + Platform> Host for T {}

/// What the hypervisor needs from the machine under it besides VMX and memory.
pub trait Platform {
    /// CPUID of the processor the hypervisor runs on, for leaf and sub-leaf.
    fn cpuid(&mut self, leaf: u32, sub: u32) -> [u32; 4];
    /// The TSC now (the virtual clock the guest's devices run on).
    fn tsc(&self) -> u64;
    /// The guest halted: let time pass to `tsc` (a timer will wake it then).
    fn idle_until(&mut self, tsc: u64);
    /// A byte the guest wrote to its console.
    fn console(&mut self, byte: u8);
    /// The host-state fields this hypervisor's VM exits land in.
    fn host_state(&self) -> &[(F, u64)];
    /// Whether the run has used up its instruction budget (the guest is then stopped).
    fn budget_exhausted(&self) -> bool {
        false
    }
}
