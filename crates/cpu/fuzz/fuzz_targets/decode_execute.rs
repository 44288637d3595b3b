//! Arbitrary bytes as code and as the first 64 KiB of RAM (so page tables, descriptor tables
//! and the IDT are garbage too), entered in real, 32-bit protected or 64-bit mode: the CPU must
//! end with a stop reason or a named model error within the budget, never panic or hang.

#![no_main]

use cpu::{Bus, Cpu, Seg, Segment, VirtualTime};
use libfuzzer_sys::fuzz_target;
use x86::{Hfn, Hpa};

struct Ram(Vec<u8>);

impl Bus for Ram {
    fn ram(&self) -> &[u8] {
        &self.0
    }
    fn ram_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn ram_offset(&self, frame: Hfn) -> Option<usize> {
        let off = (frame.raw() as usize).checked_mul(4096)?;
        (off < self.0.len()).then_some(off)
    }
    fn mmio_read(&mut self, _: Hpa, _: u8, _: VirtualTime) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _: Hpa, _: u8, _: u64, _: VirtualTime) {}
    fn io_in(&mut self, _: u16, _: u8, _: VirtualTime) -> u32 {
        u32::MAX
    }
    fn io_out(&mut self, _: u16, _: u8, _: u32, _: VirtualTime) {}
    fn has_interrupt(&mut self, now: VirtualTime) -> bool {
        now.ticks() % 97 == 0
    }
    fn acknowledge_interrupt(&mut self, now: VirtualTime) -> Option<u8> {
        Some((now.ticks() % 256) as u8)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut ram = Ram(vec![0; 1 << 20]);
    let n = rest.len().min(0x1_0000);
    ram.0[..n].copy_from_slice(&rest[..n]);
    let mut cpu = Cpu::new();
    match mode % 3 {
        0 => {
            cpu.set_segment(Seg::Cs, Segment::real(0, true));
            cpu.set_rip(0x100);
        }
        1 => cpu.set_multiboot_entry(0x100, 0x2bad_b002, 0x1000),
        _ => {
            // 64-bit mode with CR3 = 0: the page tables are the fuzz input itself.
            cpu.set_multiboot_entry(0x100, 0, 0);
            cpu.set_control_registers(0x8000_0011, 0, 0x20, 0x500);
            let mut cs = cpu.segment(Seg::Cs);
            cs.ar = (cs.ar & !(1 << 14)) | (1 << 13);
            cpu.set_segment(Seg::Cs, cs);
        }
    }
    let _ = cpu.run(&mut ram, 10_000);
});
