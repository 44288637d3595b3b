//! guest-hv: the hypervisor of `crates/hv`, unchanged, as a bare-metal image on real VMX
//! instructions (DESIGN.md §2, issue 7). It boots by multiboot1 into long mode (`rt`), shares
//! out its memory ([`frames`]: the guest's RAM, its own heap, frames for the hypervisor),
//! enables VMX (IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, VMXON), loads its first
//! multiboot module as its guest's image and the other modules as the guest's modules into the
//! guest's RAM ([`load`]), builds the guest's multiboot information, and runs the guest with
//! EPT or shadow paging through [`backend::RealVmx`], the `hv::platform::Host` over real instructions. The
//! guest's console comes out on guest-hv's own UART tagged `[L1] `; the guest's debug-exit
//! value becomes guest-hv's.
//!
//! Command line: `guest-hv [mem=MIB] [mmu=ept|shadow] [trace] [ARGS…]`: `mem` is the guest's
//! RAM (default 64 MiB); `mmu` how its memory is virtualized (default EPT); `trace` prints every VM exit and injection on the console; the rest of the line
//! goes to the guest, after the first module's own string (its name), as a multiboot loader
//! passes `IMAGE ARGS`. Modules 2..n reach the guest as its modules 1..n-1, with their strings.

#![no_std]
#![no_main]

extern crate alloc;

mod backend;
mod frames;
mod heap;
mod load;
mod trace;

use core::mem::MaybeUninit;

use frames::{Block, Frames};
use hv::vm::{Ending, Mmu, Vm, VmConfig};
use rt::{BootInfo, println};
use x86::Hpa;

/// Exit status (debug-exit value) when guest-hv cannot run its guest.
const EXIT_REFUSED: u8 = 0x7e;
/// Guest RAM by default, in MiB.
const DEFAULT_MEM_MIB: u64 = 64;
/// The shadow-page budget under `mmu=shadow`: 16 MiB of shadow tables.
const SHADOW_PAGES: usize = 4096;
/// The guest's RAM is one block aligned to 2 MiB, which EPT maps with 2-MiB pages.
const GUEST_RAM_ALIGN: u64 = 2 << 20;
/// The heap gets this share (1/n) of the memory the guest's RAM leaves…
const HEAP_SHARE: u64 = 4;
/// …but at least this much.
const HEAP_MIN: u64 = 4 << 20;
/// Memory left for the hypervisor's frames (VMCS, MSR bitmap, EPT tables) at the least.
const FRAMES_MIN: u64 = 1 << 20;
/// The first MiB, where the firmware and a loader keep their data (IVT, BIOS data, EBDA, often
/// the loader's information structure): never handed out.
const LOW_MEMORY: u64 = 1 << 20;

/// Refuses to go on, saying why.
fn refuse(why: core::fmt::Arguments<'_>) -> ! {
    println!("guest-hv: {why}");
    rt::exit(EXIT_REFUSED)
}

/// Whether a word of guest-hv's command line is guest-hv's own rather than the guest's.
fn own_option(word: &str) -> bool {
    word == "trace" || word.starts_with("mem=") || word.starts_with("mmu=")
}

/// A block's memory, for the rest of the run.
fn block_memory(block: Block) -> &'static mut [MaybeUninit<u8>] {
    // SAFETY: a block lies below 1 GiB, which rt maps at 0 (virtual = physical), in RAM the
    // memory map calls available, and its frames left the allocator for good when it was
    // taken (frames.rs): nothing else refers to them. Consuming the block makes this slice
    // the only reference ever made to them; MaybeUninit makes no claim on their contents.
    unsafe {
        core::slice::from_raw_parts_mut(
            block.base().raw() as *mut MaybeUninit<u8>,
            block.size() as usize,
        )
    }
}

/// A block's memory, zeroed, for the rest of the run.
fn zeroed_block(block: Block) -> &'static mut [u8] {
    let memory = block_memory(block);
    memory.fill(MaybeUninit::new(0));
    // SAFETY: every byte was just initialized; MaybeUninit<u8> has u8's layout.
    unsafe { &mut *(core::ptr::from_mut(memory) as *mut [u8]) }
}

/// A module's bytes.
fn module_bytes(module: &rt::multiboot::Module) -> &'static [u8] {
    // SAFETY: `kernel_main` checked that the module lies below 1 GiB, in rt's identity map,
    // and took its frames out of the allocator: nothing writes them.
    unsafe {
        core::slice::from_raw_parts(
            module.start as *const u8,
            (module.end - module.start) as usize,
        )
    }
}

/// The frame allocator over the available memory of the map, without what is in use: the
/// first MiB, guest-hv's image and its modules.
fn memory(boot: &BootInfo) -> Frames {
    let mut frames = Frames::take().expect("the frame allocator is built once");
    for region in boot.available() {
        frames.add(Hpa::new(region.base)..Hpa::new(region.end()));
    }
    frames.remove(Hpa::new(0)..Hpa::new(LOW_MEMORY));
    let (image_start, image_end) = rt::image_phys_range();
    frames.remove(Hpa::new(image_start)..Hpa::new(image_end));
    for (i, m) in boot.modules().iter().enumerate() {
        if m.start > m.end || m.end > frames::LIMIT {
            refuse(format_args!(
                "module {} ({:#x}..{:#x}) does not lie in the first GiB, which guest-hv maps",
                i + 1,
                m.start,
                m.end
            ));
        }
        frames.remove(Hpa::new(m.start)..Hpa::new(m.end));
    }
    frames
}

