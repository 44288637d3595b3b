//! Interpreter throughput: a tight integer loop in 64-bit mode, and a TLB stress loop that
//! touches a new page on every iteration and reloads CR3 every 64 pages.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nestvisor_cpu::{Bus, Cpu, Gpr, Mode, StopReason, VirtualTime};
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
    fn has_interrupt(&mut self, _: VirtualTime) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self, _: VirtualTime) -> Option<u8> {
        None
    }
}

/// 32 MiB of RAM, 4-level identity paging of the first GiB with 2-MiB pages, code at 1 MiB,
/// entered in 64-bit mode through the multiboot state plus a direct CS load.
fn machine(code: &[u8]) -> (Cpu, Ram) {
    let mut ram = Ram(vec![0; 32 << 20]);
    let w = |ram: &mut Ram, at: usize, v: u64| ram.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
    w(&mut ram, 0x1000, 0x2003);
    w(&mut ram, 0x2000, 0x3003);
    for i in 0..512u64 {
        w(&mut ram, 0x3000 + 8 * i as usize, (i << 21) | 0x83);
    }
    ram.0[0x10_0000..0x10_0000 + code.len()].copy_from_slice(code);
    // A 32-bit program that enables long mode and jumps to the 64-bit code at 0x100100.
    #[rustfmt::skip]
    let boot: &[u8] = &[
        0x0f, 0x01, 0x15, 0x00, 0x00, 0x0f, 0x00, // lgdt [0xf0000]
        0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, // cr4.PAE
        0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, // cr3 = 0x1000
        0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, // EFER.LME
        0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, // CR0.PG
        0xea, 0x00, 0x01, 0x10, 0x00, 0x08, 0x00, // jmp 0x08:0x100100
    ];
    ram.0[0xe0000..0xe0000 + boot.len()].copy_from_slice(boot);
    ram.0[0xf0000..0xf0006].copy_from_slice(&[0x17, 0x00, 0x08, 0x00, 0x0f, 0x00]);
    w(&mut ram, 0xf0008, 0);
    w(&mut ram, 0xf0010, 0x00af_9a00_0000_ffff);
    let mut cpu = Cpu::new();
    cpu.set_multiboot_entry(0xe0000, 0, 0);
    (cpu, ram)
}

#[rustfmt::skip]
const LOOP: &[u8] = &[
    0xb9, 0x00, 0x00, 0x00, 0x40,   // mov ecx, 0x40000000
    0x01, 0xc8,                     // l: add eax, ecx
    0x31, 0xc2,                     // xor edx, eax
    0x8d, 0x1c, 0x10,               // lea ebx, [rax+rdx]
    0xff, 0xc9,                     // dec ecx
    0x75, 0xf5,                     // jnz l
    0xf4,
];

#[rustfmt::skip]
const TLB: &[u8] = &[
    0x48, 0xc7, 0xc6, 0x00, 0x00, 0x40, 0x00, // mov rsi, 0x400000
    0xb9, 0x00, 0x00, 0x00, 0x40,             // mov ecx, 0x40000000
    0x48, 0x89, 0x06,                         // l: mov [rsi], rax
    0x48, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, // add rsi, 0x1000
    0x48, 0x81, 0xe6, 0xff, 0xff, 0xff, 0x00, // and rsi, 0xffffff
    0x48, 0x81, 0xce, 0x00, 0x00, 0x40, 0x00, // or rsi, 0x400000
    0xf7, 0xc6, 0x00, 0xf0, 0x03, 0x00,       // test esi, 0x3f000
    0x75, 0x06,                               // jnz skip
    0x0f, 0x20, 0xd8,                         // mov rax, cr3
    0x0f, 0x22, 0xd8,                         // mov cr3, rax
    0xff, 0xc9,                               // skip: dec ecx
    0x75, 0xd7,                               // jnz l
    0xf4,
];

fn bench(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut g = c.benchmark_group("interp");
    g.throughput(Throughput::Elements(N));
    for (name, code) in [("integer_loop", LOOP), ("tlb_stress", TLB)] {
        let mut code64 = vec![0x90u8; 0x100];
        code64.extend_from_slice(code);
        let (mut cpu, mut ram) = machine(&code64);
        assert_eq!(cpu.run(&mut ram, 1000), Ok(StopReason::BudgetExhausted));
        assert_eq!(cpu.mode(), Mode::Long64, "{name}");
        assert!(cpu.gpr(Gpr::Rcx) > 0x3000_0000, "{name}: in the loop");
        g.bench_function(name, |b| {
            b.iter(|| assert_eq!(cpu.run(&mut ram, N), Ok(StopReason::BudgetExhausted)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
