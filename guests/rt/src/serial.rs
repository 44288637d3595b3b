//! Console on the 16550 UART at I/O port 0x3F8 (COM1), polled: 115200 baud, 8 data bits, no
//! parity, one stop bit, FIFOs on, interrupts off. Output only.

use crate::arch::{inb, outb};
use core::fmt;

const COM1: u16 = 0x3F8;
/// Transmitter holding register (write) / divisor latch low (DLAB=1).
const THR: u16 = 0;
/// Interrupt enable register / divisor latch high (DLAB=1).
const IER: u16 = 1;
/// FIFO control register (write).
const FCR: u16 = 2;
/// Line control register.
const LCR: u16 = 3;
/// Modem control register.
const MCR: u16 = 4;
/// Line status register.
const LSR: u16 = 5;
/// LCR: divisor latch access bit.
const LCR_DLAB: u8 = 0x80;
/// LCR: 8 data bits, 1 stop bit, no parity.
const LCR_8N1: u8 = 0x03;
/// FCR: enable and clear both FIFOs, 14-byte trigger.
const FCR_ENABLE_CLEAR: u8 = 0xC7;
/// MCR: DTR and RTS asserted, OUT2 (the interrupt gate on PCs) left off.
const MCR_DTR_RTS: u8 = 0x03;
/// LSR: transmitter holding register empty.
const LSR_THRE: u8 = 0x20;

/// Programs the UART. Called once by the runtime before `kernel_main`.
pub fn init() {
    // SAFETY: COM1 is the console UART, owned by the runtime; these writes only configure it.
    unsafe {
        outb(COM1 + IER, 0);
        outb(COM1 + LCR, LCR_DLAB);
        outb(COM1 + THR, 1); // divisor 1: 115200 baud
        outb(COM1 + IER, 0);
        outb(COM1 + LCR, LCR_8N1);
        outb(COM1 + FCR, FCR_ENABLE_CLEAR);
        outb(COM1 + MCR, MCR_DTR_RTS);
    }
}

/// Sends one byte, waiting for the transmitter to accept it.
pub fn write_byte(byte: u8) {
    // SAFETY: polling LSR and writing THR of the console UART has no other effect.
    unsafe {
        while inb(COM1 + LSR) & LSR_THRE == 0 {}
        outb(COM1 + THR, byte);
    }
}

/// Sends bytes.
pub fn write_bytes(bytes: &[u8]) {
    bytes.iter().copied().for_each(write_byte);
}

/// The console as a `fmt::Write` sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Console::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// Prints to the serial console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
