//! Every instruction the runtime needs that Rust cannot express: the multiboot1 header and the
//! 32-bit entry stub that enters long mode, and thin wrappers around port I/O, CPUID, MSRs,
//! control registers, descriptor-table loads and TLB invalidation.
//!
//! The entry stub follows the SDM's recipe for entering IA-32e mode (Vol. 3A §10.8.5
//! "Initializing IA-32e Mode"): with paging off, load CR3 with a 4-level hierarchy (§4.5), set
//! CR4.PAE, set IA32_EFER.LME (and NXE when CPUID.80000001H:EDX.NX[20] says it exists), then set
//! CR0.PG, and far-return into a 64-bit code segment (§3.4.5, L bit). The early tables map the
//! first GiB twice with 2-MiB pages (§4.5.4, PS=1 in the PDE): at 0 (the stub runs there) and at
//! `KERNEL_VMA` (the top 2 GiB, where the kernel is linked).

use core::arch::{asm, global_asm};

/// Where the kernel is linked: physical address `p` of the image is at `KERNEL_VMA + p`.
pub const KERNEL_VMA: u64 = 0xFFFF_FFFF_8000_0000;

// Multiboot header (multiboot spec 3.1.1): flag 0 = page-align modules, flag 1 = memory
// information, flag 16 = the a.out-kludge address fields below are valid.
global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010003

    .section .multiboot, "a"
    .p2align 2
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long multiboot_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long _start

    .section .boot.text, "ax"
    .code32
    .global _start
_start:
    cli
    cld
    mov esp, offset boot_stack32_top
    mov edi, eax                  // multiboot magic, first argument of rt_start
    mov esi, ebx                  // multiboot information, second argument

    mov eax, 0x80000000           // is CPUID leaf 80000001H there, with LM[29]?
    cpuid
    cmp eax, 0x80000001
    jb .Lno_long_mode
    mov eax, 0x80000001
    cpuid
    bt edx, 29
    jnc .Lno_long_mode
    mov ebp, edx                  // keep NX[20] for EFER below

    // boot_pml4[0] -> boot_pdpt_low, boot_pml4[511] -> boot_pdpt_high
    mov eax, offset boot_pdpt_low
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pdpt_high
    or eax, 3
    mov dword ptr [boot_pml4 + 511 * 8], eax
    // boot_pdpt_low[0] and boot_pdpt_high[510] -> boot_pd (the first GiB)
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt_low], eax
    mov dword ptr [boot_pdpt_high + 510 * 8], eax
    // boot_pd[i] = i * 2 MiB | PS | RW | P
    xor ecx, ecx
    mov eax, 0x83
.Lfill_pd:
    mov dword ptr [boot_pd + ecx * 8], eax
    add eax, 0x200000
    inc ecx
    cmp ecx, 512
    jne .Lfill_pd

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                  // CR4.PAE
    mov cr4, eax
    mov ecx, 0xC0000080           // IA32_EFER
    rdmsr
    or eax, 0x100                 // LME
    bt ebp, 20
    jnc .Lno_nx
    or eax, 0x800                 // NXE
.Lno_nx:
    wrmsr
    mov eax, cr0
    or eax, 0x80010001            // PG | WP | PE
    mov cr0, eax

    lgdt [boot_gdtr]
    mov ecx, 0x08                 // far return to boot64 in the 64-bit code segment
    push ecx
    mov eax, offset boot64
    push eax
    retf

.Lno_long_mode:
    mov al, 3                     // debug exit with the panic status
    out 0xF4, al
.Lhang32:
    hlt
    jmp .Lhang32

    .code64
boot64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    movabs rax, offset rt_high_entry
    jmp rax

    .section .boot.data, "aw"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF      // 0x08: 64-bit code, DPL 0
    .quad 0x00CF92000000FFFF      // 0x10: data, DPL 0
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .p2align 4
boot_stack32:
    .skip 64
boot_stack32_top:
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4096

    .section .text.rt_high_entry, "ax"
    .global rt_high_entry
