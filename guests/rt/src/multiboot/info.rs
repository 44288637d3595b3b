//! The multiboot1 information structure (multiboot spec 0.6.96 §3.3): flags, memory map,
//! command line and modules, parsed through a [`PhysMemory`] reader into a [`BootInfo`] of
//! fixed-size copies. Pure code over the reader, tested on the host
//! (`crates/nestvisor/tests/guest_os_multiboot.rs` includes this file).

/// Physical memory as the parser reads it (little endian).
pub trait PhysMemory {
    fn read_u8(&self, pa: u64) -> u8;

    fn read_u32(&self, pa: u64) -> u32 {
        u32::from_le_bytes(core::array::from_fn(|i| self.read_u8(pa + i as u64)))
    }

    fn read_u64(&self, pa: u64) -> u64 {
        u64::from(self.read_u32(pa)) | (u64::from(self.read_u32(pa + 4)) << 32)
    }
}

/// flags bit 0: mem_lower / mem_upper valid.
const INFO_MEMORY: u32 = 1 << 0;
/// flags bit 2: cmdline valid.
const INFO_CMDLINE: u32 = 1 << 2;
/// flags bit 3: mods_count / mods_addr valid.
const INFO_MODS: u32 = 1 << 3;
/// flags bit 6: mmap_length / mmap_addr valid.
const INFO_MMAP: u32 = 1 << 6;

/// Memory-map entry type of RAM available to the OS.
pub const MEMORY_AVAILABLE: u32 = 1;

const MAX_REGIONS: usize = 64;
const MAX_MODULES: usize = 16;
const MAX_CMDLINE: usize = 4096;
const MAX_MODULE_NAME: usize = 128;

/// One memory-map entry: `[base, base + length)` of type `kind` (1 = available RAM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub length: u64,
    pub kind: u32,
}

impl MemoryRegion {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.length)
    }
}

/// A boot module: physical `[start, end)` and the loader's string for it.
#[derive(Debug, Clone, Copy)]
pub struct Module {
    pub start: u64,
    pub end: u64,
    name: [u8; MAX_MODULE_NAME],
    name_len: usize,
}

impl Module {
    /// The module's string (its command line), lossily cut at the first invalid UTF-8 byte.
    pub fn name(&self) -> &str {
        utf8_prefix(&self.name[..self.name_len])
    }
}

/// What the loader told us, copied out of its memory.
#[derive(Debug)]
pub struct BootInfo {
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    cmdline_cut: bool,
    /// Entries or bytes the fixed-size copy had to leave out (anywhere).
    pub truncated: bool,
}

impl BootInfo {
    /// Nothing known yet.
    pub const EMPTY: BootInfo = BootInfo {
        regions: [MemoryRegion {
            base: 0,
            length: 0,
            kind: 0,
        }; MAX_REGIONS],
        region_count: 0,
        modules: [Module {
            start: 0,
            end: 0,
            name: [0; MAX_MODULE_NAME],
            name_len: 0,
        }; MAX_MODULES],
        module_count: 0,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
        cmdline_cut: false,
        truncated: false,
    };

    /// The memory map, in the loader's order.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Available RAM regions.
    pub fn available(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.regions().iter().filter(|r| r.kind == MEMORY_AVAILABLE)
    }

    /// The boot modules.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// The command line (empty if the loader gave none), cut at the first invalid UTF-8 byte.
    pub fn cmdline(&self) -> &str {
        utf8_prefix(&self.cmdline[..self.cmdline_len])
    }

    /// Whether the command line was longer than the copy and was cut.
    pub fn cmdline_truncated(&self) -> bool {
        self.cmdline_cut
    }
}

fn utf8_prefix(bytes: &[u8]) -> &str {
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        // The prefix up to valid_up_to() is valid UTF-8 by definition.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Copies the NUL-terminated string at `pa` into `out`; returns (length, truncated).
fn read_cstr(mem: &impl PhysMemory, pa: u64, out: &mut [u8]) -> (usize, bool) {
    for (i, slot) in out.iter_mut().enumerate() {
        let b = mem.read_u8(pa + i as u64);
        if b == 0 {
            return (i, false);
        }
        *slot = b;
    }
    (out.len(), true)
}

/// Fills `boot` from the information structure at physical `info`.
pub fn parse(mem: &impl PhysMemory, info: u64, boot: &mut BootInfo) {
    let flags = mem.read_u32(info);

    if flags & INFO_CMDLINE != 0 {
        let (len, cut) = read_cstr(mem, u64::from(mem.read_u32(info + 16)), &mut boot.cmdline);
        boot.cmdline_len = len;
        boot.cmdline_cut = cut;
        boot.truncated |= cut;
    }

    if flags & INFO_MODS != 0 {
        let count = mem.read_u32(info + 20) as usize;
        let base = u64::from(mem.read_u32(info + 24));
        boot.truncated |= count > MAX_MODULES;
        for i in 0..count.min(MAX_MODULES) {
            let m = base + 16 * i as u64;
            let module = &mut boot.modules[i];
            module.start = u64::from(mem.read_u32(m));
            module.end = u64::from(mem.read_u32(m + 4));
            let string = mem.read_u32(m + 8);
            if string != 0 {
                let (len, cut) = read_cstr(mem, u64::from(string), &mut module.name);
                module.name_len = len;
                boot.truncated |= cut;
            }
        }
        boot.module_count = count.min(MAX_MODULES);
    }

    if flags & INFO_MMAP != 0 {
        let length = u64::from(mem.read_u32(info + 44));
        let base = u64::from(mem.read_u32(info + 48));
        let mut entry = base;
        // Each entry: size (u32, not counting itself), base_addr (u64), length (u64), type (u32).
        while entry + 24 <= base + length {
            let size = u64::from(mem.read_u32(entry));
            if size < 20 {
                boot.truncated = true;
                break; // a malformed entry: too short to hold one, and no way to the next
            }
            let region = MemoryRegion {
                base: mem.read_u64(entry + 4),
                length: mem.read_u64(entry + 12),
                kind: mem.read_u32(entry + 20),
            };
            push_region(boot, region);
            entry += size + 4;
        }
    } else if flags & INFO_MEMORY != 0 {
        // No map: mem_lower KiB at 0 and mem_upper KiB at 1 MiB (spec §3.3).
        let lower = u64::from(mem.read_u32(info + 4)) * 1024;
        let upper = u64::from(mem.read_u32(info + 8)) * 1024;
        push_region(
            boot,
            MemoryRegion {
                base: 0,
                length: lower,
                kind: MEMORY_AVAILABLE,
            },
        );
        push_region(
            boot,
            MemoryRegion {
                base: 1 << 20,
                length: upper,
                kind: MEMORY_AVAILABLE,
            },
        );
    }
}

fn push_region(boot: &mut BootInfo, region: MemoryRegion) {
    if boot.region_count == MAX_REGIONS {
        boot.truncated = true;
        return;
    }
    boot.regions[boot.region_count] = region;
    boot.region_count += 1;
}
