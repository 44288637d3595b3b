//! cpu-modes: privilege transitions in 64-bit mode and the instructions around them.
//!
//! - Ring 3 through IRETQ and through a far return (SDM Vol. 3A §7.14.4, Vol. 2A "IRET",
//!   Vol. 2B "RET"): CS and SS come from the popped selectors, and DS and ES, whose DPL 0 is
//!   below the new CPL, are loaded with null selectors.
//! - INT 0x80 from ring 3 through a DPL-3 interrupt gate (§7.12.1.1, §7.14.2): the processor
//!   switches to TSS.RSP0 and saves the ring-3 SS:RSP.
//! - SYSCALL/SYSRET (Vol. 2B "SYSCALL", "SYSRET"; Vol. 3A §6.8.8): RCX = the next RIP,
//!   R11 = RFLAGS, RFLAGS masked by IA32_FMASK, CS/SS from IA32_STAR, and back; DF set in ring
//!   3 is masked in the kernel and restored by SYSRET.
//! - SYSENTER/SYSEXIT in 64-bit mode (Vol. 2B "SYSENTER", "SYSEXIT"): CS, SS and RSP from the
//!   IA32_SYSENTER MSRs, and back to 64-bit ring 3 at IA32_SYSENTER_CS + 32 / + 40 with RIP =
//!   RDX and RSP = RCX.
//! - A same-privilege far return with an immediate (RETF 16) pops CS:RIP and drops the
//!   parameters.
//! - SWAPGS exchanges IA32_GS_BASE and IA32_KERNEL_GS_BASE (Vol. 2B "SWAPGS").
//! - RDTSC and RDTSCP are monotonic, RDTSCP returns IA32_TSC_AUX, and CR4.TSD makes RDTSC at
//!   ring 3 raise #GP(0) (Vol. 2B "RDTSC"). Only booleans are printed for the TSC.

#![no_std]
#![no_main]

mod asm;

use asm::*;
use cputests::arch::{UserContext, enter_user};
use cputests::desc::{
    self, KERNEL_CS, KERNEL_DS, SYSEXIT_CS, SYSEXIT_SS, SYSRET_BASE, USER_CS, USER_DS,
};
use cputests::out;
use cputests::paging::{self, AddressSpace, RW, SIZE_4K, US, XD};
use cputests::report::Report;
use cputests::trap::{self, Trap};
use rt::BootInfo;
use rt::arch::{rdmsr, read_cr4, write_cr4, wrmsr};

/// The test region: PML4 slot 3.
const BASE: u64 = 0x0000_0180_0000_0000;
const USER_CODE: u64 = BASE + 0x10_0000;
const USER_STACK: u64 = BASE + 0x20_0000;
const USER_STACK_TOP: u64 = USER_STACK + SIZE_4K;
const USER_DATA: u64 = BASE + 0x30_0000;

const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_EFER: u32 = 0xC000_0080;
const IA32_STAR: u32 = 0xC000_0081;
const IA32_LSTAR: u32 = 0xC000_0082;
const IA32_FMASK: u32 = 0xC000_0084;
const IA32_GS_BASE: u32 = 0xC000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
const IA32_TSC_AUX: u32 = 0xC000_0103;
/// EFER.SCE: SYSCALL/SYSRET enabled.
const EFER_SCE: u64 = 1 << 0;
/// RFLAGS bits the kernel entry must run without: TF, IF, DF, AC.
const FMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 18);
const RFLAGS_DF: u64 = 1 << 10;
/// CR4.TSD: RDTSC only at CPL 0.
const CR4_TSD: u64 = 1 << 2;
/// Round trips of the SYSCALL test.
const SYSCALLS: u64 = 5;

/// The ring-3 alias of a label in the user page.
fn user(label: *const u8) -> u64 {
    USER_CODE + label as u64 - &raw const user_page_start as u64
}

/// The user data page as ring 3 left it.
fn user_data() -> [u64; 5] {
    // SAFETY: USER_DATA is mapped to a pool frame (writable by ring 3, readable here).
    unsafe { (USER_DATA as *const [u64; 5]).read_volatile() }
}

fn clear_user_data() {
    // SAFETY: as above.
    unsafe { (USER_DATA as *mut [u64; 5]).write_volatile([0; 5]) };
}

