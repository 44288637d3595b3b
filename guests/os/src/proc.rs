//! Processes: a table of up to [`MAX_PROCS`], each with its own address space ([`Mm`]), kernel
//! stack and PCID; fork, exec, exit, wait; and a round-robin scheduler driven by the LAPIC timer.
//!
//! Every switch loads the next process's CR3 (SDM Vol. 3A §4.10.4.1). With PCIDs (§4.10.1) each
//! process slot owns PCID `slot + 1`: the first load after the slot gets a new address space
//! flushes that PCID, later loads set CR3 bit 63 and keep its translations. The kernel's own
//! hierarchy runs with PCID 0, and kernel pages are global.
//!
//! Kernel code never sleeps in the middle of work: a process blocks only in `wait`, at a point
//! where it holds no kernel state, and switches happen only from the timer interrupt of a ring-3
//! process, from `wait`, `yield` and `exit`.

use crate::arch::{self, SYSCALL_KERNEL_RSP, TrapFrame};
use crate::errno::{EAGAIN, ECHILD, EINVAL, ENOENT, ENOMEM, Errno};
use crate::global::Global;
use crate::mm::{VirtAddr, paging};
use crate::vm::{self, Mm, STACK_SIZE, STACK_TOP};
use crate::{elf, gdt, programs};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::println;

pub const MAX_PROCS: usize = 64;
/// Each kernel stack: a guard page (unmapped, so an overflow faults instead of corrupting the
/// neighbouring stack; the double fault then runs on its own stack) and 16 KiB of stack.
const KSTACK_SIZE: usize = 20 * 1024;
/// RFLAGS of a process entering ring 3: IF set, reserved bit 1 set.
const USER_RFLAGS: u64 = 0x202;
/// Exit-status bit: the process was killed by an exception (low byte: the vector).
pub const STATUS_KILLED: u64 = 1 << 32;
const MAX_NAME: usize = 16;
/// Longest argument string exec accepts.
pub const MAX_ARGS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Runnable,
    /// Blocked in wait for a child.
    Waiting,
    /// Exited; its status waits for the parent.
    Zombie,
}

#[derive(Debug)]
struct Process {
    pid: u32,
    parent: u32,
    state: State,
    name: [u8; MAX_NAME],
    name_len: usize,
    mm: Option<Mm>,
    status: u64,
    /// Whether the TLB may hold translations of this slot's PCID that belong to `mm`.
    tlb_valid: bool,
}

impl Process {
    fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    fn set_name(&mut self, name: &str) {
        let n = name.len().min(MAX_NAME);
        self.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.name_len = n;
    }
}

struct Table {
    slots: [Option<Process>; MAX_PROCS],
    current: usize,
    next_pid: u32,
}

static TABLE: Global<Table> = Global::new(Table {
    slots: [const { None }; MAX_PROCS],
    current: 0,
    next_pid: 1,
});

#[repr(C, align(4096))]
struct KernelStacks([[u8; KSTACK_SIZE]; MAX_PROCS]);
struct Stacks(UnsafeCell<KernelStacks>);
// SAFETY: each stack is used only by its slot's process, on one CPU.
unsafe impl Sync for Stacks {}
static KSTACKS: Stacks = Stacks(UnsafeCell::new(KernelStacks([[0; KSTACK_SIZE]; MAX_PROCS])));

/// Saved kernel RSP of each slot's context; the extra last entry is the boot context.
static CONTEXTS: [AtomicU64; MAX_PROCS + 1] = [const { AtomicU64::new(0) }; MAX_PROCS + 1];

/// Unmaps the guard page at the bottom of every kernel stack.
pub fn init() {
    for slot in 0..MAX_PROCS {
        let bottom = KSTACKS.0.get() as u64 + (slot * KSTACK_SIZE) as u64;
        paging::unmap_kernel_page(VirtAddr::new(bottom));
    }
}

fn kstack_top(slot: usize) -> u64 {
    KSTACKS.0.get() as u64 + ((slot + 1) * KSTACK_SIZE) as u64
}

fn pcid(slot: usize) -> u16 {
    slot as u16 + 1
}

impl Table {
    fn current(&mut self) -> &mut Process {
        self.slots[self.current]
            .as_mut()
            .expect("no current process")
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }

    /// The next runnable slot after the current one, round robin.
    fn pick_next(&self) -> Option<usize> {
        (1..=MAX_PROCS)
            .map(|i| (self.current + i) % MAX_PROCS)
            .find(|&s| {
                self.slots[s]
                    .as_ref()
                    .is_some_and(|p| p.state == State::Runnable)
            })
    }

    /// Makes `slot` the running process: its kernel stack for ring changes, its CR3.
    fn activate(&mut self, slot: usize) {
        self.current = slot;
        let top = kstack_top(slot);
        gdt::set_kernel_stack(top);
        SYSCALL_KERNEL_RSP.store(top, Ordering::Relaxed);
        let p = self.slots[slot].as_mut().expect("activating an empty slot");
        let mm = p.mm.as_ref().expect("activating a process without memory");
        paging::load(mm.root(), pcid(slot), p.tlb_valid);
        p.tlb_valid = true;
    }
}

