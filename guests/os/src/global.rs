//! [`Global`]: kernel state shared by every path through the kernel.
//!
//! guest-os runs on one CPU and kernel code always runs with interrupts masked (interrupt gates
//! clear IF, SYSCALL clears it through IA32_FMASK), so kernel state is never accessed
//! concurrently; the only hazard is re-entrance on the same path, which the `RefCell` turns into
//! a clear panic instead of aliasing.

use core::cell::{RefCell, RefMut};

/// A `RefCell` that may live in a `static`.
pub struct Global<T>(RefCell<T>);

// SAFETY: one CPU and no kernel preemption (see the module comment): no two accesses overlap.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(value: T) -> Self {
        Global(RefCell::new(value))
    }

    /// Borrows the state; panics if this path already holds it.
    #[track_caller]
    pub fn lock(&self) -> RefMut<'_, T> {
        self.0.borrow_mut()
    }
}