/// Runs ring-3 code at `rip` entered by `how` (IRETQ or RETF); returns the trap that ended it.
fn run_user(how: unsafe extern "C" fn(u64), rip: u64, rsi: u64) -> Option<Trap> {
    clear_user_data();
    // A return to ring 3 nulls DS and ES (DPL 0 < CPL 3) and the way back does not reload
    // them: load the ring-0 data segment so every case starts the same.
    // SAFETY: KERNEL_DS is a valid ring-0 data segment.
    unsafe { modes_load_data_segments(u64::from(KERNEL_DS)) };
    let context = UserContext {
        rip,
        rsp: USER_STACK_TOP,
        rdi: USER_DATA,
        rsi,
    };
    // SAFETY: the context names mapped user code and stack; the probe is the way back.
    unsafe { trap::probe(how, &raw const context as u64) }
}

extern "C" fn far_return_to_user(context: u64) {
    // SAFETY: called inside a probe with a valid context, like `enter_user`.
    unsafe { modes_far_return_to_user(context) }
}

/// Ring 3 entered by `how`: selectors there, and how INT 0x80 came back.
fn enter_ring3(report: &mut Report, name: &str, how: unsafe extern "C" fn(u64)) {
    let Some(t) = run_user(how, user(&raw const user_identify), 0) else {
        report.check(format_args!("{name}: ring 3 never came back"), false);
        return;
    };
    let [cs, ss, ds, es, _] = user_data();
    let (bottom, top) = desc::stack(0);
    let on_rsp0 = (bottom..top).contains(&t.frame_at);
    out!(
        report,
        "{name}: ring3 cs={cs:#x} ss={ss:#x} ds={ds:#x} es={es:#x}; int 0x80: vector={:#x} saved cs={:#x} ss={:#x} rsp=top{:+} on-rsp0={}",
        t.vector,
        t.cs,
        t.ss,
        t.rsp as i64 - USER_STACK_TOP as i64,
        u8::from(on_rsp0),
    );
    report.expect_eq(format_args!("{name} cs"), cs, u64::from(USER_CS));
    report.expect_eq(format_args!("{name} ss"), ss, u64::from(USER_DS));
    report.expect_eq(format_args!("{name} ds nulled"), ds, 0);
    report.expect_eq(format_args!("{name} es nulled"), es, 0);
    report.expect_eq(format_args!("{name} gate vector"), t.vector, 0x80);
    report.expect_eq(format_args!("{name} saved cs"), t.cs, u64::from(USER_CS));
    report.expect_eq(format_args!("{name} saved ss"), t.ss, u64::from(USER_DS));
    report.expect_eq(format_args!("{name} saved rsp"), t.rsp, USER_STACK_TOP);
    report.check(format_args!("{name} frame on RSP0"), on_rsp0);
}

fn syscalls(report: &mut Report) {
    // SAFETY: enables SYSCALL with an entry that returns with SYSRET; CS/SS per desc's layout.
    unsafe {
        wrmsr(IA32_EFER, rdmsr(IA32_EFER) | EFER_SCE);
        wrmsr(
            IA32_STAR,
            (u64::from(SYSRET_BASE) << 48) | (u64::from(KERNEL_CS) << 32),
        );
        wrmsr(IA32_LSTAR, modes_syscall_entry as *const () as u64);
        wrmsr(IA32_FMASK, FMASK);
    }
    let t = run_user(enter_user, user(&raw const user_syscalls), SYSCALLS);
    let [rflags_after, cs_after, ss_after, _, _] = user_data();
    // SAFETY: the entry has finished; nothing else writes the record.
    let rec = unsafe { (&raw const SYSCALL_RECORD).read_volatile() };
    let next = user(&raw const user_syscall_next);
    out!(
        report,
        "syscall: calls={} kernel cs={:#x} ss={:#x} rcx=next{:+} r11.df={} kernel rflags.df={} \
         after sysret cs={cs_after:#x} ss={ss_after:#x} df={}",
        rec.count,
        rec.cs,
        rec.ss,
        rec.rcx as i64 - next as i64,
        u8::from(rec.r11 & RFLAGS_DF != 0),
        u8::from(rec.rflags & RFLAGS_DF != 0),
        u8::from(rflags_after & RFLAGS_DF != 0),
    );
    report.check(
        format_args!("syscall test ended with INT 0x80"),
        t.is_some_and(|t| t.vector == 0x80),
    );
    report.expect_eq(format_args!("syscall count"), rec.count, SYSCALLS);
    report.expect_eq(format_args!("syscall cs"), rec.cs, u64::from(KERNEL_CS));
    report.expect_eq(format_args!("syscall ss"), rec.ss, u64::from(KERNEL_DS));
    report.expect_eq(format_args!("syscall rcx"), rec.rcx, next);
    report.check(
        format_args!("syscall r11 holds DF"),
        rec.r11 & RFLAGS_DF != 0,
    );
    // RF is cleared too; bit 1 always reads 1.
    report.expect_eq(
        format_args!("syscall kernel rflags"),
        rec.rflags,
        rec.r11 & !FMASK & !(1 << 16) | 2,
    );
    report.expect_eq(format_args!("sysret cs"), cs_after, u64::from(USER_CS));
    report.expect_eq(format_args!("sysret ss"), ss_after, u64::from(USER_DS));
    report.check(
        format_args!("sysret restores DF from r11"),
        rflags_after & RFLAGS_DF != 0,
    );
}

