//! Loading the guest's image and modules into its RAM as a multiboot1 loader would (GNU
//! Multiboot Specification 0.6.96 §3), with the placement conventions of nestvisor's own board
//! (`crates/machine/src/multiboot.rs`): the multiboot header is checked; its address fields
//! (the "a.out kludge") say where the image goes, or else the ELF32 or ELF64 program headers'
//! PT_LOAD segments are copied to their physical addresses (`p_paddr`) with the rest of
//! `p_memsz` zeroed, and the entry point is translated from a virtual to a physical address
//! when its segment says so (as GRUB 2 does). The modules follow the image, each page-aligned,
//! above 1 MiB. The information structure (§3.3: mem_lower/mem_upper, the command line, the
//! modules with their strings, a memory map, the boot loader's name) goes to conventional
//! memory from 0x9000, as QEMU and the board put it, or after the modules when the image
//! occupies that memory or it does not fit below 640 KiB. Nothing overlaps the image or
//! anything else, and everything is bounds-checked against the guest's RAM: a malformed image
//! or too much to load is an error, never a write outside it.

use alloc::vec;
use alloc::vec::Vec;

/// The multiboot header magic.
const HEADER_MAGIC: u32 = 0x1bad_b002;
/// Where the information goes when conventional memory is free (QEMU's `MULTIBOOT_STRUCT_ADDR`).
const LOW_INFO: u64 = 0x9000;
/// The end of conventional memory (640 KiB).
const LOW_END: u64 = 0xa_0000;
/// The reserved BIOS area of the memory map.
const BIOS_AREA: u64 = 0xf_0000;
/// Where the memory above the legacy hole starts.
const ONE_MIB: u64 = 0x10_0000;
/// Modules are page-aligned (header flag 0 asks for it; every module gets it).
const PAGE: u64 = 4096;
/// The information structure, up to and including the framebuffer fields (§3.3).
const INFO_SIZE: usize = 116;
/// `boot_loader_name`.
const LOADER_NAME: &str = "guest-hv";

/// Information flags (§3.3).
mod info_flag {
    /// mem_lower / mem_upper.
    pub const MEMORY: u32 = 1 << 0;
    /// cmdline.
    pub const CMDLINE: u32 = 1 << 2;
    /// mods_count / mods_addr.
    pub const MODS: u32 = 1 << 3;
    /// mmap_length / mmap_addr.
    pub const MMAP: u32 = 1 << 6;
    /// boot_loader_name.
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// A module to hand to the guest.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    /// Its contents.
    pub data: &'a [u8],
    /// Its string (by convention its name, then arguments).
    pub string: &'a str,
}

/// What the guest starts with.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// EIP at entry.
    pub entry: u32,
    /// EBX at entry: the information structure.
    pub info: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One PT_LOAD segment.
struct Segment {
    paddr: u64,
    vaddr: u64,
    offset: u64,
    filesz: u64,
    memsz: u64,
}

/// The PT_LOAD segments and the entry point of an ELF32 or ELF64 image.
fn elf(image: &[u8]) -> Result<(Vec<Segment>, u64), &'static str> {
    if image.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF image (the a.out kludge is not supported)");
    }
    let wide = match image.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("bad ELF class"),
    };
    let bad = "truncated ELF header";
    let (entry, phoff, phentsize, phnum) = if wide {
        (
            u64_at(image, 24).ok_or(bad)?,
            u64_at(image, 32).ok_or(bad)?,
            u16_at(image, 54).ok_or(bad)?,
            u16_at(image, 56).ok_or(bad)?,
        )
    } else {
        (
            u64::from(u32_at(image, 24).ok_or(bad)?),
            u64::from(u32_at(image, 28).ok_or(bad)?),
            u16_at(image, 42).ok_or(bad)?,
            u16_at(image, 44).ok_or(bad)?,
        )
    };
    let mut segments = Vec::new();
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|a| usize::try_from(a).ok())
            .ok_or("program header out of range")?;
        let bad = "truncated program header";
        if u32_at(image, at).ok_or(bad)? != 1 {
            continue; // not PT_LOAD
        }
        let s = if wide {
            Segment {
                offset: u64_at(image, at + 8).ok_or(bad)?,
                vaddr: u64_at(image, at + 16).ok_or(bad)?,
                paddr: u64_at(image, at + 24).ok_or(bad)?,
                filesz: u64_at(image, at + 32).ok_or(bad)?,
                memsz: u64_at(image, at + 40).ok_or(bad)?,
            }
        } else {
            Segment {
                offset: u64::from(u32_at(image, at + 4).ok_or(bad)?),
                vaddr: u64::from(u32_at(image, at + 8).ok_or(bad)?),
                paddr: u64::from(u32_at(image, at + 12).ok_or(bad)?),
                filesz: u64::from(u32_at(image, at + 16).ok_or(bad)?),
                memsz: u64::from(u32_at(image, at + 20).ok_or(bad)?),
            }
        };
        segments.push(s);
    }
    Ok((segments, entry))
}

