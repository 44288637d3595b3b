//! guest-hv's multiboot1 loader (`guests/hv/src/load.rs`), tested on the host: the modules
//! it hands to its guest go page-aligned after the image, above 1 MiB, in order, without
//! overlapping the image, the boot information or each other; the information structure
//! (read back with the guest runtime's own parser, `guests/rt/src/multiboot/info.rs`) lists
//! them with their strings, at 0x9000 when conventional memory is free and after the modules
//! when the image occupies it; too much to load is an error, never a write outside the RAM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

extern crate alloc;

#[path = "../../../guests/hv/src/load.rs"]
#[allow(dead_code)]
mod load;

#[path = "../../../guests/rt/src/multiboot/info.rs"]
#[allow(dead_code)]
mod info;

use info::{BootInfo, MEMORY_AVAILABLE, PhysMemory};
use load::{Module, multiboot};

const MIB: u64 = 1 << 20;

/// Guest RAM as the information parser reads it.
struct Ram<'a>(&'a [u8]);

impl PhysMemory for Ram<'_> {
    fn read_u8(&self, pa: u64) -> u8 {
        *self
            .0
            .get(pa as usize)
            .unwrap_or_else(|| panic!("read outside RAM at {pa:#x}"))
    }
}

fn rd32(ram: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(ram[at as usize..at as usize + 4].try_into().unwrap())
}

/// A multiboot image with the a.out-kludge addresses: `code` loaded at `load`, then `bss`
/// zeroed bytes; the entry point is the code.
fn aout_image(load: u32, code: &[u8], bss: u32) -> Vec<u8> {
    let magic = 0x1bad_b002u32;
    let flags = 1u32 << 16;
    let end = load + 32 + code.len() as u32;
    let mut v = Vec::new();
    for w in [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        load,
        load,
        end,
        end + bss,
        load + 32,
    ] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(code);
    v
}

/// The information at `info` in `ram`, parsed as the guest's runtime parses it.
fn parse(ram: &[u8], info: u32) -> Box<BootInfo> {
    let mut boot = Box::new(BootInfo::EMPTY);
    info::parse(&Ram(ram), u64::from(info), &mut boot);
    boot
}

#[test]
fn modules_follow_the_image_page_aligned_and_are_listed_with_their_strings() {
    let mut ram = vec![0xccu8; 16 * MIB as usize];
    let image = aout_image(0x10_0000, &[0x90, 0xf4], 0x3_0000);
    let big = vec![7u8; 0x2_1234];
    let modules = [
        Module {
            data: b"NR_CPUS=1\nMEMSIZE=16\n",
            string: "/tmp/env",
        },
        Module {
            data: &big,
            string: "big a=1 b=2",
        },
        Module {
            data: b"",
            string: "empty",
        },
        Module {
            data: b"last",
            string: "",
        },
    ];
    let loaded = multiboot(&mut ram, &image, "guest-os cpu iters=1", &modules).unwrap();
    assert_eq!(loaded.entry, 0x10_0020);
    assert_eq!(loaded.info, 0x9000);
    let image_end = 0x10_0022 + 0x3_0000;
    assert!(ram[0x10_0022..image_end].iter().all(|&b| b == 0), "bss");

    let boot = parse(&ram, loaded.info);
    assert!(!boot.truncated);
    assert_eq!(boot.cmdline(), "guest-os cpu iters=1");
    let flags = rd32(&ram, 0x9000);
    assert_eq!(flags, (1 << 0) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9));
    let name = rd32(&ram, 0x9000 + 64) as usize;
    assert_eq!(&ram[name..name + 9], b"guest-hv\0");
    let got = boot.modules();
    assert_eq!(got.len(), modules.len());
    let mut next = (image_end as u64).next_multiple_of(4096);
    for (m, want) in got.iter().zip(&modules) {
        assert_eq!(m.name(), want.string);
        assert_eq!(
            m.start, next,
            "{}: page-aligned right after the previous",
            want.string
        );
        assert_eq!(m.end - m.start, want.data.len() as u64);
        assert_eq!(&ram[m.start as usize..m.end as usize], want.data);
        next = m.end.next_multiple_of(4096);
    }
    // The information, the module list and the strings lie in conventional memory, clear of
    // the image and the modules; the memory map says 16 MiB.
    let mods_addr = u64::from(rd32(&ram, 0x9000 + 24));
    assert!((0x9000..0xa_0000).contains(&mods_addr));
    assert!(mods_addr + 16 * modules.len() as u64 <= 0xa_0000);
    let regions = boot.regions();
    assert_eq!(regions.len(), 3);
    assert_eq!(
        (regions[2].base, regions[2].end(), regions[2].kind),
        (MIB, 16 * MIB, MEMORY_AVAILABLE)
    );
    assert_eq!(rd32(&ram, 0x9000 + 8), 15 * 1024, "mem_upper");
}

#[test]
fn without_modules_the_list_is_empty() {
    let mut ram = vec![0u8; 4 * MIB as usize];
    let image = aout_image(0x20_0000, &[0xf4], 0);
    let loaded = multiboot(&mut ram, &image, "k", &[]).unwrap();
    let boot = parse(&ram, loaded.info);
    assert!(boot.modules().is_empty());
    assert_eq!(rd32(&ram, u64::from(loaded.info) + 20), 0);
    assert_eq!(boot.cmdline(), "k");
}

#[test]
fn the_information_goes_after_the_modules_when_the_image_takes_low_memory() {
    let mut ram = vec![0u8; 4 * MIB as usize];
    // The image covers 0x8000..0xa000, across 0x9000.
    let image = aout_image(0x8000, &[0xf4], 0x1fdf);
    let modules = [Module {
        data: b"x",
        string: "m",
    }];
    let loaded = multiboot(&mut ram, &image, "low", &modules).unwrap();
    let boot = parse(&ram, loaded.info);
    let m = boot.modules()[0];
    assert_eq!((m.start, m.end), (MIB, MIB + 1), "modules stay above 1 MiB");
    assert!(u64::from(loaded.info) >= m.end);
    assert_eq!(boot.cmdline(), "low");
    assert_eq!(m.name(), "m");
    assert_eq!(ram[0x8020], 0xf4, "the image is intact");
}

#[test]
fn too_much_to_load_is_an_error() {
    let mut ram = vec![0u8; 2 * MIB as usize];
    let image = aout_image(0x10_0000, &[0xf4], 0);
    let big = vec![0u8; MIB as usize];
    let modules = [Module {
        data: &big,
        string: "big",
    }];
    assert_eq!(
        multiboot(&mut ram, &image, "", &modules).unwrap_err(),
        "the modules do not fit in the guest's RAM"
    );
    // Exactly filling the RAM is fine when the information goes low.
    let fits = vec![1u8; MIB as usize - 4096];
    let modules = [Module {
        data: &fits,
        string: "fits",
    }];
    let loaded = multiboot(&mut ram, &image, "", &modules).unwrap();
    let m = parse(&ram, loaded.info).modules()[0];
    assert_eq!(m.end, 2 * MIB);
    // With the image in low memory the information must follow the modules, and there is no
    // room left for it.
    let low = aout_image(0x8000, &[0xf4], 0x2000);
    let fill = vec![0u8; MIB as usize];
    let modules = [Module {
        data: &fill,
        string: "fill",
    }];
    assert_eq!(
        multiboot(&mut ram, &low, "", &modules).unwrap_err(),
        "the boot information does not fit in the guest's RAM"
    );
}
