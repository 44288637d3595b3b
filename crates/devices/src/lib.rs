//! PC devices as plain state machines: 16550 UART, local APIC and timer, I/O APIC, 8259 PIC,
//! 8254 PIT, the debug-exit port and fw_cfg. No threads, files or bus knowledge: each device is
//! driven by `read`/`write` calls and reports through small traits, so the board and the
//! hypervisor (for the virtual devices it gives its guests) use the same code.

#![no_std]
