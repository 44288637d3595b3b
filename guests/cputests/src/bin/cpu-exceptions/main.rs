//! cpu-exceptions (in construction).
#![no_std]
#![no_main]

use cputests::report::Report;
use rt::BootInfo;

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    Report::new("cpu-exceptions").finish()
}