#[unsafe(no_mangle)]
fn kernel_main(boot: &'static BootInfo) -> ! {
    cputests::init();
    // The firmware may have left the legacy PIC unmasked with a timer running (a PC BIOS
    // does): guest-hv takes no interrupts, so it masks every line (VM exits would take them
    // otherwise, with external-interrupt exiting).
    // SAFETY: ports 0x21 and 0xA1 are the 8259s' mask registers; masking has no other effect.
    unsafe {
        rt::arch::outb(0x21, 0xff);
        rt::arch::outb(0xa1, 0xff);
    }
    // Nothing may allocate before the heap has its memory, below.
    let words = || boot.cmdline().split_ascii_whitespace().skip(1);
    let mut mem_mib = DEFAULT_MEM_MIB;
    let mut mmu = Mmu::Ept;
    for w in words() {
        if w == "trace" {
            trace::enable();
        }
        match w.strip_prefix("mmu=") {
            Some("ept") => mmu = Mmu::Ept,
            Some("shadow") => {
                mmu = Mmu::Shadow {
                    max_pages: SHADOW_PAGES,
                }
            }
            Some(_) => refuse(format_args!("mmu= takes ept or shadow")),
            None => {}
        }
        match w.strip_prefix("mem=").map(str::parse::<u64>) {
            Some(Ok(m)) if (2..=512).contains(&m) => mem_mib = m,
            Some(_) => refuse(format_args!("mem= takes a size in MiB from 2 to 512")),
            None => {}
        }
    }
    if boot.truncated {
        println!(
            "guest-hv: the loader's information was cut to fit (at most 16 modules, 128 bytes \
             of a module's string, 4096 of the command line, 64 memory regions)"
        );
    }
    let Some((image_module, guest_modules)) = boot.modules().split_first() else {
        refuse(format_args!(
            "no guest image: pass it as the first multiboot module"
        ));
    };

    // Memory: the guest's RAM, then the heap, then frames for the hypervisor.
    let mut frames = memory(boot);
    let ram = mem_mib << 20;
    let free = frames.free_bytes();
    let need = ram + HEAP_MIN + FRAMES_MIN;
    if free < need {
        refuse(format_args!(
            "{mem_mib} MiB of guest RAM do not fit in the machine's memory ({} MiB free below \
             1 GiB, {} MiB needed with guest-hv's own)",
            free >> 20,
            need.div_ceil(1 << 20)
        ));
    }
    let Some(guest_ram) = frames.take_block(ram, GUEST_RAM_ALIGN) else {
        refuse(format_args!(
            "{mem_mib} MiB of guest RAM do not fit in the machine's memory (no free \
             2-MiB-aligned block that large below 1 GiB)"
        ));
    };
    let ram_base = guest_ram.base();
    let mut heap_size = (frames.free_bytes() / HEAP_SHARE).max(HEAP_MIN);
    let heap_block = loop {
        // The share if it lies in one piece, else half of it, down to the minimum.
        match frames.take_block(heap_size, frames::FRAME_SIZE) {
            Some(b) => break b,
            None if heap_size > HEAP_MIN => heap_size = (heap_size / 2).max(HEAP_MIN),
            None => refuse(format_args!(
                "no free block of {} MiB below 1 GiB for guest-hv's heap",
                HEAP_MIN >> 20
            )),
        }
    };
    let (heap_base, heap_size) = (heap_block.base(), heap_block.size());
    heap::init(block_memory(heap_block));
    log::debug!(
        "memory: guest RAM {ram_base:?}+{ram:#x}, heap {heap_base:?}+{heap_size:#x}, {} \
         frames for the hypervisor",
        frames.free_bytes() / frames::FRAME_SIZE
    );

    let caps_ok = backend::check_vmx().unwrap_or_else(|why| refuse(format_args!("{why}")));
    let mut cmdline = alloc::string::String::from(image_module.name());
    for w in words().filter(|w| !own_option(w)) {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    let modules: alloc::vec::Vec<load::Module<'_>> = guest_modules
        .iter()
        .map(|m| load::Module {
            data: module_bytes(m),
            string: m.name(),
        })
        .collect();
    let guest_ram = zeroed_block(guest_ram);
    let loaded = load::multiboot(guest_ram, module_bytes(image_module), &cmdline, &modules)
        .unwrap_or_else(|why| refuse(format_args!("cannot load the guest: {why}")));
    let mut host =
        backend::RealVmx::new(caps_ok, frames).unwrap_or_else(|why| refuse(format_args!("{why}")));
    let config = VmConfig {
        ram,
        ram_base,
        entry: loaded.entry,
        multiboot_info: loaded.info,
        vpid: 1,
        mmu,
    };
    let mut vm = Vm::new(&mut host, config).unwrap_or_else(|e| refuse(format_args!("{e}")));
    let ending = vm.run(&mut host);
    let (heap_bytes, heap_used) = heap::usage();
    log::debug!("heap: {heap_used:#x} of {heap_bytes:#x} bytes in use at the end");
    match ending {
        Ok(Ending::DebugExit(r)) => rt::exit(r.value as u8),
        Ok(other) => refuse(format_args!("the guest's run ended: {other:?}")),
        Err(e) => refuse(format_args!("the hypervisor failed: {e}")),
    }
}
