//! The user programs' only assembly: the SYSCALL instruction (SDM Vol. 2B) with guest-os's
//! register convention (number in RAX, arguments in RDI, RSI, RDX, R10; RCX and R11 are
//! clobbered by SYSCALL/SYSRET), and the deliberate faults of the `fault` program.

use core::arch::asm;

/// Issues system call `nr` with up to four arguments.
///
/// # Safety
/// Pointer arguments must be valid for what the call does with them.
#[inline]
pub unsafe fn syscall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: the kernel preserves every register except RAX (result), RCX and R11; memory
    // effects are the caller's responsibility.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// Writes to virtual address 0 (nothing is mapped there): #PF, not present.
pub fn write_null() {
    // SAFETY: deliberately faults; the kernel kills the process before the store completes.
    unsafe { asm!("mov qword ptr [{}], 1", in(reg) 0u64, options(nostack)) };
}

/// Reads the kernel's image (a supervisor page): #PF, protection violation.
pub fn read_kernel() {
    // SAFETY: deliberately faults, as above.
    unsafe {
        asm!("mov {0}, qword ptr [{0}]", inout(reg) 0xFFFF_FFFF_8010_0000u64 => _, options(nostack))
    };
}

/// Writes to the program's own code (a read-only region): #PF, protection violation.
pub fn write_text() {
    // SAFETY: deliberately faults, as above.
    unsafe { asm!("lea {0}, [rip]", "mov byte ptr [{0}], 0", out(reg) _, options(nostack)) };
}

/// Executes UD2: #UD.
pub fn undefined_opcode() {
    // SAFETY: deliberately faults, as above.
    unsafe { asm!("ud2", options(nostack)) };
}

/// Executes CLI at CPL 3 with IOPL 0: #GP(0).
pub fn privileged() {
    // SAFETY: deliberately faults, as above.
    unsafe { asm!("cli", options(nostack)) };
}

/// Divides by zero: #DE.
pub fn divide_by_zero() {
    // SAFETY: deliberately faults, as above.
    unsafe {
        asm!("xor edx, edx", "div {0}", in(reg) 0u64, inout("rax") 1u64 => _, out("rdx") _, options(nostack))
    };
}
