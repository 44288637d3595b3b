//! The VMX instructions and the few other privileged instructions the VMX programs need, as
//! typed wrappers: each VMX instruction returns its [`Outcome`], decoded from RFLAGS as SDM Vol.
//! 3C §31.2 "Conventions" defines it (VMsucceed: CF = ZF = 0; VMfailInvalid: CF = 1;
//! VMfailValid: ZF = 1, the error number in the VM-instruction error field), and the world
//! switch that enters a guest and comes back at the host RIP with the guest's general registers
//! saved (modeled on kvm-unit-tests x86/vmx.c `vmx_run`/`vmx_enter_guest`). This file holds all
//! the inline assembly of the VMX library.

use super::fields::{HOST_RSP, VM_INSTRUCTION_ERROR};
use core::arch::{asm, global_asm};
use core::fmt;

/// RFLAGS.CF.
const CF: u64 = 1 << 0;
/// RFLAGS.ZF.
const ZF: u64 = 1 << 6;

/// The outcome of a VMX instruction (§31.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// VMsucceed: CF = PF = AF = ZF = SF = OF = 0.
    Succeed,
    /// VMfailInvalid: CF = 1 (no current VMCS to hold an error number).
    FailInvalid,
    /// VMfailValid(n): ZF = 1, VM-instruction error field = n.
    FailValid(u32),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Succeed => f.write_str("VMsucceed"),
            Outcome::FailInvalid => f.write_str("VMfailInvalid"),
            Outcome::FailValid(n) => write!(f, "VMfailValid({n})"),
        }
    }
}

impl Outcome {
    /// Decodes RFLAGS after a VMX instruction; for VMfailValid reads the error field.
    pub fn from_rflags(rflags: u64) -> Outcome {
        if rflags & CF != 0 {
            Outcome::FailInvalid
        } else if rflags & ZF != 0 {
            Outcome::FailValid(vmread(VM_INSTRUCTION_ERROR).unwrap_or(u64::MAX) as u32)
        } else {
            Outcome::Succeed
        }
    }

    /// A compact code for printing and comparing: 0 succeed, 0x100 fail-invalid, n fail-valid.
    pub fn code(self) -> u64 {
        match self {
            Outcome::Succeed => 0,
            Outcome::FailInvalid => 0x100,
            Outcome::FailValid(n) => u64::from(n),
        }
    }
}

