//! The assembly of cpu-paging-legacy: the way out of long mode into 32-bit protected mode and
//! back, and a small 32-bit interpreter that runs a list of [`Op`]s there, recording what each
//! one read or which exception interrupted it. The only file of this program with assembly.
//!
//! - Out (SDM Vol. 3A §10.8.5.4 "Switching Out of IA-32e Mode Operation"): load a GDT whose
//!   base is a physical address, far-return into a 32-bit code segment (compatibility mode) at
//!   the code's physical address (the first GiB is identity-mapped in long mode), clear CR0.PG
//!   (IA32_EFER.LMA goes to 0), clear IA32_EFER.LME, load a 32-bit IDT (§7.11, 8-byte gates).
//!   The [`Op`]s then load IA32_EFER, CR4, CR3 and CR0 to enable 32-bit or PAE paging.
//! - Back (§10.8.5 "Initializing IA-32e Mode"): clear CR0.PG, load the long-mode CR4 (PAE),
//!   CR3 (the 4-level hierarchy) and IA32_EFER (LME), set CR0.PG (compatibility mode), far-return
//!   into the 64-bit code segment, jump to the kernel mapping, restore the GDTR, IDTR and RSP
//!   and return to the caller.
//! - Exceptions in 32-bit mode (§7.12.1, 32-bit interrupt gates, same privilege level: no stack
//!   switch): each vector's stub pushes its number; the common handler records the vector, the
//!   error code (vectors 8, 10–14, 17) and CR2 in the current op, resets ESP and goes on with
//!   the next op. Nothing returns through IRET: the interpreter keeps no state on the stack.
//!
//! Everything the 32-bit code touches is addressed through the [`Context`] whose physical
//! address is in EBP, and the code itself is position-independent: it runs at the physical
//! address of this image's code, below the kernel mapping it is linked at.

use core::arch::global_asm;
use core::mem::offset_of;

/// End of the op list.
pub const OP_END: u32 = 0;
/// `out = [addr]` (a 32-bit load).
pub const OP_READ: u32 = 1;
/// `[addr] = value` (a 32-bit store).
pub const OP_WRITE: u32 = 2;
/// `call addr`: an instruction fetch (the page holds RET).
pub const OP_EXEC: u32 = 3;
/// `invlpg [addr]`.
pub const OP_INVLPG: u32 = 4;
/// `mov cr0, addr`.
pub const OP_CR0: u32 = 5;
/// `mov cr3, addr`.
pub const OP_CR3: u32 = 6;
/// `mov cr4, addr`.
pub const OP_CR4: u32 = 7;
/// `wrmsr IA32_EFER, addr` (bits 63:32 zero).
pub const OP_EFER: u32 = 8;

/// One step of the 32-bit interpreter and what came of it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Op {
    /// `OP_*`.
    pub kind: u32,
    /// The linear address, or the value of a control register or IA32_EFER.
    pub addr: u32,
    /// The value an [`OP_WRITE`] stores.
    pub value: u32,
    /// Out: what an [`OP_READ`] loaded.
    pub out: u32,
    /// Out: 1 when an exception interrupted the op.
    pub faulted: u32,
    /// Out: its vector, error code (0 for vectors without one) and CR2.
    pub vector: u32,
    pub error: u32,
    pub cr2: u32,
}

impl Op {
    pub const END: Op = Op {
        kind: OP_END,
        addr: 0,
        value: 0,
        out: 0,
        faulted: 0,
        vector: 0,
        error: 0,
        cr2: 0,
    };
}

const OP_SIZE: usize = size_of::<Op>();
const _: () = assert!(OP_SIZE == 32);

/// An LGDT/LIDT operand (SDM Vol. 3A Figure 3-11) padded so that the base is 8-byte aligned:
/// the operand is at `limit`. Read as a 6-byte operand in 32-bit mode, as a 10-byte one in
/// 64-bit mode; a base below 4 GiB means the same in both.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Pseudo {
    _pad: [u16; 3],
    pub limit: u16,
    pub base: u64,
}

impl Pseudo {
    pub const ZERO: Pseudo = Pseudo::new(0, 0);

    pub const fn new(limit: u16, base: u64) -> Pseudo {
        Pseudo {
            _pad: [0; 3],
            limit,
            base,
        }
    }
}

/// What the switch needs. Physical addresses are below 4 GiB (the image is in the first GiB).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The GDT used during the switch: null, 64-bit code at [`CODE64`], data at [`DATA`],
    /// 32-bit code at [`CODE32`]; its base is physical.
    pub gdtr: Pseudo,
    /// The 32-bit IDT; its base is physical.
    pub idtr: Pseudo,
    /// Saved by the 64-bit entry, restored on the way back.
    pub saved_gdtr: Pseudo,
    pub saved_idtr: Pseudo,
    pub saved_rsp: u64,
    /// The long-mode values loaded on the way back: CR0, CR3, CR4, IA32_EFER (LMA clear).
    pub long_cr0: u64,
    pub long_cr3: u64,
    pub long_cr4: u64,
    pub long_efer: u64,
    /// Physical addresses: the first op, the top of the 32-bit stack, the 32-bit entry and the
    /// 64-bit re-entry.
    pub ops: u32,
    pub stack_top: u32,
    pub entry32: u32,
    pub back64: u32,
}

