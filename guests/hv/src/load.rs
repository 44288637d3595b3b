//! Loading the guest's image into its RAM as a multiboot1 loader would (GNU Multiboot
//! Specification 0.6.96 §3): the multiboot header is checked; its address fields (the "a.out
//! kludge") say where the image goes, or else the ELF32 or ELF64 program headers' PT_LOAD
//! segments are copied to their physical addresses (`p_paddr`) with the rest
//! of `p_memsz` zeroed, the entry point is translated from a virtual to a physical address
//! when its segment says so (as GRUB 2 does), and the information structure goes to low
//! memory at 0x9000 with the command line and a memory map (as QEMU and nestvisor's board put
//! it). Everything is bounds-checked against the guest's RAM: a malformed image is an error,
//! never a write outside it.

/// The multiboot header magic.
const HEADER_MAGIC: u32 = 0x1bad_b002;
/// Where the information structure, memory map and command line go.
const INFO: usize = 0x9000;
const MMAP: usize = 0x9100;
const CMDLINE: usize = 0x9200;
const CMDLINE_MAX: usize = 0xdff;

/// What the guest starts with.
#[derive(Clone, Copy, Debug)]
pub struct Loaded {
    /// EIP at entry.
    pub entry: u32,
    /// EBX at entry.
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
fn elf(image: &[u8]) -> Result<(alloc::vec::Vec<Segment>, u64), &'static str> {
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
    let mut segments = alloc::vec::Vec::new();
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
fn aout_kludge(
    image: &[u8],
    header: usize,
) -> Result<(alloc::vec::Vec<Segment>, u64), &'static str> {
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
    Ok((alloc::vec![segment], u64::from(entry)))
}

/// Loads `image` into `ram` (guest-physical 0 upward) with command line `cmdline`.
pub fn multiboot(ram: &mut [u8], image: &[u8], cmdline: &str) -> Result<Loaded, &'static str> {
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
    let low = INFO..CMDLINE + CMDLINE_MAX + 1;
    for s in &segments {
        let src_end = s
            .offset
            .checked_add(s.filesz)
            .ok_or("segment out of range")?;
        let dst_end = s.paddr.checked_add(s.memsz).ok_or("segment out of range")?;
        if s.filesz > s.memsz || src_end > image.len() as u64 || dst_end > ram.len() as u64 {
            return Err("a segment lies outside the image or the guest's RAM");
        }
        if s.paddr < low.end as u64 && dst_end > low.start as u64 {
            return Err("a segment overlaps the boot information at 0x9000");
        }
        let (src, dst) = (s.offset as usize, s.paddr as usize);
        ram[dst..dst + s.filesz as usize].copy_from_slice(&image[src..src + s.filesz as usize]);
        ram[dst + s.filesz as usize..dst_end as usize].fill(0);
    }
    // The entry point, as a physical address.
    let entry = segments
        .iter()
        .find(|s| entry >= s.vaddr && entry < s.vaddr + s.memsz)
        .map_or(entry, |s| entry - s.vaddr + s.paddr);
    let entry = u32::try_from(entry).map_err(|_| "entry point above 4 GiB")?;
    // §3.3: flags 0 (mem_lower/upper), 2 (cmdline), 6 (memory map).
    let size = ram.len() as u64;
    let put32 =
        |ram: &mut [u8], at: usize, v: u32| ram[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(ram, INFO, (1 << 0) | (1 << 2) | (1 << 6));
    put32(ram, INFO + 4, 640);
    put32(
        ram,
        INFO + 8,
        u32::try_from((size - (1 << 20)) / 1024).unwrap_or(u32::MAX),
    );
    put32(ram, INFO + 16, CMDLINE as u32);
    let map = [
        (0u64, 0xa_0000u64, 1u32),
        (0xf_0000, 0x1_0000, 2),
        (1 << 20, size - (1 << 20), 1),
    ];
    for (i, (base, length, kind)) in map.iter().enumerate() {
        let at = MMAP + i * 24;
        put32(ram, at, 20);
        ram[at + 4..at + 12].copy_from_slice(&base.to_le_bytes());
        ram[at + 12..at + 20].copy_from_slice(&length.to_le_bytes());
        put32(ram, at + 20, *kind);
    }
    put32(ram, INFO + 44, (map.len() * 24) as u32);
    put32(ram, INFO + 48, MMAP as u32);
    let bytes = cmdline.as_bytes();
    let n = bytes.len().min(CMDLINE_MAX);
    ram[CMDLINE..CMDLINE + n].copy_from_slice(&bytes[..n]);
    ram[CMDLINE + n] = 0;
    Ok(Loaded {
        entry,
        info: INFO as u32,
    })
}
