//! The embedded guest-os image is a valid multiboot1 kernel (multiboot spec 0.6.96 §3.1): a
//! header in the first 8 KiB with a correct checksum and the a.out-kludge addresses, and those
//! addresses describe exactly the bytes the ELF program headers load, so a loader using either
//! gets the same memory image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure report

use nestvisor::images;

const MAGIC: u32 = 0x1BAD_B002;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn guest_os_is_a_multiboot_kernel_whose_kludge_matches_its_elf() {
    let image = images::by_name("guest-os").unwrap();
    // The header: 4-byte aligned, within the first 8192 bytes.
    let at = (0..8192.min(image.len() - 32))
        .step_by(4)
        .find(|&i| {
            u32_at(image, i) == MAGIC
                && u32_at(image, i)
                    .wrapping_add(u32_at(image, i + 4))
                    .wrapping_add(u32_at(image, i + 8))
                    == 0
        })
        .expect("no multiboot header in the first 8 KiB");
    let flags = u32_at(image, at + 4);
    assert_ne!(
        flags & FLAG_AOUT_KLUDGE,
        0,
        "the a.out-kludge addresses are needed (QEMU refuses ELF64)"
    );
    let [header_addr, load_addr, load_end, bss_end, entry] =
        [12, 16, 20, 24, 28].map(|o| u64::from(u32_at(image, at + o)));
    assert!(load_addr <= header_addr && header_addr < load_end && load_end <= bss_end);
    let file_base = at as u64 - (header_addr - load_addr); // file offset of load_addr
    assert!(file_base + (load_end - load_addr) <= image.len() as u64);
    assert!((load_addr..load_end).contains(&entry));

    // ELF64 program headers: every PT_LOAD lies inside [load_addr, bss_end) physically, its file
    // bytes at the offset the kludge implies.
    assert_eq!(&image[..4], b"\x7fELF");
    assert_eq!(image[4], 2, "ELFCLASS64");
    let phoff = u64_at(image, 32) as usize;
    let phentsize = usize::from(u16_at(image, 54));
    let phnum = usize::from(u16_at(image, 56));
    let mut loads = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(image, ph) != 1 {
            continue;
        }
        loads += 1;
        let (offset, paddr, filesz, memsz) = (
            u64_at(image, ph + 8),
            u64_at(image, ph + 24),
            u64_at(image, ph + 32),
            u64_at(image, ph + 40),
        );
        assert!(
            paddr >= load_addr && paddr + memsz <= bss_end,
            "segment {i} outside the kludge range"
        );
        assert_eq!(
            offset - file_base,
            paddr - load_addr,
            "segment {i}: file offset disagrees with the kludge"
        );
        assert!(
            paddr + filesz <= load_end,
            "segment {i}: file bytes beyond load_end_addr"
        );
    }
    assert!(loads > 0);
    assert_eq!(
        u64_at(image, 24),
        entry,
        "ELF entry and multiboot entry differ"
    );
}
