//! The register frame the images' interrupt, exception and system-call entry paths build on
//! the stack (SDM Vol. 3A "Exception and Interrupt Handling in 64-bit Mode": the processor
//! pushes SS, RSP, RFLAGS, CS, RIP and, for some vectors, an error code; the entry stub pushes
//! a zero error code where the processor does not, then the vector, then the general registers).
//! Every image lays its stubs out to match this one struct.

/// Registers of an interrupted or system-calling context, lowest address first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(size_of::<TrapFrame>() == 22 * 8);
