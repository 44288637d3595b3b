//! The system-call interface: SYSCALL with the number in RAX and arguments in RDI, RSI, RDX, R10,
//! R8, R9 (the x86-64 Linux register convention, SDM Vol. 2B SYSCALL), result in RAX, errors as
//! `-errno`. The MSRs are set up here (SDM Vol. 3A §5.8.8): IA32_STAR selectors, IA32_LSTAR
//! entry, IA32_FMASK clearing IF, TF, DF and AC, and IA32_EFER.SCE.
//!
//! | nr | call | arguments | returns |
//! |----|------|-----------|---------|
//! | 0 | exit | status | — |
//! | 1 | write | buf, len | len (to the console) |
//! | 2 | fork | — | child pid / 0 in the child |
//! | 3 | exec | name, name_len, args, args_len | no return on success |
//! | 4 | wait | status pointer (u64) | pid of a child that ended |
//! | 5 | getpid | — | pid |
//! | 6 | brk | address (0 asks) | the break |
//! | 7 | mmap | len, prot | address |
//! | 8 | munmap | address, len | 0 |
//! | 9 | mprotect | address, len, prot | 0 |
//! | 10 | yield | — | 0 |

use crate::arch::TrapFrame;
use crate::errno::{EFAULT, EINVAL, ENOSYS, Errno};
use crate::gdt;
use crate::mm::VirtAddr;
use crate::proc;
use rt::arch::{self, wrmsr};

const IA32_EFER: u32 = 0xC000_0080;
const IA32_STAR: u32 = 0xC000_0081;
const IA32_LSTAR: u32 = 0xC000_0082;
const IA32_FMASK: u32 = 0xC000_0084;
const EFER_SCE: u64 = 1 << 0;
/// RFLAGS bits cleared on SYSCALL: TF, IF, DF, AC.
const FMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 18);

pub const SYS_EXIT: u64 = 0;
pub const SYS_WRITE: u64 = 1;
pub const SYS_FORK: u64 = 2;
pub const SYS_EXEC: u64 = 3;
pub const SYS_WAIT: u64 = 4;
pub const SYS_GETPID: u64 = 5;
pub const SYS_BRK: u64 = 6;
pub const SYS_MMAP: u64 = 7;
pub const SYS_MUNMAP: u64 = 8;
pub const SYS_MPROTECT: u64 = 9;
pub const SYS_YIELD: u64 = 10;

/// Enables SYSCALL/SYSRET.
pub fn init() {
    let star = (u64::from(gdt::SYSRET_BASE) << 48) | (u64::from(gdt::KERNEL_CS) << 32);
    // SAFETY: these MSRs exist on every long-mode processor; the selectors match the GDT and the
    // entry point is the kernel's SYSCALL entry.
    unsafe {
        wrmsr(IA32_STAR, star);
        wrmsr(IA32_LSTAR, crate::arch::syscall_entry());
        wrmsr(IA32_FMASK, FMASK);
        wrmsr(IA32_EFER, arch::rdmsr(IA32_EFER) | EFER_SCE);
    }
}

/// Entry from `arch`'s SYSCALL path; the result goes to the frame's RAX.
pub extern "C" fn syscall_dispatch(frame: &mut TrapFrame) {
    let (a0, a1, a2, a3) = (frame.rdi, frame.rsi, frame.rdx, frame.r10);
    let result: Result<u64, Errno> = match frame.rax {
        SYS_EXIT => proc::exit(a0 & 0xFFFF_FFFF),
        SYS_WRITE => write(VirtAddr::new(a0), a1),
        SYS_FORK => proc::fork(frame),
        SYS_EXEC => exec(frame, VirtAddr::new(a0), a1, VirtAddr::new(a2), a3),
        SYS_WAIT => wait((a0 != 0).then_some(VirtAddr::new(a0))),
        SYS_GETPID => Ok(u64::from(proc::current_pid())),
        SYS_BRK => Ok(proc::with_current_mm(|mm| mm.brk(a0))),
        SYS_MMAP => proc::with_current_mm(|mm| mm.mmap(a0, a1)),
        SYS_MUNMAP => proc::with_current_mm(|mm| mm.munmap(a0, a1)).map(|()| 0),
        SYS_MPROTECT => proc::with_current_mm(|mm| mm.mprotect(a0, a1, a2)).map(|()| 0),
        SYS_YIELD => {
            proc::yield_now();
            Ok(0)
        }
        _ => Err(ENOSYS),
    };
    frame.rax = result.unwrap_or_else(Errno::to_return);
}

/// write(2) to the console, copied in page-sized pieces.
fn write(buf: VirtAddr, len: u64) -> Result<u64, Errno> {
    let mut chunk = [0u8; 512];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u64) as usize;
        let at = VirtAddr::new(buf.as_u64().checked_add(done).ok_or(EFAULT)?);
        proc::with_current_mm(|mm| mm.copy_in(at, &mut chunk[..n]))?;
        rt::serial::write_bytes(&chunk[..n]);
        done += n as u64;
    }
    Ok(len)
}

fn exec(
    frame: &mut TrapFrame,
    name: VirtAddr,
    name_len: u64,
    args: VirtAddr,
    args_len: u64,
) -> Result<u64, Errno> {
    let mut name_buf = [0u8; 32];
    let mut args_buf = [0u8; proc::MAX_ARGS];
    let name_len = usize::try_from(name_len)
        .ok()
        .filter(|&n| n <= name_buf.len())
        .ok_or(EINVAL)?;
    let args_len = usize::try_from(args_len)
        .ok()
        .filter(|&n| n <= args_buf.len())
        .ok_or(EINVAL)?;
    proc::with_current_mm(|mm| {
        mm.copy_in(name, &mut name_buf[..name_len])?;
        mm.copy_in(args, &mut args_buf[..args_len])
    })?;
    let name = core::str::from_utf8(&name_buf[..name_len]).map_err(|_| EINVAL)?;
    proc::exec(frame, name, &args_buf[..args_len])?;
    Ok(0)
}

fn wait(status: Option<VirtAddr>) -> Result<u64, Errno> {
    let (pid, code) = proc::wait()?;
    if let Some(status) = status {
        // The child is reaped even if the pointer is bad, as in Linux.
        proc::with_current_mm(|mm| mm.copy_out(status, &code.to_le_bytes()))?;
    }
    Ok(u64::from(pid))
}
