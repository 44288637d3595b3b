//! The multiboot1 loader (GNU Multiboot Specification 0.6.96, §3 "The exact definitions of
//! Multiboot Specification"; ELF per the System V ABI and its x86-64 supplement, the tool
//! interface standard ELF 1.2).
//!
//! - The header (§3.1.1–§3.1.3): magic 0x1BADB002, 32-bit aligned, wholly inside the first
//!   8192 bytes of the image; magic + flags + checksum = 0 (mod 2^32). Flags 0–15 are
//!   requirements: bit 0 (page-align modules) and bit 1 (memory information) are honoured,
//!   every other requirement (bit 2, video mode; bits 3–15, undefined) makes the load fail
//!   as §3.1.2 demands. Bit 16 selects the a.out-kludge address fields (§3.1.3), which then
//!   take precedence over an ELF header; bits 17–31 are optional and ignored.
//! - The image: with bit 16, the load/load-end/bss-end/entry addresses; otherwise an ELF32
//!   (EM_386) or ELF64 (EM_X86_64) executable whose PT_LOAD segments are copied to their
//!   physical addresses (p_paddr), the rest of p_memsz zeroed. As GRUB 2 does, an entry
//!   point inside a segment whose virtual and physical addresses differ is translated to the
//!   physical address.
//! - The boot information (§3.3): mem_lower/mem_upper (flag 0), the command line (flag 2),
//!   modules with their strings (flag 3), the memory map (flag 6), the boot loader name
//!   (flag 9). Modules are placed page-aligned after the image (above 1 MiB). The information
//!   structure, memory map, module list and strings go to conventional memory from 0x9000,
//!   below 640 KiB, where QEMU's loader also puts its information structure (0x9500) and
//!   memory map (0x9000) (`hw/i386/multiboot.c`, `MULTIBOOT_STRUCT_ADDR`): §3.3 lets the
//!   loader place them "anywhere in memory" and leaves it to the kernel to avoid them, and
//!   kernels written against QEMU, such as kvm-unit-tests, hand all memory from the end of
//!   their image up to `mem_upper` to an allocator and read the information structure again
//!   later. When the image occupies that range or the information does not fit below
//!   640 KiB, it goes after the modules instead. Everything stays below the end of RAM and
//!   overlaps neither the image nor each other.
//! - The machine state at entry (§3.2) is described by [`Loaded`]: EAX = 0x2BADB002,
//!   EBX = the information structure; the caller sets up the CPU.
//!
//! Every malformed input is a [`LoadError`] naming the problem, never a panic.

use thiserror::Error;
use x86::Gpa;
use x86::addr::PAGE_SIZE;

/// The header magic (§3.1.2).
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// EAX at the OS entry point (§3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header must lie wholly within this many bytes from the start of the image.
pub const HEADER_SEARCH: usize = 8192;

/// Header flag 0: align modules on page boundaries.
pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag 1: memory information required.
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Header flag 2: video mode table required.
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Header flag 16: the address fields at offsets 12–28 are valid (a.out kludge).
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// The requirement flags this loader honours.
const SUPPORTED_REQUIREMENTS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO;

