//! The guest runtime's multiboot1 information parser (`guests/rt/src/multiboot/info.rs`, multiboot
//! spec 0.6.96 §3.3), tested on the host against hand-built information structures: memory map,
//! command line, modules, the mem_lower/mem_upper fallback, and malformed or oversized input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

#[path = "../../../guests/rt/src/multiboot/info.rs"]
#[allow(dead_code)]
mod info;

use info::{BootInfo, MEMORY_AVAILABLE, MemoryRegion, PhysMemory};

/// 64 KiB of physical memory; a read outside it fails the test.
struct Memory(Vec<u8>);

impl PhysMemory for Memory {
    fn read_u8(&self, pa: u64) -> u8 {
        *self
            .0
            .get(pa as usize)
            .unwrap_or_else(|| panic!("read outside memory at {pa:#x}"))
    }
}

impl Memory {
    fn new() -> Self {
        Memory(vec![0; 0x10000])
    }

    fn put(&mut self, at: u64, bytes: &[u8]) {
        self.0[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    }

    fn put32(&mut self, at: u64, v: u32) {
        self.put(at, &v.to_le_bytes());
    }

    fn put64(&mut self, at: u64, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    /// A memory-map entry at `at` with the given `size` field; returns the next entry's address.
    fn entry(&mut self, at: u64, size: u32, base: u64, length: u64, kind: u32) -> u64 {
        self.put32(at, size);
        self.put64(at + 4, base);
        self.put64(at + 12, length);
        self.put32(at + 20, kind);
        at + u64::from(size) + 4
    }
}

const INFO: u64 = 0x1000;
const CMDLINE: u64 = 0x2000;
const MMAP: u64 = 0x3000;
const MODS: u64 = 0x4000;

fn parse(mem: &Memory) -> Box<BootInfo> {
    let mut boot = Box::new(BootInfo::EMPTY);
    info::parse(mem, INFO, &mut boot);
    boot
}

fn region(base: u64, length: u64, kind: u32) -> MemoryRegion {
    MemoryRegion { base, length, kind }
}

#[test]
fn memory_map_command_line_and_modules() {
    let mut m = Memory::new();
    m.put32(INFO, (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6));
    m.put32(INFO + 16, CMDLINE as u32);
    m.put(CMDLINE, b"/boot/guest-os kbuild jobs=4\0");
    m.put32(INFO + 20, 2);
    m.put32(INFO + 24, MODS as u32);
    for (i, (start, end, name)) in [
        (0x20_0000u32, 0x20_1000u32, &b"one a=b\0"[..]),
        (0x30_0000, 0x30_0800, b"\0"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = MODS + 16 * i as u64;
        m.put32(at, start);
        m.put32(at + 4, end);
        m.put32(at + 8, 0x5000 + 0x100 * i as u32);
        m.put(0x5000 + 0x100 * i as u64, name);
    }
    let mut at = m.entry(MMAP, 20, 0, 0x9_fc00, MEMORY_AVAILABLE);
    at = m.entry(at, 20, 0xf_0000, 0x1_0000, 2);
    at = m.entry(at, 28, 0x10_0000, 0x7ef_0000, MEMORY_AVAILABLE); // larger size field: skipped tail
    m.put32(INFO + 44, (at - MMAP) as u32);
    m.put32(INFO + 48, MMAP as u32);

    let boot = parse(&m);
    assert_eq!(boot.cmdline(), "/boot/guest-os kbuild jobs=4");
    assert_eq!(
        boot.regions(),
        [
            region(0, 0x9_fc00, 1),
            region(0xf_0000, 0x1_0000, 2),
            region(0x10_0000, 0x7ef_0000, 1)
        ]
    );
    assert_eq!(boot.available().count(), 2);
    let modules = boot.modules();
    assert_eq!(modules.len(), 2);
    assert_eq!(
        (modules[0].start, modules[0].end, modules[0].name()),
        (0x20_0000, 0x20_1000, "one a=b")
    );
    assert_eq!(
        (modules[1].start, modules[1].end, modules[1].name()),
        (0x30_0000, 0x30_0800, "")
    );
    assert!(!boot.truncated && !boot.cmdline_truncated());
}

#[test]
fn without_a_map_mem_lower_and_mem_upper_describe_memory() {
    let mut m = Memory::new();
    m.put32(INFO, 1 << 0);
    m.put32(INFO + 4, 639);
    m.put32(INFO + 8, 130_048);
    let boot = parse(&m);
    assert_eq!(
        boot.regions(),
        [region(0, 639 * 1024, 1), region(1 << 20, 130_048 * 1024, 1)]
    );
    assert_eq!(boot.cmdline(), "");
    assert!(boot.modules().is_empty());
}

#[test]
fn flags_decide_what_is_read() {
    let mut m = Memory::new();
    // Fields for everything, but no flag set: nothing is taken.
    m.put32(INFO + 16, CMDLINE as u32);
    m.put(CMDLINE, b"ignored\0");
    m.put32(INFO + 20, 1);
    m.put32(INFO + 44, 24);
    m.put32(INFO + 48, MMAP as u32);
    m.entry(MMAP, 20, 0, 0x1000, 1);
    let boot = parse(&m);
    assert_eq!(boot.cmdline(), "");
    assert!(boot.regions().is_empty() && boot.modules().is_empty());
}

#[test]
fn malformed_and_oversized_input_is_cut_not_followed() {
    let mut m = Memory::new();
    m.put32(INFO, (1 << 2) | (1 << 3) | (1 << 6));
    // A command line longer than the copy, with invalid UTF-8 after a valid prefix.
    m.put32(INFO + 16, 0x6000);
    m.put(0x6000, &[b'x'; 5000]);
    // More modules than fit.
    m.put32(INFO + 20, 1000);
    m.put32(INFO + 24, MODS as u32);
    // A map whose second entry claims size 4: parsing stops there.
    let at = m.entry(MMAP, 20, 0x10_0000, 0x10_0000, 1);
    m.entry(at, 4, 0x20_0000, 0x10_0000, 1);
    m.put32(INFO + 44, 0x1000);
    m.put32(INFO + 48, MMAP as u32);
    let boot = parse(&m);
    assert_eq!(boot.cmdline().len(), 4096);
    assert!(boot.cmdline_truncated());
    assert_eq!(boot.modules().len(), 16);
    assert_eq!(boot.regions(), [region(0x10_0000, 0x10_0000, 1)]);
    assert!(boot.truncated);

    let mut m = Memory::new();
    m.put32(INFO, 1 << 2);
    m.put32(INFO + 16, CMDLINE as u32);
    m.put(CMDLINE, b"cpu \xff\xfe iters=3\0");
    assert_eq!(
        parse(&m).cmdline(),
        "cpu ",
        "cut at the first invalid UTF-8 byte"
    );
}