rt_high_entry:
    lea rsp, [rip + {stack} + {stack_size}]
    xor ebp, ebp
    call {start}
    ud2

    .section .text
"#,
    stack = sym crate::BOOT_STACK,
    stack_size = const crate::BOOT_STACK_SIZE,
    start = sym crate::rt_start,
);

/// Reads a byte from an I/O port.
///
/// # Safety
/// Port reads can have device side effects; the caller owns the device.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees the access is sound for its device.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Port writes can have device side effects; the caller owns the device.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the access is sound for its device.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// The four registers CPUID returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf` and `subleaf` (SDM Vol. 2A, CPUID).
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU, or RDMSR raises #GP.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The write changes processor behaviour; the caller answers for the value's consequences.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is sound.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Reads CR0.
#[inline]
pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// Changes paging and protection; the caller answers for the new mode.
#[inline]
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller guarantees the new value keeps the machine consistent.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR2, the page-fault linear address.
#[inline]
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR2 (a hypervisor gives its guest the address of a page fault it injects).
///
/// # Safety
/// CPL 0; a page-fault handler that reads CR2 later sees this value.
#[inline]
pub unsafe fn write_cr2(v: u64) {
    // SAFETY: the caller runs at CPL 0; CR2 only informs page-fault handlers.
    unsafe { asm!("mov cr2, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// Reads CR3.
#[inline]
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR3 (SDM Vol. 3A §4.10.4.1: with CR4.PCIDE=1, bit 63 set keeps the PCID's TLB entries).
///
/// # Safety
/// `v` must point at a page-table hierarchy that maps the running code, stack and data.
#[inline]
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller guarantees the new hierarchy maps everything in use.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR4.
#[inline]
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR4.
///
/// # Safety
/// Changes paging features; the caller answers for the new mode.
#[inline]
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller guarantees the new value is valid here.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Invalidates the TLB entries for the page containing `va` in the current PCID, and global
/// entries for it (SDM Vol. 3A §4.10.4.1, INVLPG).
#[inline]
pub fn invlpg(va: u64) {
    // SAFETY: dropping cached translations never breaks memory safety.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// A pseudo-descriptor for LGDT/LIDT (SDM Vol. 3A §3.5.1, Figure 3-11).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct DescriptorTablePointer {
    pub limit: u16,
    pub base: u64,
}

/// Loads the GDTR and reloads CS (far return) and the data segment registers.
///
/// # Safety
/// The table must stay alive and valid, with a 64-bit code segment at `code` and a data segment
/// at `data`.
pub unsafe fn load_gdt(ptr: &DescriptorTablePointer, code: u16, data: u16) {
    // SAFETY: the caller guarantees the table and selectors are valid.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            ptr = in(reg) ptr,
            code = in(reg) u64::from(code),
            data = in(reg) u64::from(data),
            tmp = out(reg) _,
        )
    };
}

/// Loads the IDTR.
///
/// # Safety
/// The table must stay alive and hold valid gates.
pub unsafe fn load_idt(ptr: &DescriptorTablePointer) {
    // SAFETY: the caller guarantees the table is valid and lives forever.
    unsafe { asm!("lidt [{}]", in(reg) ptr, options(nostack, preserves_flags)) };
}

/// Loads the task register.
///
/// # Safety
/// `selector` must name an available 64-bit TSS descriptor in the current GDT.
pub unsafe fn load_tr(selector: u16) {
    // SAFETY: the caller guarantees the descriptor is a valid available TSS.
    unsafe { asm!("ltr {:x}", in(reg) selector, options(nostack, preserves_flags)) };
}

/// Enables maskable interrupts.
///
/// # Safety
/// Handlers for every interrupt that can arrive must be installed.
#[inline]
pub unsafe fn enable_interrupts() {
    // SAFETY: the caller guarantees the IDT is ready.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Disables maskable interrupts.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Halts with interrupts disabled, forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT only stops the processor.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
