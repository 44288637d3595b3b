//! vmx-entry: not written yet.

#![no_std]
#![no_main]

use cputests::report::Report;
use rt::BootInfo;

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-entry");
    r.check(format_args!("vmx-entry is written"), false);
    r.finish()
}
