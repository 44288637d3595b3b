//! What happens on an exception: the handler records it (vector, error code, CR2, the saved
//! RIP, CS, RSP and where the frame was pushed) and, when a probe is active
//! ([`crate::arch::probe`]), resumes the probe at ring 0 on the probe's stack; otherwise the
//! exception was not expected and the program ends with [`rt::EXIT_PANIC`]. SDM Vol. 3A §7.14
//! (64-bit exception handling, stack frame, IST), §7.15 (exception reference), §5.7 (CR2).

use crate::arch::{self, PROBE_RSP, TrapFrame};
use crate::desc::{KERNEL_CS, KERNEL_DS};
use core::cell::Cell;
use core::sync::atomic::Ordering;
use rt::println;

/// Page-fault vector.
pub const PAGE_FAULT: u64 = 14;

/// One exception as the handler saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trap {
    pub vector: u64,
    pub error: u64,
    /// CR2 as read by the handler (meaningful for #PF).
    pub cr2: u64,
    /// RIP, CS, RFLAGS, RSP and SS saved by the processor.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    /// Where the processor pushed the frame (the address of the saved RIP's slot minus the
    /// error code): tells which stack the delivery used.
    pub frame_at: u64,
    /// RAX of the interrupted context (ring-3 code passes values back in it).
    pub rax: u64,
}

struct LastTrap(Cell<Option<Trap>>);

// SAFETY: one CPU; the handler and the program never run at the same time.
unsafe impl Sync for LastTrap {}

static LAST: LastTrap = LastTrap(Cell::new(None));

/// Called by the entry stubs with the saved frame.
pub(crate) extern "C" fn dispatch(frame: &mut TrapFrame) {
    let trap = Trap {
        vector: frame.vector,
        error: frame.error,
        cr2: rt::arch::read_cr2(),
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        frame_at: &raw const frame.error as u64,
        rax: frame.rax,
    };
    LAST.0.set(Some(trap));
    let resume_rsp = PROBE_RSP.swap(0, Ordering::Relaxed);
    if resume_rsp == 0 {
        println!(
            "unexpected exception: vector={} error={:#x} rip={:#x} cr2={:#x}",
            trap.vector, trap.error, trap.rip, trap.cr2
        );
        rt::exit(rt::EXIT_PANIC);
    }
    frame.rip = arch::probe_resume();
    frame.cs = u64::from(KERNEL_CS);
    frame.ss = u64::from(KERNEL_DS);
    frame.rsp = resume_rsp;
    // Reserved bit 1 only: IF, TF, DF, AC and IOPL cleared in the resumed ring-0 code.
    frame.rflags = 0x2;
}

/// Runs `code(arg)` and returns the exception that interrupted it, or `None` if it returned.
///
/// # Safety
/// As [`arch::probe`].
pub unsafe fn probe(code: unsafe extern "C" fn(u64), arg: u64) -> Option<Trap> {
    LAST.0.set(None);
    // SAFETY: forwarded to the caller.
    if unsafe { arch::probe(code, arg) } {
        LAST.0.get()
    } else {
        None
    }
}

/// The mnemonic of an exception vector.
pub fn mnemonic(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        0x80 => "int80",
        _ => "vector",
    }
}