impl Context {
    pub const ZERO: Context = Context {
        gdtr: Pseudo::ZERO,
        idtr: Pseudo::ZERO,
        saved_gdtr: Pseudo::ZERO,
        saved_idtr: Pseudo::ZERO,
        saved_rsp: 0,
        long_cr0: 0,
        long_cr3: 0,
        long_cr4: 0,
        long_efer: 0,
        ops: 0,
        stack_top: 0,
        entry32: 0,
        back64: 0,
    };
}

/// Selectors of the switch's GDT: the 64-bit code and data ones are those of `cputests::desc`,
/// so the segment registers mean the same before and after.
pub const CODE64: u16 = 0x08;
pub const DATA: u16 = 0x10;
pub const CODE32: u16 = 0x18;

/// Distance between the 32-bit exception stubs.
pub const STUB_SIZE: u64 = 16;

/// IA32_EFER.LME.
const EFER_LME: u32 = 1 << 8;
/// CR0.PG.
const CR0_PG: u32 = 1 << 31;
const IA32_EFER: u32 = 0xC000_0080;

global_asm!(
    r#"
    .pushsection .text.paging_legacy, "ax"
    .code64

    // paging_legacy_run(context: *mut Context, context_phys: u64): RDI and RSI.
    .global paging_legacy_run
paging_legacy_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rdi + {saved_rsp}], rsp
    sgdt [rdi + {saved_gdtr}]
    sidt [rdi + {saved_idtr}]
    mov rbp, rsi
    lgdt [rdi + {gdtr}]
    push {code32}
    mov eax, [rdi + {entry32}]
    push rax
    retfq

    .code32
    // Compatibility mode at the physical address, paging still on (identity-mapped).
    .global paging_legacy_entry32
paging_legacy_entry32:
    mov ax, {data}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, [ebp + {stack_top}]
    mov eax, cr0
    and eax, {cr0_no_pg}
    mov cr0, eax                    // out of IA-32e mode: LMA = 0
    mov ecx, {efer}
    rdmsr
    and eax, {efer_no_lme}
    wrmsr
    lidt [ebp + {idtr}]
    mov esi, [ebp + {ops}]

.Lpl_next:
    mov eax, [esi + {kind}]
    cmp eax, {op_end}
    je .Lpl_done
    cmp eax, {op_read}
    jne .Lpl_not_read
    mov edx, [esi + {addr}]
    mov eax, [edx]
    mov [esi + {out}], eax
    jmp .Lpl_advance
.Lpl_not_read:
    cmp eax, {op_write}
    jne .Lpl_not_write
    mov edx, [esi + {addr}]
    mov eax, [esi + {value}]
    mov [edx], eax
    jmp .Lpl_advance
.Lpl_not_write:
    cmp eax, {op_exec}
    jne .Lpl_not_exec
    mov edx, [esi + {addr}]
    call edx
    jmp .Lpl_advance
.Lpl_not_exec:
    cmp eax, {op_invlpg}
    jne .Lpl_not_invlpg
    mov edx, [esi + {addr}]
    invlpg [edx]
    jmp .Lpl_advance
.Lpl_not_invlpg:
    mov edx, [esi + {addr}]
    cmp eax, {op_cr0}
    jne .Lpl_not_cr0
    mov cr0, edx
    jmp .Lpl_advance
.Lpl_not_cr0:
    cmp eax, {op_cr3}
    jne .Lpl_not_cr3
    mov cr3, edx
    jmp .Lpl_advance
.Lpl_not_cr3:
    cmp eax, {op_cr4}
    jne .Lpl_not_cr4
    mov cr4, edx
    jmp .Lpl_advance
.Lpl_not_cr4:
    cmp eax, {op_efer}
    jne .Lpl_advance                // unknown ops do nothing
    mov ecx, {efer}
    mov eax, edx
    xor edx, edx
    wrmsr
.Lpl_advance:
    add esi, {op_size}
    jmp .Lpl_next

    // The exception stubs, one per vector, STUB_SIZE bytes apart.
    .p2align 4
    .global paging_legacy_stubs
paging_legacy_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .p2align 4
    push \v
    jmp .Lpl_trap
    .endr

    // [ESP] = vector, [ESP + 4] = the error code for the vectors that push one.
