//! `trace` on guest-hv's command line: the hypervisor's `log` records (every VM exit with its
//! guest RIP and IDT-vectoring information, every injection) on the console, for finding where
//! two VMX implementations part ways.

use rt::println;

struct Console;

impl log::Log for Console {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        println!("guest-hv: {}", record.args());
    }

    fn flush(&self) {}
}

static CONSOLE: Console = Console;

/// Turns tracing on.
pub fn enable() {
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}