/// Runs `f` on the current process's memory.
pub fn with_current_mm<R>(f: impl FnOnce(&mut Mm) -> R) -> R {
    let mut t = TABLE.lock();
    f(t.current()
        .mm
        .as_mut()
        .expect("current process has no memory"))
}

/// The current process's pid.
pub fn current_pid() -> u32 {
    TABLE.lock().current().pid
}

/// Builds the memory of built-in program `name`: the ELF image, an empty heap, a demand-zero
/// stack whose top holds the program's start information. Returns (memory, entry, rsp, rdi).
fn build_image(name: &str, args: &[u8]) -> Result<(Mm, u64, u64, u64), Errno> {
    let image = programs::image(name).ok_or(ENOENT)?;
    let mut mm = Mm::new().ok_or(ENOMEM)?;
    match populate(&mut mm, image, name, args) {
        Ok((entry, rsp, info)) => Ok((mm, entry, rsp, info)),
        Err(e) => {
            mm.destroy();
            Err(e)
        }
    }
}

fn populate(mm: &mut Mm, image: &[u8], name: &str, args: &[u8]) -> Result<(u64, u64, u64), Errno> {
    let entry = elf::load(mm, image)?;
    mm.add_region(
        STACK_TOP - STACK_SIZE,
        STACK_TOP,
        vm::PROT_READ | vm::PROT_WRITE,
    )?;
    // Top of stack: name bytes, argument bytes, then the start information the program's entry
    // receives in RDI: [name pointer, name length, argument pointer, argument length].
    let name_at = STACK_TOP - name.len() as u64;
    let args_at = (name_at - args.len() as u64) & !7;
    let info_at = (args_at - 32) & !15;
    mm.copy_out(VirtAddr::new(name_at), name.as_bytes())?;
    mm.copy_out(VirtAddr::new(args_at), args)?;
    let info = [name_at, name.len() as u64, args_at, args.len() as u64];
    let mut bytes = [0u8; 32];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(info) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    mm.copy_out(VirtAddr::new(info_at), &bytes)?;
    // As after a CALL: RSP + 8 is 16-byte aligned at the entry point (x86-64 psABI §3.2.2).
    Ok((entry, info_at - 8, info_at))
}

fn user_frame(entry: u64, rsp: u64, rdi: u64) -> TrapFrame {
    TrapFrame {
        rip: entry,
        cs: u64::from(gdt::USER_CS),
        rflags: USER_RFLAGS,
        rsp,
        ss: u64::from(gdt::USER_DS),
        rdi,
        ..TrapFrame::default()
    }
}

/// Prepares `slot`'s kernel stack to enter ring 3 with `frame` when first switched to.
fn prepare_stack(slot: usize, frame: &TrapFrame) {
    let top = kstack_top(slot);
    let frame_at = top - size_of::<TrapFrame>() as u64;
    let switch = arch::initial_stack_frame();
    let switch_at = frame_at - size_of_val(&switch) as u64;
    // SAFETY: the slot's kernel stack is unused (the slot is new); both writes stay inside it.
    unsafe {
        (frame_at as *mut TrapFrame).write(*frame);
        (switch_at as *mut [u64; 7]).write(switch);
    }
    CONTEXTS[slot].store(switch_at, Ordering::Relaxed);
}

/// Creates the first process (pid 1) running program `name` and switches to it for good.
pub fn start_init(name: &str, args: &[u8]) -> ! {
    let (mm, entry, rsp, info) = match build_image(name, args) {
        Ok(image) => image,
        Err(e) => panic!("cannot start {name}: errno {}", e.0),
    };
    let next = {
        let mut t = TABLE.lock();
        let mut p = Process {
            pid: t.next_pid,
            parent: 0,
            state: State::Runnable,
            name: [0; MAX_NAME],
            name_len: 0,
            mm: Some(mm),
            status: 0,
            tlb_valid: false,
        };
        p.set_name(name);
        t.next_pid += 1;
        prepare_stack(0, &user_frame(entry, rsp, info));
        if let Some(mm) = p.mm.as_mut() {
            mm.pcid = pcid(0);
        }
        t.slots[0] = Some(p);
        t.activate(0);
        CONTEXTS[0].load(Ordering::Relaxed)
    };
    // SAFETY: slot 0's stack was prepared above; the boot context is never resumed.
    unsafe { arch::switch_context(CONTEXTS[MAX_PROCS].as_ptr(), next) };
    unreachable!("the boot context was resumed")
}

/// Switches to the next runnable process, if another one is. The caller holds no kernel state.
fn schedule() {
    let (save, next) = {
        let mut t = TABLE.lock();
        let cur = t.current;
        let current_runnable = t.current().state == State::Runnable;
        let Some(next) = t.pick_next() else {
            assert!(current_runnable, "guest-os: deadlock, no process can run");
            return;
        };
        if next == cur {
            return;
        }
        t.activate(next);
        (
            CONTEXTS[cur].as_ptr(),
            CONTEXTS[next].load(Ordering::Relaxed),
        )
    };
    // SAFETY: `next` was saved by a switch or prepared by prepare_stack; `save` is our slot.
    unsafe { arch::switch_context(save, next) };
}