/// The stack IA32_SYSENTER_ESP points at.
#[repr(C, align(16))]
struct SysenterStack([u8; 4096]);
static mut SYSENTER_STACK: SysenterStack = SysenterStack([0; 4096]);

/// SYSENTER from ring 3 and 64-bit SYSEXIT back (SDM Vol. 2B "SYSENTER", "SYSEXIT"; Vol. 3A
/// §6.8.7). In 64-bit mode SYSENTER is an Intel feature (CPUID.01H:EDX.SEP[11] with an Intel
/// processor); QEMU runs it with `vendor=GenuineIntel`.
fn sysenter(report: &mut Report) {
    if rt::arch::cpuid(1, 0).edx & (1 << 11) == 0 {
        out!(report, "sysenter: CPUID.01H:EDX.SEP[11] clear");
        return;
    }
    let stack_top = &raw const SYSENTER_STACK as u64 + size_of::<SysenterStack>() as u64;
    // SAFETY: the SYSENTER MSRs name the kernel code segment, a dedicated stack and an entry
    // that returns with SYSEXIT.
    unsafe {
        wrmsr(IA32_SYSENTER_CS, u64::from(KERNEL_CS));
        wrmsr(IA32_SYSENTER_ESP, stack_top);
        wrmsr(IA32_SYSENTER_EIP, modes_sysenter_entry as *const () as u64);
    }
    let t = run_user(enter_user, user(&raw const user_sysenter), 0);
    let [cs_after, ss_after, rsp_after, _, _] = user_data();
    // SAFETY: the entry has finished; nothing else writes the record.
    let rec = unsafe { (&raw const SYSENTER_RECORD).read_volatile() };
    out!(
        report,
        "sysenter: calls={} kernel cs={:#x} ss={:#x} rsp=esp{:+}; sysexit cs={cs_after:#x} ss={ss_after:#x} rsp=top{:+}",
        rec.count,
        rec.cs,
        rec.ss,
        rec.rsp as i64 - stack_top as i64,
        rsp_after as i64 - USER_STACK_TOP as i64,
    );
    report.check(
        format_args!("sysenter test ended with INT 0x80"),
        t.is_some_and(|t| t.vector == 0x80),
    );
    report.expect_eq(format_args!("sysenter count"), rec.count, 1);
    report.expect_eq(format_args!("sysenter cs"), rec.cs, u64::from(KERNEL_CS));
    report.expect_eq(format_args!("sysenter ss"), rec.ss, u64::from(KERNEL_DS));
    report.expect_eq(format_args!("sysenter rsp"), rec.rsp, stack_top);
    report.expect_eq(format_args!("sysexit cs"), cs_after, u64::from(SYSEXIT_CS));
    report.expect_eq(format_args!("sysexit ss"), ss_after, u64::from(SYSEXIT_SS));
    report.expect_eq(format_args!("sysexit rsp"), rsp_after, USER_STACK_TOP);
}

fn far_return(report: &mut Report) {
    // SAFETY: a far return to the next instruction in the same code segment.
    let r = unsafe { modes_far_return() };
    out!(
        report,
        "retf 16 (same privilege): cs={:#x} rsp-restored={}",
        r >> 8,
        r & 1
    );
    report.expect_eq(format_args!("retf 16"), r, (u64::from(KERNEL_CS) << 8) | 1);
}

