//! Safe wrappers around guest-os's system calls (numbers as in the kernel's `syscall.rs`).

use crate::arch::syscall;

const SYS_EXIT: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_FORK: u64 = 2;
const SYS_EXEC: u64 = 3;
const SYS_WAIT: u64 = 4;
const SYS_GETPID: u64 = 5;
const SYS_BRK: u64 = 6;
const SYS_MMAP: u64 = 7;
const SYS_MUNMAP: u64 = 8;
const SYS_MPROTECT: u64 = 9;

pub const PROT_READ: u64 = 1;
pub const PROT_WRITE: u64 = 2;

/// Exit-status bit set by the kernel when it killed the process (low byte: the vector).
pub const STATUS_KILLED: u64 = 1 << 32;

/// A system call's error: the positive errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u64);

fn check(ret: u64) -> Result<u64, Errno> {
    let signed = ret as i64;
    if (-4095..0).contains(&signed) {
        Err(Errno(signed.unsigned_abs()))
    } else {
        Ok(ret)
    }
}

pub fn exit(status: u32) -> ! {
    // SAFETY: exit takes no pointers.
    unsafe { syscall(SYS_EXIT, u64::from(status), 0, 0, 0) };
    unreachable!("exit returned")
}

pub fn write(bytes: &[u8]) {
    // SAFETY: the kernel reads `bytes.len()` bytes at `bytes`.
    unsafe { syscall(SYS_WRITE, bytes.as_ptr() as u64, bytes.len() as u64, 0, 0) };
}

/// What fork returned in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent(u32),
    Child,
}

pub fn fork() -> Result<Fork, Errno> {
    // SAFETY: fork takes no pointers.
    let pid = check(unsafe { syscall(SYS_FORK, 0, 0, 0, 0) })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid as u32)
    })
}

/// Replaces this program with built-in program `name`; returns only on failure.
pub fn exec(name: &str, args: &str) -> Errno {
    // SAFETY: the kernel reads the two strings.
    let ret = unsafe {
        syscall(
            SYS_EXEC,
            name.as_ptr() as u64,
            name.len() as u64,
            args.as_ptr() as u64,
            args.len() as u64,
        )
    };
    check(ret).err().unwrap_or(Errno(0))
}

/// Waits for any child: (pid, status).
pub fn wait() -> Result<(u32, u64), Errno> {
    let mut status = 0u64;
    // SAFETY: the kernel writes 8 bytes at &status.
    let pid = check(unsafe { syscall(SYS_WAIT, &raw mut status as u64, 0, 0, 0) })?;
    Ok((pid as u32, status))
}

pub fn getpid() -> u64 {
    // SAFETY: getpid takes no pointers.
    unsafe { syscall(SYS_GETPID, 0, 0, 0, 0) }
}

/// Moves the program break (0 asks for it).
pub fn brk(addr: u64) -> u64 {
    // SAFETY: brk takes no pointers; memory it adds is ours.
    unsafe { syscall(SYS_BRK, addr, 0, 0, 0) }
}

/// Maps `len` bytes of demand-zero memory.
pub fn mmap(len: u64, prot: u64) -> Result<u64, Errno> {
    // SAFETY: the kernel picks a free address; no existing memory changes.
    check(unsafe { syscall(SYS_MMAP, len, prot, 0, 0) })
}

/// Unmaps a range.
///
/// # Safety
/// Nothing may refer to the range afterwards.
pub unsafe fn munmap(addr: u64, len: u64) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    check(unsafe { syscall(SYS_MUNMAP, addr, len, 0, 0) }).map(|_| ())
}

/// Changes the rights of a range.
///
/// # Safety
/// Code must not write to the range while it is read-only.
pub unsafe fn mprotect(addr: u64, len: u64, prot: u64) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    check(unsafe { syscall(SYS_MPROTECT, addr, len, prot, 0) }).map(|_| ())
}
