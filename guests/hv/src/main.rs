//! guest-hv: the hypervisor of `crates/hv`, unchanged, as a bare-metal image on real VMX
//! instructions (DESIGN.md §2, issue 7). It boots by multiboot1 into long mode (`rt`), enables
//! VMX (IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, VMXON), loads its first multiboot module
//! as its guest's image into a block of its memory, builds the guest's multiboot information,
//! and runs the guest with EPT through [`backend::RealVmx`], the `hv::platform::Host` over real
//! instructions. The guest's console comes out on guest-hv's own UART tagged `[L1] `; the
//! guest's debug-exit value becomes guest-hv's.
//!
//! Command line: `guest-hv [mem=MIB] [trace] [ARGS…]`: `mem` is the guest's RAM (default
//! 64 MiB); `trace` prints every VM exit and injection on the console; the rest of the line
//! goes to the guest, after the module's own string (its name), as a
//! multiboot loader passes `IMAGE ARGS`. Modules after the first are not passed on yet.

#![no_std]
#![no_main]

extern crate alloc;

mod backend;
mod heap;
mod load;
mod trace;

use hv::vm::{Ending, Vm, VmConfig};
use rt::{BootInfo, println};
use x86::Hpa;

/// Exit status (debug-exit value) when guest-hv cannot run its guest.
const EXIT_REFUSED: u8 = 0x7e;
/// Guest RAM by default, in MiB.
const DEFAULT_MEM_MIB: u64 = 64;
/// Where the guest's RAM starts in guest-hv's memory: above its image, modules and page-frame
/// pool, 2-MiB aligned (EPT maps it with 2-MiB pages).
const GUEST_RAM_BASE: u64 = 64 << 20;
/// Frames for the hypervisor's own structures (VMCS, MSR bitmap, EPT tables), after the
/// guest's RAM.
const HYPERVISOR_FRAMES: u64 = 1024;

/// Refuses to go on, saying why.
fn refuse(why: core::fmt::Arguments<'_>) -> ! {
    println!("guest-hv: {why}");
    rt::exit(EXIT_REFUSED)
}

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    heap::init();
    // The firmware may have left the legacy PIC unmasked with a timer running (a PC BIOS
    // does): guest-hv takes no interrupts, so it masks every line (VM exits would take them
    // otherwise, with external-interrupt exiting).
    // SAFETY: ports 0x21 and 0xA1 are the 8259s' mask registers; masking has no other effect.
    unsafe {
        rt::arch::outb(0x21, 0xff);
        rt::arch::outb(0xa1, 0xff);
    }
    let mut words = boot.cmdline().split_ascii_whitespace();
    let _program = words.next();
    let mut mem_mib = DEFAULT_MEM_MIB;
    let mut guest_args = alloc::string::String::new();
    for w in words {
        if w == "trace" {
            trace::enable();
            continue;
        }
        match w.strip_prefix("mem=").map(str::parse::<u64>) {
            Some(Ok(m)) if (2..=512).contains(&m) => mem_mib = m,
            Some(_) => refuse(format_args!("mem= takes a size in MiB from 2 to 512")),
            None => {
                guest_args.push(' ');
                guest_args.push_str(w);
            }
        }
    }
    let Some(module) = boot.modules().first() else {
        refuse(format_args!(
            "no guest image: pass it as the first multiboot module"
        ));
    };
    let ram = mem_mib << 20;
    let frames_base = GUEST_RAM_BASE + ram;
    let frames_end = frames_base + HYPERVISOR_FRAMES * 4096;
    // Everything must lie in available memory, below the 1 GiB rt maps.
    let fits = boot
        .available()
        .any(|r| r.base <= GUEST_RAM_BASE && r.end() >= frames_end)
        && frames_end <= 1 << 30;
    if !fits || module.end > GUEST_RAM_BASE {
        refuse(format_args!(
            "{mem_mib} MiB of guest RAM do not fit in the machine's memory (or the module overlaps it)"
        ));
    }
    let caps_ok = backend::check_vmx().unwrap_or_else(|why| refuse(format_args!("{why}")));
    let cmdline = alloc::format!("{}{}", module.name(), guest_args);
    // SAFETY: the module lies in memory rt maps, below the guest's RAM, and nothing writes it.
    let image = unsafe {
        core::slice::from_raw_parts(
            module.start as *const u8,
            (module.end - module.start) as usize,
        )
    };
    // SAFETY: [GUEST_RAM_BASE, +ram) is available memory (checked above) that nothing else
    // of guest-hv uses; it becomes the guest's RAM.
    let guest_ram =
        unsafe { core::slice::from_raw_parts_mut(GUEST_RAM_BASE as *mut u8, ram as usize) };
    guest_ram.fill(0);
    let loaded = load::multiboot(guest_ram, image, &cmdline)
        .unwrap_or_else(|why| refuse(format_args!("cannot load the guest image: {why}")));
    let mut host = backend::RealVmx::new(caps_ok, frames_base..frames_end)
        .unwrap_or_else(|why| refuse(format_args!("{why}")));
    let config = VmConfig {
        ram,
        ram_base: Hpa::new(GUEST_RAM_BASE),
        entry: loaded.entry,
        multiboot_info: loaded.info,
        vpid: 1,
    };
    let mut vm = Vm::new(&mut host, config).unwrap_or_else(|e| refuse(format_args!("{e}")));
    match vm.run(&mut host) {
        Ok(Ending::DebugExit(r)) => rt::exit(r.value as u8),
        Ok(other) => refuse(format_args!("the guest's run ended: {other:?}")),
        Err(e) => refuse(format_args!("the hypervisor failed: {e}")),
    }
}