/// Information flags (§3.3).
mod info_flag {
    pub const MEMORY: u32 = 1 << 0;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODS: u32 = 1 << 3;
    pub const MMAP: u32 = 1 << 6;
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// Size of the information structure up to and including the framebuffer fields (§3.3).
const INFO_SIZE: u64 = 116;
/// Name given in `boot_loader_name`.
pub const LOADER_NAME: &str = "nestvisor";

/// Start of the memory above the legacy hole.
const ONE_MIB: u64 = 0x10_0000;
/// End of conventional memory (640 KiB).
const LOW_MEMORY_END: u64 = 0xa_0000;
/// Start of the reserved BIOS area reported in the memory map.
const BIOS_AREA: u64 = 0xf_0000;
/// Where the boot information goes when it fits below [`LOW_MEMORY_END`]: QEMU's
/// `MULTIBOOT_STRUCT_ADDR`, clear of the real-mode IVT and BIOS data area (0–0x4FF) and of
/// the memory a kernel linked at 1 MiB or above calls free.
pub const LOW_INFO_BASE: u64 = 0x9000;

/// What is wrong with an image or the set of inputs.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LoadError {
    /// No 32-bit aligned magic in the first 8 KiB.
    #[error("no multiboot header (magic 0x1BADB002) in the first 8192 bytes")]
    NoHeader,
    /// The image ends inside the header.
    #[error("multiboot header at offset {offset:#x} is truncated (the file has {len} bytes)")]
    TruncatedHeader {
        /// Offset of the magic.
        offset: usize,
        /// Length of the file.
        len: usize,
    },
    /// magic + flags + checksum != 0.
    #[error(
        "multiboot header at offset {offset:#x}: bad checksum {checksum:#010x} for flags {flags:#010x}"
    )]
    BadChecksum {
        /// Offset of the magic.
        offset: usize,
        /// The header's flags.
        flags: u32,
        /// The header's checksum.
        checksum: u32,
    },
    /// Requirement bits this loader cannot meet.
    #[error("multiboot header requires unsupported features (flags bits {bits:#06x}{})", if bits & FLAG_VIDEO_MODE != 0 { ": video mode information" } else { "" })]
    UnsupportedFlags {
        /// The offending bits among 0–15.
        bits: u32,
    },
    /// Inconsistent a.out-kludge addresses.
    #[error("multiboot a.out-kludge addresses are invalid: {0}")]
    BadAddresses(&'static str),
    /// Not an ELF executable this loader understands (and no a.out kludge).
    #[error("not a loadable ELF image: {0}")]
    BadElf(&'static str),
    /// A part of the file lies beyond its end.
    #[error("image is truncated: {what} needs bytes {start:#x}..{end:#x} but the file has {len}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// First byte needed.
        start: u64,
        /// One past the last byte needed.
        end: u64,
        /// Length of the file.
        len: usize,
    },
    /// Something would be loaded outside RAM.
    #[error("{what} at {start:#x}..{end:#x} lies outside RAM (0..{ram:#x})")]
    OutsideRam {
        /// What.
        what: &'static str,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// RAM size.
        ram: u64,
    },
    /// The entry point is not in RAM or not 32-bit.
    #[error("entry point {0:#x} is outside RAM or above 4 GiB")]
    BadEntry(u64),
    /// Modules and boot information do not fit.
    #[error(
        "modules and boot information need memory up to {need:#x}, above the end of RAM ({ram:#x})"
    )]
    DoesNotFit {
        /// End of what would be needed.
        need: u64,
        /// RAM size.
        ram: u64,
    },
    /// A command line contains a NUL byte.
    #[error("command line {0:?} contains a NUL byte")]
    NulInCmdline(String),
}

/// A module to load, with its command line (by convention its path, then arguments).
#[derive(Clone, Debug)]
pub struct Module<'a> {
    /// The module's contents.
    pub data: &'a [u8],
    /// Its command line.
    pub cmdline: &'a str,
}

/// Where things went and how to enter the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// EIP at entry.
    pub entry: u32,
    /// EBX at entry: the physical address of the multiboot information structure.
    pub info: Gpa,
    /// Physical range of the kernel image including bss.
    pub image: (Gpa, Gpa),
    /// Physical ranges of the modules.
    pub modules: Vec<(Gpa, Gpa)>,
    /// One past the last byte used above the image: the modules, and the boot information
    /// when it did not go to conventional memory.
    pub end: Gpa,
}

/// A parsed multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    /// Flags.
    pub flags: u32,
    /// a.out-kludge fields: header, load, load_end, bss_end, entry addresses.
    pub addresses: Option<[u32; 5]>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Finds and checks the multiboot header (§3.1.1–§3.1.2).
pub fn parse_header(image: &[u8]) -> Result<Header, LoadError> {
    let window = &image[..image.len().min(HEADER_SEARCH)];
    let offset = (0..window.len().saturating_sub(3))
        .step_by(4)
        .find(|&o| le32(window, o) == Some(HEADER_MAGIC))
        .ok_or(LoadError::NoHeader)?;
    let truncated = LoadError::TruncatedHeader {
        offset,
        len: image.len(),
    };
    let flags = le32(image, offset + 4).ok_or(truncated.clone())?;
    let checksum = le32(image, offset + 8).ok_or(truncated.clone())?;
    if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
        return Err(LoadError::BadChecksum {
            offset,
            flags,
            checksum,
        });
    }
    let unsupported = flags & 0xffff & !SUPPORTED_REQUIREMENTS;
    if unsupported != 0 {
        return Err(LoadError::UnsupportedFlags { bits: unsupported });
    }
    let addresses = if flags & FLAG_AOUT_KLUDGE != 0 {
        let mut a = [0u32; 5];
        for (i, slot) in a.iter_mut().enumerate() {
            *slot = le32(image, offset + 12 + 4 * i).ok_or(truncated.clone())?;
        }
        Some(a)
    } else {
        None
    };
    Ok(Header {
        offset,
        flags,
        addresses,
    })
}

/// A piece of the image to place in memory: `file` bytes then zeros up to `mem_size`.
struct Segment<'a> {
    paddr: u64,
    file: &'a [u8],
    mem_size: u64,
}