fn swapgs(report: &mut Report) {
    static GS_USER: u64 = 0x5553_4552; // "USER"
    static GS_KERNEL: u64 = 0x4B45_524E; // "KERN"
    let (user_base, kernel_base) = (&raw const GS_USER as u64, &raw const GS_KERNEL as u64);
    // SAFETY: base MSRs pointing at statics; GS is not otherwise used by the program.
    unsafe {
        wrmsr(IA32_GS_BASE, user_base);
        wrmsr(IA32_KERNEL_GS_BASE, kernel_base);
    }
    // SAFETY: GS points at a static quadword either way.
    let (before, swapped, after) =
        unsafe { (modes_gs_read(), modes_swapgs_read(), modes_gs_read()) };
    // SAFETY: the MSRs exist on every 64-bit processor.
    let msrs = unsafe {
        (
            rdmsr(IA32_GS_BASE) == user_base,
            rdmsr(IA32_KERNEL_GS_BASE) == kernel_base,
        )
    };
    out!(
        report,
        "swapgs: gs:[0] before={before:#x} swapped={swapped:#x} swapped-back={after:#x} msrs-restored={}",
        u8::from(msrs.0 && msrs.1)
    );
    report.expect_eq(format_args!("gs before"), before, GS_USER);
    report.expect_eq(format_args!("gs after swapgs"), swapped, GS_KERNEL);
    report.expect_eq(format_args!("gs after swapping back"), after, GS_USER);
    report.check(
        format_args!("swapgs twice restores the MSRs"),
        msrs.0 && msrs.1,
    );
}

fn tsc(report: &mut Report) {
    let rdtscp_supported = rt::arch::cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
    let t0 = rdtsc();
    let t1 = rdtsc();
    let (t2, aux) = if rdtscp_supported {
        // SAFETY: IA32_TSC_AUX exists when RDTSCP does.
        unsafe { wrmsr(IA32_TSC_AUX, 0x1234) };
        rdtscp()
    } else {
        (rdtsc(), 0)
    };
    let t3 = rdtsc();
    let monotonic = t0 <= t1 && t1 <= t2 && t2 <= t3;
    out!(
        report,
        "tsc: monotonic={} rdtscp={} aux={aux:#x}",
        u8::from(monotonic),
        u8::from(rdtscp_supported)
    );
    report.check(format_args!("rdtsc/rdtscp monotonic"), monotonic);
    if rdtscp_supported {
        report.expect_eq(format_args!("rdtscp aux"), u64::from(aux), 0x1234);
    }

    let allowed = run_user(enter_user, user(&raw const user_rdtsc), 0);
    let cr4 = read_cr4();
    // SAFETY: CR4.TSD only restricts RDTSC.
    unsafe { write_cr4(cr4 | CR4_TSD) };
    let denied = run_user(enter_user, user(&raw const user_rdtsc), 0);
    // SAFETY: restores CR4.
    unsafe { write_cr4(cr4) };
    let vector = |t: Option<Trap>| t.map_or(u64::MAX, |t| t.vector);
    let at = user(&raw const user_rdtsc_at);
    out!(
        report,
        "ring3 rdtsc: cr4.tsd=0 -> {} ; cr4.tsd=1 -> {} error={:#x} rip=insn{:+}",
        trap::mnemonic(vector(allowed)),
        trap::mnemonic(vector(denied)),
        denied.map_or(0, |t| t.error),
        denied.map_or(0, |t| t.rip as i64 - at as i64),
    );
    report.expect_eq(
        format_args!("ring-3 rdtsc with TSD=0"),
        vector(allowed),
        0x80,
    );
    report.expect_eq(format_args!("ring-3 rdtsc with TSD=1"), vector(denied), 13);
    report.expect_eq(
        format_args!("ring-3 rdtsc with TSD=1 rip"),
        denied.map_or(0, |t| t.rip),
        at,
    );
}

fn map_region() -> AddressSpace {
    let space = AddressSpace::new();
    space.map(USER_STACK, paging::alloc_frame(), SIZE_4K, US | RW | XD);
    space.map(USER_DATA, paging::alloc_frame(), SIZE_4K, US | RW | XD);
    let (start, end) = (
        &raw const user_page_start as u64,
        &raw const user_page_end as u64,
    );
    paging::map_user_code(&space, start, end, USER_CODE);
    // SAFETY: the new hierarchy shares the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(0, false) };
    space
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("cpu-modes");
    let _space = map_region();
    enter_ring3(&mut report, "iretq", enter_user);
    enter_ring3(&mut report, "retf", far_return_to_user);
    syscalls(&mut report);
    sysenter(&mut report);
    far_return(&mut report);
    swapgs(&mut report);
    tsc(&mut report);
    report.finish()
}