/// Timer preemption of a ring-3 process: round robin.
pub fn preempt() {
    schedule();
}

/// sched_yield(2).
pub fn yield_now() {
    schedule();
}

/// fork(2): a copy-on-write child that returns 0 from the same system call.
pub fn fork(frame: &TrapFrame) -> Result<u64, Errno> {
    let mut t = TABLE.lock();
    let slot = t.free_slot().ok_or(EAGAIN)?;
    let cur = t.current;
    let parent = t.current();
    let parent_mm = parent.mm.as_ref().expect("current process has no memory");
    let mut mm = parent_mm.fork().ok_or(ENOMEM)?;
    // Every writable page of the parent became read-only: flush its PCID.
    paging::load(parent_mm.root(), pcid(cur), false);
    mm.pcid = pcid(slot);
    let mut child = Process {
        pid: 0,
        parent: parent.pid,
        state: State::Runnable,
        name: parent.name,
        name_len: parent.name_len,
        mm: Some(mm),
        status: 0,
        tlb_valid: false,
    };
    child.pid = t.next_pid;
    t.next_pid += 1;
    let pid = child.pid;
    let mut child_frame = *frame;
    child_frame.rax = 0;
    prepare_stack(slot, &child_frame);
    t.slots[slot] = Some(child);
    Ok(u64::from(pid))
}

/// exec(2) of a built-in program: a fresh address space replaces the current one; on success
/// the system call returns into the new program.
pub fn exec(frame: &mut TrapFrame, name: &str, args: &[u8]) -> Result<(), Errno> {
    if args.len() > MAX_ARGS {
        return Err(EINVAL);
    }
    let (mut mm, entry, rsp, info) = build_image(name, args)?;
    let old = {
        let mut t = TABLE.lock();
        let slot = t.current;
        mm.pcid = pcid(slot);
        let p = t.current();
        let old = p.mm.replace(mm);
        p.set_name(name);
        p.tlb_valid = false;
        t.activate(slot);
        old
    };
    if let Some(old) = old {
        old.destroy();
    }
    *frame = user_frame(entry, rsp, info);
    Ok(())
}

/// Ends the current process with `status`; never returns.
pub fn exit(status: u64) -> ! {
    let (mm, pid) = {
        let mut t = TABLE.lock();
        let cur = t.current;
        let p = t.current();
        let pid = p.pid;
        let parent = p.parent;
        let mm = p.mm.take();
        p.state = State::Zombie;
        p.status = status;
        // Orphans go to init, which reaps them.
        let mut orphan_zombie = false;
        for (s, q) in t.slots.iter_mut().enumerate() {
            if let Some(q) = q.as_mut().filter(|q| q.parent == pid && s != cur) {
                q.parent = 1;
                orphan_zombie |= q.state == State::Zombie;
            }
        }
        for q in t.slots.iter_mut().flatten() {
            let wakes = (q.pid == parent) || (orphan_zombie && q.pid == 1);
            if wakes && q.state == State::Waiting {
                q.state = State::Runnable;
            }
        }
        (mm, pid)
    };
    // Leave the hierarchy before tearing it down.
    paging::load_kernel();
    if let Some(mm) = mm {
        mm.destroy();
    }
    if pid == 1 {
        println!("guest-os: init exited with status {status:#x}");
        let code = if status == 0 {
            0
        } else if status & STATUS_KILLED != 0 {
            rt::EXIT_PANIC
        } else {
            status.min(127) as u8
        };
        rt::exit(code);
    }
    schedule();
    unreachable!("a zombie was scheduled")
}

/// Kills the current process after an exception it caused, with a message; never returns.
pub fn kill_current(frame: &TrapFrame, what: fmt::Arguments<'_>) -> ! {
    {
        let mut t = TABLE.lock();
        let p = t.current();
        println!(
            "guest-os: pid {} ({}) killed: {} at rip={:#x}",
            p.pid,
            p.name(),
            what,
            frame.rip
        );
    }
    exit(STATUS_KILLED | (frame.vector & 0xFF))
}

/// wait(2) for any child: its pid and exit status.
pub fn wait() -> Result<(u32, u64), Errno> {
    loop {
        {
            let mut t = TABLE.lock();
            let me = t.current().pid;
            let mut children = false;
            let mut zombie = None;
            for (s, p) in t.slots.iter().enumerate() {
                if let Some(p) = p.as_ref().filter(|p| p.parent == me) {
                    children = true;
                    if p.state == State::Zombie {
                        zombie = Some(s);
                        break;
                    }
                }
            }
            if let Some(s) = zombie {
                let p = t.slots[s].take().expect("zombie vanished");
                return Ok((p.pid, p.status));
            }
            if !children {
                return Err(ECHILD);
            }
            t.current().state = State::Waiting;
        }
        schedule();
    }
}