fn file_range<'a>(
    image: &'a [u8],
    what: &'static str,
    start: u64,
    size: u64,
) -> Result<&'a [u8], LoadError> {
    let end = start.checked_add(size).ok_or(LoadError::Truncated {
        what,
        start,
        end: u64::MAX,
        len: image.len(),
    })?;
    let err = LoadError::Truncated {
        what,
        start,
        end,
        len: image.len(),
    };
    let (s, e) = (
        usize::try_from(start).map_err(|_| err.clone())?,
        usize::try_from(end).map_err(|_| err.clone())?,
    );
    image.get(s..e).ok_or(err)
}

/// The a.out-kludge layout (§3.1.3).
fn aout_segments<'a>(
    image: &'a [u8],
    h: &Header,
    a: [u32; 5],
) -> Result<(Vec<Segment<'a>>, u64), LoadError> {
    let [
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
        entry_addr,
    ] = a.map(u64::from);
    if load_addr > header_addr {
        return Err(LoadError::BadAddresses("load_addr is above header_addr"));
    }
    let before_header = header_addr - load_addr;
    let file_start =
        (h.offset as u64)
            .checked_sub(before_header)
            .ok_or(LoadError::BadAddresses(
                "header_addr - load_addr exceeds the header's file offset",
            ))?;
    let load_end = if load_end_addr == 0 {
        load_addr + (image.len() as u64 - file_start)
    } else {
        load_end_addr
    };
    if load_end < load_addr {
        return Err(LoadError::BadAddresses("load_end_addr is below load_addr"));
    }
    let bss_end = if bss_end_addr == 0 {
        load_end
    } else {
        bss_end_addr
    };
    if bss_end < load_end {
        return Err(LoadError::BadAddresses(
            "bss_end_addr is below load_end_addr",
        ));
    }
    let file = file_range(
        image,
        "a.out-kludge text and data",
        file_start,
        load_end - load_addr,
    )?;
    Ok((
        vec![Segment {
            paddr: load_addr,
            file,
            mem_size: bss_end - load_addr,
        }],
        entry_addr,
    ))
}

/// ELF32/ELF64 program headers (ELF 1.2 "Program Header"; x86-64 psABI §4).
fn elf_segments(image: &[u8]) -> Result<(Vec<Segment<'_>>, u64), LoadError> {
    if image.get(..4) != Some(b"\x7fELF") {
        return Err(LoadError::BadElf(
            "no ELF magic and no a.out-kludge header (flag 16)",
        ));
    }
    let trunc = |what, start: u64, size: u64| LoadError::Truncated {
        what,
        start,
        end: start + size,
        len: image.len(),
    };
    let class = *image.get(4).ok_or(trunc("ELF identification", 0, 16))?;
    let is64 = match class {
        1 => false,
        2 => true,
        _ => return Err(LoadError::BadElf("unknown ELF class")),
    };
    if image.get(5) != Some(&1) {
        return Err(LoadError::BadElf("not little-endian"));
    }
    let ehsize = if is64 { 64 } else { 52 };
    if image.len() < ehsize {
        return Err(trunc("ELF header", 0, ehsize as u64));
    }
    let e_type = le16(image, 16).unwrap_or(0);
    let machine = le16(image, 18).unwrap_or(0);
    if e_type != 2 {
        return Err(LoadError::BadElf("not an executable (e_type != ET_EXEC)"));
    }
    match (is64, machine) {
        (false, 3) | (true, 62) => {}
        (false, _) => return Err(LoadError::BadElf("ELF32 image is not for i386 (EM_386)")),
        (true, _) => {
            return Err(LoadError::BadElf(
                "ELF64 image is not for x86-64 (EM_X86_64)",
            ));
        }
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (
            le64(image, 24).unwrap_or(0),
            le64(image, 32).unwrap_or(0),
            le16(image, 54).unwrap_or(0),
            le16(image, 56).unwrap_or(0),
        )
    } else {
        (
            u64::from(le32(image, 24).unwrap_or(0)),
            u64::from(le32(image, 28).unwrap_or(0)),
            le16(image, 42).unwrap_or(0),
            le16(image, 44).unwrap_or(0),
        )
    };
    let min_entsize = if is64 { 56 } else { 32 };
    if phnum == 0 {
        return Err(LoadError::BadElf("no program headers"));
    }
    if phentsize < min_entsize {
        return Err(LoadError::BadElf("program header entries are too small"));
    }
    let table = file_range(
        image,
        "ELF program headers",
        phoff,
        u64::from(phentsize) * u64::from(phnum),
    )?;
    let mut segments = Vec::new();
    let mut entry_phys = entry;
    for i in 0..usize::from(phnum) {
        let p = &table[i * usize::from(phentsize)..];
        let field = |o32: usize, o64: usize| -> u64 {
            if is64 {
                le64(p, o64).unwrap_or(0)
            } else {
                u64::from(le32(p, o32).unwrap_or(0))
            }
        };
        if le32(p, 0) != Some(1) {
            continue; // not PT_LOAD
        }
        let (offset, vaddr, paddr, filesz, memsz) = (
            field(4, 8),
            field(8, 16),
            field(12, 24),
            field(16, 32),
            field(20, 40),
        );
        if filesz > memsz {
            return Err(LoadError::BadElf(
                "a PT_LOAD segment has p_filesz > p_memsz",
            ));
        }
        let file = file_range(image, "ELF segment contents", offset, filesz)?;
        if vaddr <= entry && entry - vaddr < memsz {
            entry_phys = paddr.wrapping_add(entry - vaddr);
        }
        segments.push(Segment {
            paddr,
            file,
            mem_size: memsz,
        });
    }
    if segments.is_empty() {
        return Err(LoadError::BadElf("no PT_LOAD segment"));
    }
    Ok((segments, entry_phys))
}