/// The one segment and the entry point the header's address fields describe (the "a.out
/// kludge", §3.1.3): the file from the header's position minus (header_addr − load_addr), up
/// to load_end_addr (0: the end of the file), loaded at load_addr, zeroed to bss_end_addr.
fn aout_kludge(image: &[u8], header: usize) -> Result<(Vec<Segment>, u64), &'static str> {
    let field = |i: usize| u32_at(image, header + 12 + 4 * i).ok_or("truncated address fields");
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    let bad = "inconsistent address fields";
    let offset = (header as u64)
        .checked_sub(u64::from(header_addr.checked_sub(load_addr).ok_or(bad)?))
        .ok_or(bad)?;
    let filesz = if load_end == 0 {
        (image.len() as u64).checked_sub(offset).ok_or(bad)?
    } else {
        u64::from(load_end.checked_sub(load_addr).ok_or(bad)?)
    };
    let memsz = if bss_end == 0 {
        filesz
    } else {
        u64::from(bss_end.checked_sub(load_addr).ok_or(bad)?).max(filesz)
    };
    let segment = Segment {
        paddr: u64::from(load_addr),
        vaddr: u64::from(load_addr),
        offset,
        filesz,
        memsz,
    };
    Ok((vec![segment], u64::from(entry)))
}

/// The information structure at `base` with everything it points to, laid out from `base`
/// up: the structure, the command line, the boot loader's name, the module strings, the module
/// list, the memory map (for `ram` bytes of RAM). `mods` are (start, end, string).
fn information(
    base: u64,
    ram: u64,
    cmdline: &str,
    mods: &[(u64, u64, &str)],
) -> Result<Vec<u8>, &'static str> {
    let above = "the boot information lies above 4 GiB";
    let here = |b: &Vec<u8>| u32::try_from(base + b.len() as u64).map_err(|_| above);
    let put_str = |b: &mut Vec<u8>, s: &str| {
        let at = here(b)?;
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        Ok::<u32, &'static str>(at)
    };
    let align4 = |b: &mut Vec<u8>| b.resize(b.len().next_multiple_of(4), 0);
    let mut b = vec![0u8; INFO_SIZE];
    let cmdline_at = put_str(&mut b, cmdline)?;
    let name_at = put_str(&mut b, LOADER_NAME)?;
    let mut list = Vec::with_capacity(mods.len() * 16);
    for (start, end, string) in mods {
        let string_at = put_str(&mut b, string)?;
        for v in [*start, *end] {
            list.extend_from_slice(&u32::try_from(v).map_err(|_| above)?.to_le_bytes());
        }
        list.extend_from_slice(&string_at.to_le_bytes());
        list.extend_from_slice(&0u32.to_le_bytes()); // reserved
    }
    align4(&mut b);
    let mods_at = if mods.is_empty() { 0 } else { here(&b)? };
    b.extend_from_slice(&list);
    let mmap_at = here(&b)?;
    let map = [
        (0, LOW_END, 1u32),
        (BIOS_AREA, ONE_MIB - BIOS_AREA, 2),
        (ONE_MIB, ram.saturating_sub(ONE_MIB), 1),
    ];
    for (start, length, kind) in map {
        b.extend_from_slice(&20u32.to_le_bytes()); // size, not counting itself
        b.extend_from_slice(&start.to_le_bytes());
        b.extend_from_slice(&length.to_le_bytes());
        b.extend_from_slice(&kind.to_le_bytes());
    }
    here(&b)?;
    let mut set = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    set(
        0,
        info_flag::MEMORY
            | info_flag::CMDLINE
            | info_flag::MODS
            | info_flag::MMAP
            | info_flag::LOADER_NAME,
    );
    set(4, (LOW_END / 1024) as u32);
    set(
        8,
        u32::try_from(ram.saturating_sub(ONE_MIB) / 1024).unwrap_or(u32::MAX),
    );
    set(16, cmdline_at);
    set(
        20,
        u32::try_from(mods.len()).map_err(|_| "too many modules")?,
    );
    set(24, mods_at);
    set(44, (map.len() * 24) as u32);
    set(48, mmap_at);
    set(64, name_at);
    Ok(b)
}

