//! Loading the built-in user programs: an ELF64 executable (System V gABI, x86-64 psABI) whose
//! PT_LOAD segments are copied into fresh, zeroed user pages with the segment's rights.

use crate::errno::{EINVAL, Errno};
use crate::mm::{PAGE_SIZE, VirtAddr, page_align_down, page_align_up};
use crate::vm::{Mm, PROT_EXEC, PROT_READ, PROT_WRITE};

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PHDR_SIZE: usize = 56;
/// Lowest address a segment may use (page 0 stays unmapped to catch null pointers).
const MIN_VADDR: u64 = 0x10_0000;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One loadable segment.
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    flags: u32,
}

fn segment(image: &[u8], at: usize) -> Option<Option<Segment>> {
    if u32_at(image, at)? != PT_LOAD {
        return Some(None);
    }
    Some(Some(Segment {
        flags: u32_at(image, at + 4)?,
        offset: u64_at(image, at + 8)?,
        vaddr: u64_at(image, at + 16)?,
        filesz: u64_at(image, at + 32)?,
        memsz: u64_at(image, at + 40)?,
    }))
}

/// Loads `image` into `mm`; returns the entry point. The heap starts after the last segment.
pub fn load(mm: &mut Mm, image: &[u8]) -> Result<u64, Errno> {
    let header_ok = image.get(..4) == Some(b"\x7fELF".as_slice())
        && image.get(4) == Some(&2) // ELFCLASS64
        && image.get(5) == Some(&1) // little endian
        && u16_at(image, 16) == Some(ET_EXEC)
        && u16_at(image, 18) == Some(EM_X86_64);
    if !header_ok {
        return Err(EINVAL);
    }
    let entry = u64_at(image, 24).ok_or(EINVAL)?;
    let phoff = u64_at(image, 32).ok_or(EINVAL)? as usize;
    let phnum = usize::from(u16_at(image, 56).ok_or(EINVAL)?);
    let mut image_end = 0;
    for i in 0..phnum {
        let Some(seg) = segment(image, phoff + i * PHDR_SIZE).ok_or(EINVAL)? else {
            continue;
        };
        let end = seg.vaddr.checked_add(seg.memsz).ok_or(EINVAL)?;
        let file_end = seg.offset.checked_add(seg.filesz).ok_or(EINVAL)?;
        if seg.vaddr < MIN_VADDR
            || seg.filesz > seg.memsz
            || file_end > image.len() as u64
            || end > crate::vm::MMAP_BASE
        {
            return Err(EINVAL);
        }
        let mut prot = PROT_READ;
        if seg.flags & PF_W != 0 {
            prot |= PROT_WRITE;
        }
        if seg.flags & PF_X != 0 {
            prot |= PROT_EXEC;
        }
        let start = page_align_down(seg.vaddr);
        let end = page_align_up(end).ok_or(EINVAL)?;
        mm.add_region(start, end, prot)?;
        let mut page = start;
        while page < end {
            // The part of [vaddr, vaddr + filesz) inside this page comes from the file.
            let from = seg.vaddr.max(page);
            let to = (seg.vaddr + seg.filesz).min(page + PAGE_SIZE);
            let bytes = if from < to {
                let off = (seg.offset + (from - seg.vaddr)) as usize;
                &image[off..off + (to - from) as usize]
            } else {
                &[]
            };
            mm.map_filled(
                VirtAddr::new(page),
                prot,
                (from.max(page) - page) as usize % PAGE_SIZE as usize,
                bytes,
            )?;
            page += PAGE_SIZE;
        }
        image_end = image_end.max(end);
    }
    if image_end == 0 {
        return Err(EINVAL);
    }
    mm.set_heap_start(image_end);
    Ok(entry)
}
