//! Descriptor building blocks every image shares: the flat 64-bit code and data segment
//! descriptors for rings 0 and 3 (SDM Vol. 3A §3.4.5, Figure 3-8) and the 64-bit TSS with its
//! two-entry system descriptor ("Task Management in 64-bit Mode", Figure "64-Bit TSS Format").
//! Each image lays out its own GDT from them, as its SYSCALL/SYSRET or SYSENTER/SYSEXIT
//! selectors require.

/// 64-bit code, DPL 0: P, S, type execute/read, L.
pub const KERNEL_CODE64: u64 = 0x00AF_9A00_0000_FFFF;
/// Data, DPL 0: P, S, type read/write, 4-GiB limit.
pub const KERNEL_DATA: u64 = 0x00CF_9200_0000_FFFF;
/// Data, DPL 3.
pub const USER_DATA: u64 = 0x00CF_F200_0000_FFFF;
/// 64-bit code, DPL 3.
pub const USER_CODE64: u64 = 0x00AF_FA00_0000_FFFF;

/// System descriptor type 9 (available 64-bit TSS) with the present bit, as the access byte.
const TSS_AVAILABLE: u64 = 0x89;

/// The 64-bit TSS.
#[repr(C, packed(4))]
#[derive(Debug)]
pub struct Tss64 {
    reserved0: u32,
    /// RSP0–RSP2: the stacks of privilege changes to rings 0–2.
    pub rsp: [u64; 3],
    reserved1: u64,
    /// IST1–IST7: the interrupt stack table.
    pub ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap.
    pub iomap_base: u16,
}

const _: () = assert!(size_of::<Tss64>() == 104);

impl Tss64 {
    /// A TSS with no stacks yet and no I/O permission bitmap (the map base points past the
    /// limit, so port access from ring 3 raises #GP).
    pub const fn new() -> Self {
        Self {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: size_of::<Self>() as u16,
        }
    }
}

impl Default for Tss64 {
    fn default() -> Self {
        Self::new()
    }
}

/// The two GDT entries of an available 64-bit TSS at linear address `base`.
pub const fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (size_of::<Tss64>() - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (TSS_AVAILABLE << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}