/// Loads `image` into `ram` (guest-physical 0 upward) with command line `cmdline` and
/// `modules`, and writes the boot information.
pub fn multiboot(
    ram: &mut [u8],
    image: &[u8],
    cmdline: &str,
    modules: &[Module<'_>],
) -> Result<Loaded, &'static str> {
    // §3.1.1: the header, 4-byte aligned, in the first 8 KiB, with its checksum.
    let header = (0..8192usize.min(image.len()).saturating_sub(12))
        .step_by(4)
        .find(|&at| {
            u32_at(image, at) == Some(HEADER_MAGIC)
                && u32_at(image, at + 4)
                    .zip(u32_at(image, at + 8))
                    .is_some_and(|(f, c)| HEADER_MAGIC.wrapping_add(f).wrapping_add(c) == 0)
        })
        .ok_or("no multiboot header in the first 8 KiB")?;
    let flags = u32_at(image, header + 4).ok_or("truncated multiboot header")?;
    let (segments, entry) = if flags & (1 << 16) != 0 {
        aout_kludge(image, header)?
    } else {
        elf(image)?
    };
    if segments.is_empty() {
        return Err("the image has no PT_LOAD segment");
    }
    let size = ram.len() as u64;
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for s in &segments {
        let src_end = s
            .offset
            .checked_add(s.filesz)
            .ok_or("segment out of range")?;
        let dst_end = s.paddr.checked_add(s.memsz).ok_or("segment out of range")?;
        if s.filesz > s.memsz || src_end > image.len() as u64 || dst_end > size {
            return Err("a segment lies outside the image or the guest's RAM");
        }
        let (src, dst) = (s.offset as usize, s.paddr as usize);
        ram[dst..dst + s.filesz as usize].copy_from_slice(&image[src..src + s.filesz as usize]);
        ram[dst + s.filesz as usize..dst_end as usize].fill(0);
        (lo, hi) = (lo.min(s.paddr), hi.max(dst_end));
    }
    // The entry point, as a physical address.
    let entry = segments
        .iter()
        .find(|s| entry.checked_sub(s.vaddr).is_some_and(|o| o < s.memsz))
        .map_or(entry, |s| entry - s.vaddr + s.paddr);
    let entry = u32::try_from(entry).map_err(|_| "entry point above 4 GiB")?;

    // The modules, page-aligned after the image and above 1 MiB.
    let mut end = hi.max(ONE_MIB);
    let mut mods = Vec::with_capacity(modules.len());
    for m in modules {
        let start = end.next_multiple_of(PAGE);
        end = start
            .checked_add(m.data.len() as u64)
            .filter(|&e| e <= size)
            .ok_or("the modules do not fit in the guest's RAM")?;
        ram[start as usize..end as usize].copy_from_slice(m.data);
        mods.push((start, end, m.string));
    }

    // The information: in conventional memory if the image leaves it free and it fits there,
    // else after the modules.
    let low = (hi <= LOW_INFO || lo >= LOW_END)
        .then(|| information(LOW_INFO, size, cmdline, &mods))
        .transpose()?
        .filter(|b| LOW_INFO + b.len() as u64 <= LOW_END);
    let (base, info) = match low {
        Some(info) => (LOW_INFO, info),
        None => {
            let base = end.next_multiple_of(8);
            (base, information(base, size, cmdline, &mods)?)
        }
    };
    let info_end = base + info.len() as u64;
    if info_end > size {
        return Err("the boot information does not fit in the guest's RAM");
    }
    ram[base as usize..info_end as usize].copy_from_slice(&info);
    Ok(Loaded {
        entry,
        info: base as u32,
    })
}
