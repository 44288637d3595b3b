//! The runtime every guest image links: multiboot1 boot into long mode ([`arch`]), a console on
//! the 16550 UART ([`serial`]), the debug-exit port ([`exit`]), and the multiboot information the
//! loader handed over, copied into kernel memory ([`multiboot`]). It also provides the panic
//! handler, which prints the message and leaves through the debug-exit port with
//! [`EXIT_PANIC`].
//!
//! An image defines `#[unsafe(no_mangle)] fn kernel_main(boot: &'static BootInfo) -> !`; the
//! runtime calls it on the boot stack in 64-bit mode (SDM Vol. 3A §10.8.5), with interrupts
//! disabled, the first GiB of physical memory mapped at 0 and at [`arch::KERNEL_VMA`], and the
//! serial console ready.

#![no_std]

pub mod arch;
pub mod desc;
pub mod frame;
pub mod multiboot;
pub mod serial;

pub use multiboot::BootInfo;

/// Exit status (debug-exit value) for a panic or an unexpected exception.
pub const EXIT_PANIC: u8 = 3;

const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);

/// The stack `kernel_main` starts on; the entry stub points RSP at its top.
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

unsafe extern "Rust" {
    /// The image's entry point.
    safe fn kernel_main(boot: &'static BootInfo) -> !;
}

/// First Rust code: called from the entry stub with the loader's EAX and EBX.
extern "C" fn rt_start(magic: u32, info: u32) -> ! {
    serial::init();
    if magic != multiboot::BOOTLOADER_MAGIC {
        println!("rt: not loaded by a multiboot loader (EAX={magic:#x})");
        exit(EXIT_PANIC);
    }
    let boot = multiboot::parse(u64::from(info));
    kernel_main(boot)
}

/// Leaves the machine through the debug-exit port: a write of `status` to port 0xF4 ends the run
/// with process status `(status << 1) | 1`. Halts forever if no such device exists.
pub fn exit(status: u8) -> ! {
    // SAFETY: port 0xF4 is the debug-exit device (or nothing); writing it has no other effect.
    unsafe { arch::outb(0xF4, status) };
    arch::halt_forever()
}

/// The physical range `[start, end)` the image occupies, bss included.
pub fn image_phys_range() -> (u64, u64) {
    unsafe extern "C" {
        static __image_start: u8;
        static __bss_end: u8;
    }
    (&raw const __image_start as u64, &raw const __bss_end as u64)
}

/// The virtual range `[start, end)` of the kernel's code.
pub fn text_range() -> (u64, u64) {
    unsafe extern "C" {
        static __text_start: u8;
        static __text_end: u8;
    }
    (&raw const __text_start as u64, &raw const __text_end as u64)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::disable_interrupts();
    println!("panic: {info}");
    exit(EXIT_PANIC)
}