.Lpl_trap:
    mov eax, [esp]
    mov dword ptr [esi + {faulted}], 1
    mov [esi + {vector}], eax
    xor edx, edx
    cmp eax, 8
    je .Lpl_error_code
    cmp eax, 17
    je .Lpl_error_code
    cmp eax, 10
    jb .Lpl_no_error_code
    cmp eax, 14
    ja .Lpl_no_error_code
.Lpl_error_code:
    mov edx, [esp + 4]
.Lpl_no_error_code:
    mov [esi + {error}], edx
    mov eax, cr2
    mov [esi + {cr2}], eax
    mov esp, [ebp + {stack_top}]
    jmp .Lpl_advance

.Lpl_done:
    mov eax, cr0
    and eax, {cr0_no_pg}
    mov cr0, eax
    mov eax, [ebp + {long_cr4}]
    mov cr4, eax
    mov eax, [ebp + {long_cr3}]
    mov cr3, eax
    mov ecx, {efer}
    mov eax, [ebp + {long_efer}]
    mov edx, [ebp + {long_efer} + 4]
    wrmsr
    mov eax, [ebp + {long_cr0}]
    mov cr0, eax                    // IA-32e mode again, in compatibility mode
    push {code64}
    push dword ptr [ebp + {back64}]
    retf

    .code64
    // 64-bit mode at the physical address: on to the kernel mapping.
    .global paging_legacy_back64
paging_legacy_back64:
    movabs rax, offset .Lpl_high
    jmp rax
.Lpl_high:
    mov ebp, ebp                    // bits 63:32 are undefined after 32-bit code
    movabs rdi, {vma}
    add rdi, rbp
    lgdt [rdi + {saved_gdtr}]
    lidt [rdi + {saved_idtr}]
    mov rsp, [rdi + {saved_rsp}]
    mov ax, {data}
    mov ds, ax
    mov es, ax
    mov ss, ax
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .popsection
"#,
    saved_rsp = const offset_of!(Context, saved_rsp),
    saved_gdtr = const offset_of!(Context, saved_gdtr) + 6,
    saved_idtr = const offset_of!(Context, saved_idtr) + 6,
    gdtr = const offset_of!(Context, gdtr) + 6,
    idtr = const offset_of!(Context, idtr) + 6,
    long_cr0 = const offset_of!(Context, long_cr0),
    long_cr3 = const offset_of!(Context, long_cr3),
    long_cr4 = const offset_of!(Context, long_cr4),
    long_efer = const offset_of!(Context, long_efer),
    ops = const offset_of!(Context, ops),
    stack_top = const offset_of!(Context, stack_top),
    entry32 = const offset_of!(Context, entry32),
    back64 = const offset_of!(Context, back64),
    kind = const offset_of!(Op, kind),
    addr = const offset_of!(Op, addr),
    value = const offset_of!(Op, value),
    out = const offset_of!(Op, out),
    faulted = const offset_of!(Op, faulted),
    vector = const offset_of!(Op, vector),
    error = const offset_of!(Op, error),
    cr2 = const offset_of!(Op, cr2),
    op_size = const OP_SIZE,
    op_end = const OP_END,
    op_read = const OP_READ,
    op_write = const OP_WRITE,
    op_exec = const OP_EXEC,
    op_invlpg = const OP_INVLPG,
    op_cr0 = const OP_CR0,
    op_cr3 = const OP_CR3,
    op_cr4 = const OP_CR4,
    op_efer = const OP_EFER,
    code32 = const CODE32,
    code64 = const CODE64,
    data = const DATA,
    cr0_no_pg = const !CR0_PG,
    efer_no_lme = const !EFER_LME,
    efer = const IA32_EFER,
    vma = const rt::arch::KERNEL_VMA,
);

unsafe extern "C" {
    static paging_legacy_entry32: u8;
    static paging_legacy_back64: u8;
    static paging_legacy_stubs: u8;
    fn paging_legacy_run(context: *mut Context, context_phys: u64);
}

/// The kernel-mapping addresses of the 32-bit entry, the 64-bit re-entry and the first
/// exception stub.
pub fn labels() -> (u64, u64, u64) {
    (
        &raw const paging_legacy_entry32 as u64,
        &raw const paging_legacy_back64 as u64,
        &raw const paging_legacy_stubs as u64,
    )
}

/// Leaves long mode, runs the ops of `context` in 32-bit protected mode and comes back.
///
/// # Safety
/// `context` must be filled in as [`Context`] says, at physical address `context_phys`, with
/// a GDT, an IDT and a stack that the first GiB's identity mapping reaches; every op must keep
/// the interpreter's code, stack, context, ops and tables mapped (or fault into its handler).
/// Interrupts must be disabled.
pub unsafe fn run(context: *mut Context, context_phys: u64) {
    // SAFETY: forwarded to the caller; the routine preserves the callee-saved registers and
    // comes back on the same stack with the same GDTR and IDTR.
    unsafe { paging_legacy_run(context, context_phys) }
}