/// A bump allocator over physical memory, for modules and boot information.
struct Placer<'r> {
    ram: &'r mut [u8],
    cursor: u64,
    /// One past the last byte this placer may use (at most the RAM size).
    limit: u64,
}

impl Placer<'_> {
    fn alloc(&mut self, size: u64, align: u64) -> Result<u64, LoadError> {
        let ram = self.limit.min(self.ram.len() as u64);
        let start = Gpa::new(self.cursor)
            .checked_align_up(align)
            .ok_or(LoadError::DoesNotFit {
                need: u64::MAX,
                ram,
            })?
            .raw();
        let end = start.checked_add(size).ok_or(LoadError::DoesNotFit {
            need: u64::MAX,
            ram,
        })?;
        if end > ram {
            return Err(LoadError::DoesNotFit { need: end, ram });
        }
        self.cursor = end;
        Ok(start)
    }

    fn put(&mut self, bytes: &[u8], align: u64) -> Result<u64, LoadError> {
        let at = self.alloc(bytes.len() as u64, align)?;
        // In range: `alloc` checked `at + len <= ram.len()`.
        self.ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        Ok(at)
    }

    fn put_str(&mut self, s: &str) -> Result<u32, LoadError> {
        if s.as_bytes().contains(&0) {
            return Err(LoadError::NulInCmdline(s.to_owned()));
        }
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        Ok(self.put(&b, 1)? as u32)
    }
}

/// The memory map handed to the kernel for `ram` bytes of RAM: conventional memory, the BIOS
/// area (reserved), and everything above 1 MiB. (base, length, type: 1 available, 2 reserved)
pub fn memory_map(ram: u64) -> Vec<(u64, u64, u32)> {
    vec![
        (0, LOW_MEMORY_END, 1),
        (BIOS_AREA, ONE_MIB - BIOS_AREA, 2),
        (ONE_MIB, ram.saturating_sub(ONE_MIB), 1),
    ]
}

