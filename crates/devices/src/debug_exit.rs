//! The debug-exit port, as QEMU's `isa-debug-exit` device (`hw/misc/debugexit.c`): a write of
//! `value` asks the emulator to end the run with process exit status `(value << 1) | 1`.
//!
//! QEMU accepts writes of 1, 2 or 4 bytes anywhere in its window and ignores the offset; the
//! status is odd by construction, so a run that ends through this port can never be mistaken
//! for a clean `exit(0)` of the emulator. On nestvisor the window is 4 bytes at port 0xF4 (the
//! usual `-device isa-debug-exit,iobase=0xf4,iosize=0x04`). The operating system keeps only the
//! low 8 bits of a process exit status; [`ExitRequest::status`] is the full value and the
//! program narrows it the way `exit(3)` does. Reads have no effect and return all ones, as an
//! undecoded read does on the ISA bus.

/// Default I/O base on the nestvisor board.
pub const PORT: u16 = 0xf4;
/// Width of the window in bytes.
pub const IO_SIZE: u16 = 4;

/// A run-ending request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequest {
    /// The value the guest wrote (zero-extended from the access width).
    pub value: u32,
}

impl ExitRequest {
    /// The process exit status QEMU would use: `(value << 1) | 1` (as a 64-bit value, so
    /// nothing is lost before the operating system narrows it).
    pub fn status(self) -> u64 {
        (u64::from(self.value) << 1) | 1
    }

    /// The status as the operating system reports it to the parent (low 8 bits).
    pub fn os_status(self) -> u8 {
        (self.status() & 0xff) as u8
    }
}

/// Snapshot of a [`DebugExit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugExitState {
    /// The request made, if any.
    pub request: Option<ExitRequest>,
}

/// The debug-exit device: it only remembers the first request.
#[derive(Clone, Debug, Default)]
pub struct DebugExit {
    state: DebugExitState,
}

impl DebugExit {
    /// A device that has not been written.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores from a snapshot.
    pub fn from_state(state: DebugExitState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> DebugExitState {
        self.state
    }

    /// Reads at `offset`: no effect, all ones of the access width.
    pub fn read(&self, _offset: u16, size: u8) -> u32 {
        crate::width_mask(size) as u32
    }

    /// A write of `size` bytes (1, 2 or 4): the run must end. The first request wins.
    pub fn write(&mut self, _offset: u16, size: u8, value: u32) {
        let value = value & crate::width_mask(size) as u32;
        if self.state.request.is_none() {
            self.state.request = Some(ExitRequest { value });
        }
    }

    /// The pending request, if the guest wrote the port.
    pub fn request(&self) -> Option<ExitRequest> {
        self.state.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_value_shifted_left_with_low_bit_set() {
        let mut d = DebugExit::new();
        assert_eq!(d.request(), None);
        d.write(0, 4, 0x21);
        let r = d.request().unwrap();
        assert_eq!(r.status(), 0x43);
        assert_eq!(r.os_status(), 0x43);
        // The first request wins.
        d.write(0, 4, 5);
        assert_eq!(d.request().unwrap().value, 0x21);
    }

    #[test]
    fn wide_values_and_narrow_writes() {
        let r = ExitRequest { value: 0xffff_ffff };
        assert_eq!(r.status(), 0x1_ffff_ffff);
        assert_eq!(r.os_status(), 0xff);
        let mut d = DebugExit::new();
        d.write(0, 1, 0x1234);
        assert_eq!(d.request().unwrap().value, 0x34);
        assert_eq!(d.read(0, 2), 0xffff);
    }
}