/// VMXON with the region at physical address `pa`.
pub fn vmxon(pa: u64) -> Outcome {
    let rflags: u64;
    // SAFETY: VMXON reads 8 bytes at `&pa` and enters VMX root operation; its faults (#UD,
    // #GP) are the caller's to expect under a probe.
    unsafe { asm!("vmxon [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = out(reg) rflags) };
    Outcome::from_rflags(rflags)
}

/// VMXOFF.
pub fn vmxoff() -> Outcome {
    let rflags: u64;
    // SAFETY: VMXOFF leaves VMX operation; it touches no memory of the program.
    unsafe { asm!("vmxoff", "pushfq", "pop {f}", f = out(reg) rflags) };
    Outcome::from_rflags(rflags)
}

/// VMCLEAR of the region at `pa`.
pub fn vmclear(pa: u64) -> Outcome {
    let rflags: u64;
    // SAFETY: VMCLEAR reads the pointer at `&pa` and writes only the region the caller owns.
    unsafe { asm!("vmclear [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = out(reg) rflags) };
    Outcome::from_rflags(rflags)
}

/// VMPTRLD of the region at `pa`.
pub fn vmptrld(pa: u64) -> Outcome {
    let rflags: u64;
    // SAFETY: VMPTRLD reads the pointer at `&pa` and the region the caller owns.
    unsafe { asm!("vmptrld [{p}]", "pushfq", "pop {f}", p = in(reg) &pa, f = out(reg) rflags) };
    Outcome::from_rflags(rflags)
}

/// VMPTRST: the current-VMCS pointer.
pub fn vmptrst() -> (Outcome, u64) {
    let mut pa: u64 = 0;
    let rflags: u64;
    // SAFETY: VMPTRST writes 8 bytes at `&mut pa`.
    unsafe { asm!("vmptrst [{p}]", "pushfq", "pop {f}", p = in(reg) &mut pa, f = out(reg) rflags) };
    (Outcome::from_rflags(rflags), pa)
}

/// VMREAD of `field` with a register destination; `Err` with the outcome on failure.
pub fn vmread(field: u32) -> Result<u64, Outcome> {
    vmread64(u64::from(field))
}

/// VMREAD with a full 64-bit encoding operand (bits 63:32 must be 0, §31.3 VMREAD).
pub fn vmread64(field: u64) -> Result<u64, Outcome> {
    let value: u64;
    let rflags: u64;
    // SAFETY: VMREAD with register operands touches no memory.
    unsafe {
        asm!("vmread {v}, {e}", "pushfq", "pop {f}", v = out(reg) value, e = in(reg) field,
             f = out(reg) rflags)
    };
    if rflags & (CF | ZF) == 0 {
        Ok(value)
    } else if rflags & CF != 0 {
        Err(Outcome::FailInvalid)
    } else {
        // Reading the error field cannot recurse: it exists whenever ZF can be set.
        let mut error: u64 = u64::MAX;
        // SAFETY: as above.
        unsafe {
            asm!("vmread {v}, {e}", v = out(reg) error, e = in(reg) u64::from(VM_INSTRUCTION_ERROR))
        };
        Err(Outcome::FailValid(error as u32))
    }
}

/// VMWRITE of `value` to `field`.
pub fn vmwrite(field: u32, value: u64) -> Outcome {
    vmwrite64(u64::from(field), value)
}

/// VMWRITE with a full 64-bit encoding operand.
pub fn vmwrite64(field: u64, value: u64) -> Outcome {
    let rflags: u64;
    // SAFETY: VMWRITE with register operands touches no memory of the program.
    unsafe {
        asm!("vmwrite {e}, {v}", "pushfq", "pop {f}", e = in(reg) field, v = in(reg) value,
             f = out(reg) rflags)
    };
    Outcome::from_rflags(rflags)
}

/// VMCALL (in root operation: VMfailValid(1) or VMfailInvalid, §31.3 VMCALL).
pub fn vmcall() -> Outcome {
    let rflags: u64;
    // SAFETY: VMCALL in root operation only sets RFLAGS and the error field.
    unsafe { asm!("vmcall", "pushfq", "pop {f}", f = out(reg) rflags) };
    Outcome::from_rflags(rflags)
}

/// MOV SS, then VMLAUNCH (VMRESUME when `resume`) in the MOV-SS shadow: VMfailValid(26) when a
/// current VMCS exists (§31.3 VMLAUNCH/VMRESUME). Never enters a guest: the check comes before
/// any VM-entry check.
pub fn launch_after_mov_ss(resume: bool) -> Outcome {
    let rflags: u64;
    // SAFETY: MOV SS reloads SS with its own selector; VMLAUNCH/VMRESUME fail before entry
    // (events are blocked by MOV SS), so control continues here.
    unsafe {
        asm!(
            "mov {s:x}, ss",
            "test {r}, {r}",
            "jnz 2f",
            "mov ss, {s:x}",
            "vmlaunch",
            "jmp 3f",
            "2:",
            "mov ss, {s:x}",
            "vmresume",
            "3:",
            "pushfq",
            "pop {f}",
            s = out(reg) _,
            r = in(reg) u64::from(resume),
            f = out(reg) rflags,
        )
    };
    Outcome::from_rflags(rflags)
}

/// INVEPT of `kind` with descriptor `[eptp, reserved]`.
pub fn invept(kind: u64, descriptor: &[u64; 2]) -> Outcome {
    let rflags: u64;
    // SAFETY: INVEPT reads 16 bytes at `descriptor` and drops cached translations.
    unsafe {
        asm!("invept {t}, [{d}]", "pushfq", "pop {f}", t = in(reg) kind,
             d = in(reg) descriptor.as_ptr(), f = out(reg) rflags)
    };
    Outcome::from_rflags(rflags)
}

/// INVVPID of `kind` with descriptor `[vpid (bits 15:0), linear address]`.
pub fn invvpid(kind: u64, descriptor: &[u64; 2]) -> Outcome {
    let rflags: u64;
    // SAFETY: INVVPID reads 16 bytes at `descriptor` and drops cached translations.
    unsafe {
        asm!("invvpid {t}, [{d}]", "pushfq", "pop {f}", t = in(reg) kind,
             d = in(reg) descriptor.as_ptr(), f = out(reg) rflags)
    };
    Outcome::from_rflags(rflags)
}

/// The segment selectors CS, SS, DS, ES, FS, GS and TR.
pub fn selectors() -> [u16; 7] {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effect.
    unsafe {
        asm!(
            "mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es",
            "mov {4:x}, fs", "mov {5:x}, gs", "str {6:x}",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            out(reg) tr, options(nomem, nostack, preserves_flags)
        )
    };
    [cs, ss, ds, es, fs, gs, tr]
}

/// SGDT and SIDT: `(gdtr limit, gdtr base, idtr limit, idtr base)`.
pub fn descriptor_tables() -> (u16, u64, u16, u64) {
    let mut g = [0u8; 10];
    let mut i = [0u8; 10];
    // SAFETY: SGDT/SIDT write 10 bytes each into the buffers.
    unsafe {
        asm!("sgdt [{g}]", "sidt [{i}]", g = in(reg) g.as_mut_ptr(), i = in(reg) i.as_mut_ptr(),
             options(nostack, preserves_flags))
    };
    let limit = |b: &[u8; 10]| u16::from_le_bytes([b[0], b[1]]);
    let base = |b: &[u8; 10]| {
        let mut q = [0u8; 8];
        q.copy_from_slice(&b[2..10]);
        u64::from_le_bytes(q)
    };
    (limit(&g), base(&g), limit(&i), base(&i))
}

/// Loads GDTR and IDTR limits back to the given values (bases unchanged): after a VM exit they
/// are 0xFFFF (§28.5.2).
pub fn restore_descriptor_limits(gdtr_limit: u16, idtr_limit: u16) {
    let (_, gbase, _, ibase) = descriptor_tables();
    let mut g = [0u8; 10];
    let mut i = [0u8; 10];
    g[..2].copy_from_slice(&gdtr_limit.to_le_bytes());
    g[2..].copy_from_slice(&gbase.to_le_bytes());
    i[..2].copy_from_slice(&idtr_limit.to_le_bytes());
    i[2..].copy_from_slice(&ibase.to_le_bytes());
    // SAFETY: the same tables with their own limits.
    unsafe {
        asm!("lgdt [{g}]", "lidt [{i}]", g = in(reg) g.as_ptr(), i = in(reg) i.as_ptr(),
             options(nostack, preserves_flags))
    };
}

/// The limit of the segment `selector` names (LSL), `None` when LSL fails.
pub fn segment_limit(selector: u16) -> Option<u32> {
    let limit: u32;
    let ok: u8;
    // SAFETY: LSL only reads the descriptor table.
    unsafe {
        asm!("lsl {l:e}, {s:e}", "setz {ok}", l = out(reg) limit, s = in(reg) u32::from(selector),
             ok = out(reg_byte) ok, options(nostack))
    };
    (ok != 0).then_some(limit)
}

/// The guest's general registers (all but RSP, which the VMCS holds).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

const _: () = assert!(size_of::<GuestRegs>() == 15 * 8);

/// What RAX holds when the guest trampoline reports that the guest function returned.
pub const GUEST_DONE: u64 = 0x600D_600D_600D_600D;

global_asm!(
    r#"
    .section .text.cputests_vmx, "ax"
    // u64 cputests_vmx_enter(regs: *mut GuestRegs, resume: u64): writes HOST_RSP (HOST_RIP is
    // the VMCS's: cputests_vmx_host_rip unless a test put another value there),
    // loads the guest registers and executes VMLAUNCH (resume = 0) or VMRESUME. Returns 0 after
    // a VM exit (at the host RIP, guest registers saved into *regs) and RFLAGS | 1 << 63 when
    // the instruction failed (VMfailInvalid or VMfailValid).
    .global cputests_vmx_enter
cputests_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    test rsi, rsi
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    pushfq
    pop rax
    bts rax, 63
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

    // The host RIP: RSP = the HOST_RSP written above, whose slot holds the regs pointer.
    .global cputests_vmx_host_rip
cputests_vmx_host_rip:
    pushfq
    pop qword ptr [rip + {landed_rflags}]
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop rax
    mov [rdi + 40], rax
    // The RSP the exit loaded, for the host-state checks.
    mov [rip + {landed_rsp}], rsp
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret

    // The guest's first instruction: RDI = argument, RSI = function. When the function
    // returns, VMCALL with RAX = GUEST_DONE.
    .global cputests_vmx_guest_entry
cputests_vmx_guest_entry:
    call rsi
    mov rax, {done}
    vmcall
    ud2

    .section .text
"#,
    host_rsp = const HOST_RSP,
    landed_rflags = sym LANDED_RFLAGS,
    done = const GUEST_DONE,
    landed_rsp = sym LANDED_RSP,
);

/// RSP at the host RIP after the last VM exit (before the landing code popped anything).
pub static LANDED_RSP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// RFLAGS at the host RIP after the last VM exit (§28.5.3: all bits but bit 1 cleared).
pub static LANDED_RFLAGS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

unsafe extern "C" {
    fn cputests_vmx_enter(regs: *mut GuestRegs, resume: u64) -> u64;
    static cputests_vmx_host_rip: u8;
    static cputests_vmx_guest_entry: u8;
}

/// The host RIP every VMCS of the library uses.
pub fn host_rip() -> u64 {
    &raw const cputests_vmx_host_rip as u64
}

/// The guest trampoline: calls RSI with RDI, then VMCALL with RAX = [`GUEST_DONE`].
pub fn guest_entry() -> u64 {
    &raw const cputests_vmx_guest_entry as u64
}

/// VMLAUNCH (or VMRESUME) the current VMCS with `regs`: `Ok(())` after a VM exit (a VM-entry
/// failure exit included), `Err(outcome)` when the instruction failed.
///
/// # Safety
/// The current VMCS's guest must run code and memory the program vouches for; the host state
/// must be the program's own (as [`super::Vm::setup_host`] writes it).
pub unsafe fn enter(regs: &mut GuestRegs, resume: bool) -> Result<(), Outcome> {
    // SAFETY: forwarded to the caller; the assembly preserves the callee-saved registers.
    let r = unsafe { cputests_vmx_enter(regs, u64::from(resume)) };
    if r == 0 {
        Ok(())
    } else {
        Err(Outcome::from_rflags(r & !(1 << 63)))
    }
}

/// DR7.
pub fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: reading DR7 at CPL 0 has no side effect.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads DR7.
///
/// # Safety
/// Enabled breakpoints must not fire where the program does not expect them.
pub unsafe fn write_dr7(v: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov dr7, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// Loads SS with `selector` (after an exit that loaded a null host SS).
///
/// # Safety
/// `selector` must name a writable ring-0 data segment of the live GDT.
pub unsafe fn load_ss(selector: u16) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov ss, {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
}