/// Loads `image` with `modules` and `cmdline` into `ram` (physical address 0 upwards) and
/// writes the boot information. RAM must be at least 2 MiB and at most 4 GiB.
pub fn load(
    ram: &mut [u8],
    image: &[u8],
    modules: &[Module<'_>],
    cmdline: &str,
) -> Result<Loaded, LoadError> {
    let header = parse_header(image)?;
    let (segments, entry) = match header.addresses {
        Some(a) => aout_segments(image, &header, a)?,
        None => elf_segments(image)?,
    };
    let ram_size = ram.len() as u64;
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for s in &segments {
        let end = s.paddr.saturating_add(s.mem_size);
        if end > ram_size {
            return Err(LoadError::OutsideRam {
                what: "image segment",
                start: s.paddr,
                end,
                ram: ram_size,
            });
        }
        lo = lo.min(s.paddr);
        hi = hi.max(end);
    }
    if entry >= ram_size || entry > u64::from(u32::MAX) {
        return Err(LoadError::BadEntry(entry));
    }
    for s in &segments {
        // In range: checked above against `ram_size`.
        let start = s.paddr as usize;
        ram[start..start + s.file.len()].copy_from_slice(s.file);
        ram[start + s.file.len()..start + s.mem_size as usize].fill(0);
    }

    let mut placer = Placer {
        ram: &mut *ram,
        cursor: hi.max(ONE_MIB),
        limit: ram_size,
    };
    let mut mods = Vec::with_capacity(modules.len());
    for m in modules {
        let start = placer.put(m.data, PAGE_SIZE)?;
        mods.push((start, start + m.data.len() as u64, m.cmdline));
    }
    let high = placer.cursor;
    // The boot information goes to conventional memory when the image leaves it free and it
    // fits there, otherwise after the modules.
    let low_free = hi <= LOW_INFO_BASE || lo >= LOW_MEMORY_END;
    let low = if low_free {
        let mut low = Placer {
            ram: &mut *ram,
            cursor: LOW_INFO_BASE,
            limit: LOW_MEMORY_END,
        };
        match write_info(&mut low, &mods, cmdline, ram_size) {
            Ok(info) => Some(info),
            Err(LoadError::DoesNotFit { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let (info, end) = match low {
        Some(info) => (info, high),
        None => {
            let mut placer = Placer {
                ram,
                cursor: high,
                limit: ram_size,
            };
            let info = write_info(&mut placer, &mods, cmdline, ram_size)?;
            (info, placer.cursor)
        }
    };

    Ok(Loaded {
        entry: entry as u32,
        info: Gpa::new(info),
        image: (Gpa::new(lo), Gpa::new(hi)),
        modules: mods
            .iter()
            .map(|(s, e, _)| (Gpa::new(*s), Gpa::new(*e)))
            .collect(),
        end: Gpa::new(end),
    })
}

/// Writes the information structure (§3.3) with the command line, the boot loader name, the
/// module list (`mods`: start, end, command line) and the memory map through `placer`, and
/// returns the structure's address.
fn write_info(
    placer: &mut Placer<'_>,
    mods: &[(u64, u64, &str)],
    cmdline: &str,
    ram_size: u64,
) -> Result<u64, LoadError> {
    let info = placer.alloc(INFO_SIZE, 8)?;
    let cmdline_addr = placer.put_str(cmdline)?;
    let name_addr = placer.put_str(LOADER_NAME)?;
    let mut mod_list = Vec::with_capacity(mods.len() * 16);
    for (start, end, line) in mods {
        let s = placer.put_str(line)?;
        for v in [*start as u32, *end as u32, s, 0] {
            mod_list.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mods_addr = if mods.is_empty() {
        0
    } else {
        placer.put(&mod_list, 4)? as u32
    };
    let mut mmap = Vec::new();
    for (base, len, kind) in memory_map(ram_size) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&base.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&kind.to_le_bytes());
    }
    let mmap_addr = placer.put(&mmap, 4)? as u32;

    let mut st = [0u8; INFO_SIZE as usize];
    let mut set = |off: usize, v: u32| st[off..off + 4].copy_from_slice(&v.to_le_bytes());
    set(
        0,
        info_flag::MEMORY
            | info_flag::CMDLINE
            | info_flag::MODS
            | info_flag::MMAP
            | info_flag::LOADER_NAME,
    );
    set(4, (LOW_MEMORY_END / 1024) as u32);
    set(8, (ram_size.saturating_sub(ONE_MIB) / 1024) as u32);
    set(16, cmdline_addr);
    set(20, mods.len() as u32);
    set(24, mods_addr);
    set(44, mmap.len() as u32);
    set(48, mmap_addr);
    set(64, name_addr);
    // In range: `alloc` reserved INFO_SIZE bytes at `info`.
    placer.ram[info as usize..(info + INFO_SIZE) as usize].copy_from_slice(&st);
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A multiboot header with the a.out kludge, loaded at `load` with the header first.
    pub fn aout_image(load: u32, code: &[u8], bss: u32) -> Vec<u8> {
        let flags = FLAG_AOUT_KLUDGE | FLAG_MEMORY_INFO;
        let mut v = Vec::new();
        let entry = load + 32;
        let end = load + 32 + code.len() as u32;
        for w in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
            load,
            load,
            end,
            end + bss,
            entry,
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(code);
        v
    }

    /// A minimal ELF32 executable with one PT_LOAD at `paddr` (vaddr `vaddr`) holding a
    /// multiboot header and `code`.
    pub fn elf32_image(vaddr: u32, paddr: u32, code: &[u8]) -> Vec<u8> {
        let flags = FLAG_MEMORY_INFO;
        let mut seg = Vec::new();
        for w in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ] {
            seg.extend_from_slice(&w.to_le_bytes());
        }
        seg.extend_from_slice(code);
        let phoff = 52u32;
        let off = 52 + 32;
        let mut v = Vec::new();
        v.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
        v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v.extend_from_slice(&3u16.to_le_bytes()); // EM_386
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&(vaddr + 12).to_le_bytes()); // e_entry: after the header
        v.extend_from_slice(&phoff.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes()); // shoff
        v.extend_from_slice(&0u32.to_le_bytes()); // flags
        for h in [52u16, 32, 1, 40, 0, 0] {
            v.extend_from_slice(&h.to_le_bytes());
        }
        for w in [
            1u32,
            off,
            vaddr,
            paddr,
            seg.len() as u32,
            seg.len() as u32 + 0x100,
            7,
            0x1000,
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&seg);
        v
    }

    /// A minimal ELF64 (EM_X86_64) executable with one PT_LOAD at `paddr` (vaddr `vaddr`).
    pub fn elf64_image(vaddr: u64, paddr: u64, code: &[u8]) -> Vec<u8> {
        let flags = FLAG_MEMORY_INFO;
        let mut seg = Vec::new();
        for w in [
            HEADER_MAGIC,
            flags,
            0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
        ] {
            seg.extend_from_slice(&w.to_le_bytes());
        }
        seg.extend_from_slice(code);
        let mut v = Vec::new();
        v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        v.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&(vaddr + 12).to_le_bytes()); // e_entry
        v.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        v.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        for h in [64u16, 56, 1, 64, 0, 0] {
            v.extend_from_slice(&h.to_le_bytes());
        }
        v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        v.extend_from_slice(&7u32.to_le_bytes()); // RWX
        for w in [
            120u64,
            vaddr,
            paddr,
            seg.len() as u64,
            seg.len() as u64 + 0x40,
            0x1000,
        ] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&seg);
        v
    }

    fn ram() -> Vec<u8> {
        vec![0xcc; 4 << 20]
    }

    fn rd32(ram: &[u8], at: u64) -> u32 {
        u32::from_le_bytes(ram[at as usize..at as usize + 4].try_into().unwrap())
    }

    fn cstr(ram: &[u8], at: u32) -> &str {
        let s = &ram[at as usize..];
        core::str::from_utf8(&s[..s.iter().position(|&b| b == 0).unwrap()]).unwrap()
    }

    #[test]
    fn aout_kludge_loads_bss_modules_and_info() {
        let img = aout_image(0x10_0000, &[0x90, 0xf4], 0x20);
        let mut ram = ram();
        let m = [
            Module {
                data: b"module-one",
                cmdline: "mod1 arg",
            },
            Module {
                data: &[7; 5000],
                cmdline: "mod2",
            },
        ];
        let l = load(&mut ram, &img, &m, "kernel console=ttyS0").unwrap();
        assert_eq!(l.entry, 0x10_0020);
        assert_eq!(&ram[0x10_0020..0x10_0022], &[0x90, 0xf4]);
        assert!(ram[0x10_0022..0x10_0042].iter().all(|&b| b == 0));
        assert_eq!(l.image, (Gpa::new(0x10_0000), Gpa::new(0x10_0042)));
        let info = l.info.raw();
        assert_eq!(rd32(&ram, info), 0x24d);
        assert_eq!(rd32(&ram, info + 4), 640);
        assert_eq!(rd32(&ram, info + 8), 3 * 1024);
        assert_eq!(cstr(&ram, rd32(&ram, info + 16)), "kernel console=ttyS0");
        assert_eq!(cstr(&ram, rd32(&ram, info + 64)), "nestvisor");
        assert_eq!(rd32(&ram, info + 20), 2);
        let mods = u64::from(rd32(&ram, info + 24));
        let (s0, e0) = (rd32(&ram, mods), rd32(&ram, mods + 4));
        assert_eq!(s0 % 4096, 0);
        assert!(u64::from(s0) >= 0x10_0042);
        assert_eq!(&ram[s0 as usize..e0 as usize], b"module-one");
        assert_eq!(cstr(&ram, rd32(&ram, mods + 8)), "mod1 arg");
        let (s1, e1) = (rd32(&ram, mods + 16), rd32(&ram, mods + 20));
        assert_eq!((s1 % 4096, e1 - s1), (0, 5000));
        assert!(s1 >= e0);
        assert_eq!(cstr(&ram, rd32(&ram, mods + 24)), "mod2");
        // Memory map: three entries of 24 bytes (size field 20).
        assert_eq!(rd32(&ram, info + 44), 72);
        let mm = u64::from(rd32(&ram, info + 48));
        assert_eq!(rd32(&ram, mm), 20);
        assert_eq!(rd32(&ram, mm + 4 + 8), 0xa_0000);
        assert_eq!(rd32(&ram, mm + 48 + 4), 0x10_0000);
        assert_eq!(rd32(&ram, mm + 48 + 12), 3 << 20);
        assert_eq!(rd32(&ram, mm + 48 + 20), 1);
        assert!(l.end.raw() <= 4 << 20);
    }

    #[test]
    fn elf32_with_translated_entry() {
        let img = elf32_image(0xc010_0000, 0x20_0000, &[0xf4]);
        let mut ram = ram();
        let l = load(&mut ram, &img, &[], "").unwrap();
        assert_eq!(l.entry, 0x20_000c);
        assert_eq!(ram[0x20_000c], 0xf4);
        assert!(ram[0x20_000d..0x20_010d].iter().all(|&b| b == 0));
        assert_eq!(l.info.raw(), LOW_INFO_BASE);
    }

    #[test]
    fn boot_information_in_conventional_memory_as_qemu() {
        // An image linked at 4 MiB (kvm-unit-tests' flat.lds) with one module: the module
        // follows the image, the information structure and everything it points to lie in
        // 0x9000..0xA0000, clear of the memory from the image's end to mem_upper.
        let img = elf32_image(0x40_0000, 0x40_0000, &[0xf4]);
        let mut ram = vec![0u8; 8 << 20];
        let m = [Module {
            data: b"NR_CPUS=1\nMEMSIZE=8\n",
            cmdline: "env",
        }];
        let l = load(&mut ram, &img, &m, "prog a b").unwrap();
        let info = l.info.raw();
        assert_eq!(info, LOW_INFO_BASE);
        let low = LOW_INFO_BASE..LOW_MEMORY_END;
        let cmdline = rd32(&ram, info + 16);
        assert_eq!(cstr(&ram, cmdline), "prog a b");
        let mods = rd32(&ram, info + 24);
        let mmap = rd32(&ram, info + 48);
        for a in [
            cmdline,
            mods,
            mmap,
            rd32(&ram, info + 64),
            rd32(&ram, u64::from(mods) + 8),
        ] {
            assert!(
                low.contains(&u64::from(a)),
                "{a:#x} outside conventional memory"
            );
        }
        let (s0, e0) = (rd32(&ram, u64::from(mods)), rd32(&ram, u64::from(mods) + 4));
        assert_eq!(u64::from(s0), l.image.1.raw().next_multiple_of(4096));
        assert_eq!(&ram[s0 as usize..e0 as usize], m[0].data);
        assert_eq!(l.end.raw(), u64::from(e0));
        // The map still calls conventional memory available: the kernel must avoid the
        // information while it uses it (§3.3), as under QEMU.
        assert_eq!(rd32(&ram, u64::from(mmap) + 4), 0);
        assert_eq!(rd32(&ram, u64::from(mmap) + 20), 1);
    }

    #[test]
    fn boot_information_after_the_modules_when_low_memory_is_taken() {
        // The image occupies conventional memory: the information follows the module.
        let img = aout_image(0x8000, &[0xf4], 0x2000);
        let mut ram = ram();
        let m = [Module {
            data: b"x",
            cmdline: "m",
        }];
        let l = load(&mut ram, &img, &m, "k").unwrap();
        assert_eq!(l.modules[0].0.raw(), ONE_MIB);
        assert!(l.info.raw() > ONE_MIB);
        assert_eq!(cstr(&ram, rd32(&ram, l.info.raw() + 16)), "k");
        assert!(l.end.raw() > l.info.raw());
        // A command line too long for conventional memory goes high as well.
        let img = aout_image(0x10_0000, &[0xf4], 0);
        let long = "a".repeat(0x9_8000);
        let l = load(&mut ram, &img, &[], &long).unwrap();
        assert!(l.info.raw() >= 0x10_0021);
        assert_eq!(cstr(&ram, rd32(&ram, l.info.raw() + 16)), long);
        // A NUL in the command line is an error wherever the information would go.
        assert!(matches!(
            load(&mut ram, &img, &[], "a\0b"),
            Err(LoadError::NulInCmdline(_))
        ));
    }

    #[test]
    fn elf64_loads_at_physical_addresses() {
        let img = elf64_image(0xffff_ffff_8010_0000, 0x10_0000, &[0x90, 0xf4]);
        let mut ram = ram();
        let l = load(&mut ram, &img, &[], "").unwrap();
        assert_eq!(l.entry, 0x10_000c);
        assert_eq!(&ram[0x10_000c..0x10_000e], &[0x90, 0xf4]);
        assert!(ram[0x10_000e..0x10_004e].iter().all(|&b| b == 0));
        // An entry point that maps to no segment and lies above 4 GiB is refused.
        let mut img = elf64_image(0x10_0000, 0x10_0000, &[0xf4]);
        img[24..32].copy_from_slice(&0x1_0000_0000u64.to_le_bytes());
        assert_eq!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::BadEntry(0x1_0000_0000))
        );
        // Wrong machine.
        let mut img = elf64_image(0x10_0000, 0x10_0000, &[0xf4]);
        img[18] = 3;
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::BadElf(_))
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        let mut ram = ram();
        assert_eq!(load(&mut ram, &[0; 100], &[], ""), Err(LoadError::NoHeader));
        let mut img = aout_image(0x10_0000, &[0xf4], 0);
        img[8] ^= 1;
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::BadChecksum { offset: 0, .. })
        ));
        // Video mode requirement.
        let flags = FLAG_VIDEO_MODE;
        let mut v = Vec::new();
        for w in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC + flags)] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        let e = load(&mut ram, &v, &[], "").unwrap_err();
        assert_eq!(e, LoadError::UnsupportedFlags { bits: 4 });
        assert!(e.to_string().contains("video mode"));
        // Segment beyond RAM.
        let img = aout_image(0x3f_fff0, &[0xf4; 64], 0);
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::OutsideRam { .. })
        ));
        // Header without ELF or kludge.
        let mut v = Vec::new();
        for w in [HEADER_MAGIC, 0, 0u32.wrapping_sub(HEADER_MAGIC)] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        assert!(matches!(
            load(&mut ram, &v, &[], ""),
            Err(LoadError::BadElf(_))
        ));
        // Header beyond 8 KiB.
        let mut far = vec![0u8; 8192];
        far.extend_from_slice(&aout_image(0x10_0000, &[0xf4], 0));
        assert_eq!(load(&mut ram, &far, &[], ""), Err(LoadError::NoHeader));
        // Modules that do not fit.
        let img = aout_image(0x10_0000, &[0xf4], 0);
        let big = vec![0u8; 4 << 20];
        assert!(matches!(
            load(
                &mut ram,
                &img,
                &[Module {
                    data: &big,
                    cmdline: "big"
                }],
                ""
            ),
            Err(LoadError::DoesNotFit { .. })
        ));
        assert!(matches!(
            load(&mut ram, &img, &[], "a\0b"),
            Err(LoadError::NulInCmdline(_))
        ));
        // ELF with a segment past the end of the file.
        let mut img = elf32_image(0x10_0000, 0x10_0000, &[0xf4]);
        img.truncate(img.len() - 1);
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    #[test]
    fn aout_address_checks() {
        let mut ram = ram();
        let mut img = aout_image(0x10_0000, &[0xf4], 0);
        // load_addr above header_addr.
        img[16..20].copy_from_slice(&0x10_0010u32.to_le_bytes());
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::BadAddresses(_))
        ));
        let mut img = aout_image(0x10_0000, &[0xf4], 0);
        // bss_end below load_end.
        img[24..28].copy_from_slice(&0x10_0001u32.to_le_bytes());
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::BadAddresses(_))
        ));
        // load_end beyond the file.
        let mut img = aout_image(0x10_0000, &[0xf4], 0);
        img[20..24].copy_from_slice(&0x10_1000u32.to_le_bytes());
        img[24..28].copy_from_slice(&0x10_1000u32.to_le_bytes());
        assert!(matches!(
            load(&mut ram, &img, &[], ""),
            Err(LoadError::Truncated { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut ram = vec![0u8; 2 << 20];
            let _ = load(&mut ram, &bytes, &[], "x");
        }

        #[test]
        fn random_headers_never_panic(fields in proptest::array::uniform8(any::<u32>()), tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let flags = fields[0] & !0xfffc; // only honoured requirement bits
            let mut v = Vec::new();
            for w in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            for w in &fields[1..6] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            v.extend_from_slice(&tail);
            let mut ram = vec![0u8; 2 << 20];
            if let Ok(l) = load(&mut ram, &v, &[], "x") {
                prop_assert!(l.end.raw() <= ram.len() as u64);
                prop_assert!(u64::from(l.entry) < ram.len() as u64);
            }
        }

        #[test]
        fn truncated_images_fail_cleanly(cut in 0usize..250, kind in 0u8..3) {
            let img = match kind {
                0 => elf32_image(0x10_0000, 0x10_0000, &[0xf4; 40]),
                1 => elf64_image(0x10_0000, 0x10_0000, &[0xf4; 40]),
                _ => aout_image(0x10_0000, &[0xf4; 40], 16),
            };
            let cut = cut.min(img.len());
            let mut ram = vec![0u8; 2 << 20];
            let r = load(&mut ram, &img[..cut], &[], "");
            if cut < img.len() {
                // The a.out kludge with load_end_addr set needs every byte; so does ELF.
                prop_assert!(r.is_err(), "truncated at {} loaded", cut);
            } else {
                prop_assert!(r.is_ok());
            }
        }
    }
}
