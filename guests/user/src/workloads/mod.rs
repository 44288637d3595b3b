//! The workloads. Each takes `key=value` parameters (see `docs/guest-os.md`), does its work and
//! prints exactly one line `result <workload> checksum=<16 hex digits>` computed from the work.

pub mod cpu;
pub mod io;
pub mod kbuild;
pub mod memtouch;
pub mod ptchurn;
pub mod syscall;

use crate::println;
use crate::sys::{self, PROT_READ, PROT_WRITE};
use crate::{EXIT_FAILED, exit};

/// Prints the result line.
pub fn report(workload: &str, checksum: u64) {
    println!("result {workload} checksum={checksum:016x}");
}

/// Ends the workload after a failed system call it cannot do without.
pub fn fail(workload: &str, what: &str, err: sys::Errno) -> ! {
    println!("{workload}: {what} failed: errno {}", err.0);
    exit(EXIT_FAILED)
}

/// Maps `len` bytes of demand-zero memory as 64-bit words.
pub fn map_words(workload: &str, len: u64) -> &'static mut [u64] {
    let addr = sys::mmap(len, PROT_READ | PROT_WRITE).unwrap_or_else(|e| fail(workload, "mmap", e));
    // SAFETY: the kernel just mapped `len` zeroed bytes at `addr` for this process alone.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u64, (len / 8) as usize) }
}
