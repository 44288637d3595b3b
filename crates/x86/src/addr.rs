//! Address and frame-number newtypes.
//!
//! Four address spaces meet in a nested hypervisor, and each has its own type:
//!
//! | type     | what it names                                                      |
//! |----------|--------------------------------------------------------------------|
//! | [`Gva`]  | a linear (virtual) address of the guest running at this level      |
//! | [`NGpa`] | a guest-physical address of a *nested* guest (translated by EPT12)  |
//! | [`Gpa`]  | a guest-physical address of this level's guest (translated by EPT01)|
//! | [`Hpa`]  | a host-physical address: this level's own memory                   |
//!
//! Arithmetic is by methods (`checked_add`, `align_down`, `page_offset`, `pt_index`), never by
//! operators, so that adding two addresses, or an address of one kind to another, is not
//! expressible. `Debug` names the kind: `GPA:0x1000`.
//!
//! Frame numbers ([`Gfn`], [`NGfn`], [`Hfn`]) are addresses shifted right by 12.

use core::fmt;

/// Size of a 4-KiB page, the smallest x86 page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Size of a 2-MiB large page.
pub const PAGE_SIZE_2M: u64 = 2 << 20;
/// Size of a 1-GiB huge page.
pub const PAGE_SIZE_1G: u64 = 1 << 30;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $tag:literal, $frame:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// The address zero.
            pub const ZERO: Self = Self(0);

            /// Wraps a raw 64-bit value.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw 64-bit value.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self + offset`, wrapping at 2^64.
            #[inline]
            pub const fn wrapping_add(self, offset: u64) -> Self {
                Self(self.0.wrapping_add(offset))
            }

            /// `self - offset`, or `None` on underflow.
            #[inline]
            pub const fn checked_sub(self, offset: u64) -> Option<Self> {
                match self.0.checked_sub(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The distance from `base` up to `self`, or `None` if `self` is below `base`.
            #[inline]
            pub const fn offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// Rounds down to a multiple of `align`, which must be a power of two.
            #[inline]
            pub const fn align_down(self, align: u64) -> Self {
                debug_assert!(align.is_power_of_two());
                Self(self.0 & !(align - 1))
            }

            /// Rounds up to a multiple of `align` (a power of two), or `None` on overflow.
            #[inline]
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                debug_assert!(align.is_power_of_two());
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                debug_assert!(align.is_power_of_two());
                self.0 & (align - 1) == 0
            }

            /// The offset inside the 4-KiB page.
            #[inline]
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// The 9-bit index into the paging structure of `level` for 4-level, 5-level, PAE
            /// (levels 1–2; level 3 is the 2-bit PDPTE index, taken from the same bits) and EPT
            /// paging: level 1 is the page table (bits 20:12), level 4 the PML4 (bits 47:39).
            #[inline]
            pub const fn pt_index(self, level: u32) -> usize {
                ((self.0 >> (PAGE_SHIFT + 9 * (level - 1))) & 0x1ff) as usize
            }

            /// The frame that contains this address.
            #[inline]
            pub const fn frame(self) -> $frame {
                $frame(self.0 >> PAGE_SHIFT)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, ":{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

macro_rules! frame {
    ($(#[$doc:meta])* $name:ident, $tag:literal, $addr:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw frame number.
            #[inline]
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw frame number.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// The address of the first byte of the frame (wrapping if the frame number does
            /// not fit in 52 bits, which no architectural frame does).
            #[inline]
            pub const fn addr(self) -> $addr {
                $addr(self.0 << PAGE_SHIFT)
            }

            /// The frame `n` frames after this one, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($tag, ":{:#x}"), self.0)
            }
        }
    };
}

address!(
    /// A guest linear ("virtual") address.
    Gva,
    "GVA",
    Gvfn
);
address!(
    /// A guest-physical address of this level's guest: what the guest's page tables produce
    /// and what EPT01 (or the shadow page tables) translate.
    Gpa,
    "GPA",
    Gfn
);
address!(
    /// A guest-physical address of a nested guest: what the nested guest's page tables produce
    /// and what EPT12 translates into a [`Gpa`].
    NGpa,
    "NGPA",
    NGfn
);
address!(
    /// A host-physical address: the memory of the level that owns the page tables being walked.
    Hpa,
    "HPA",
    Hfn
);

frame!(
    /// A guest virtual page number (a [`Gva`] shifted right by 12).
    Gvfn,
    "GVFN",
    Gva
);
frame!(
    /// A guest frame number (a [`Gpa`] shifted right by 12).
    Gfn,
    "GFN",
    Gpa
);
frame!(
    /// A nested-guest frame number (an [`NGpa`] shifted right by 12).
    NGfn,
    "NGFN",
    NGpa
);
frame!(
    /// A host frame number (an [`Hpa`] shifted right by 12).
    Hfn,
    "HFN",
    Hpa
);

impl Gva {
    /// Whether the address is canonical for a linear-address width of `bits` (48 for 4-level
    /// paging, 57 for 5-level): bits 63 down to `bits - 1` are all equal (SDM Vol. 1 §3.3.7.1).
    #[inline]
    pub const fn is_canonical(self, bits: u32) -> bool {
        let shift = 64 - bits;
        (((self.0 << shift) as i64) >> shift) as u64 == self.0
    }

    /// Sign-extends bit `bits - 1` into the upper bits.
    #[inline]
    pub const fn canonicalize(self, bits: u32) -> Self {
        let shift = 64 - bits;
        Self((((self.0 << shift) as i64) >> shift) as u64)
    }
}

/// Mask of the physical-address bits below `maxphyaddr` (bits `maxphyaddr-1 : 0`).
#[inline]
pub const fn phys_mask(maxphyaddr: u32) -> u64 {
    if maxphyaddr >= 64 {
        u64::MAX
    } else {
        (1u64 << maxphyaddr) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn debug_names_the_kind() {
        assert_eq!(format!("{:?}", Gpa::new(0x1000)), "GPA:0x1000");
        assert_eq!(
            format!("{:?}", Gva::new(0xffff_8000_0000_0000)),
            "GVA:0xffff800000000000"
        );
        assert_eq!(format!("{:?}", NGpa::new(0)), "NGPA:0x0");
        assert_eq!(format!("{:?}", Hpa::new(0x2000).frame()), "HFN:0x2");
    }

    #[test]
    fn alignment_and_offsets() {
        let a = Gpa::new(0x1234_5678);
        assert_eq!(a.align_down(PAGE_SIZE), Gpa::new(0x1234_5000));
        assert_eq!(a.page_offset(), 0x678);
        assert_eq!(
            a.checked_align_up(PAGE_SIZE_2M),
            Some(Gpa::new(0x1240_0000))
        );
        assert_eq!(Gpa::new(u64::MAX).checked_align_up(PAGE_SIZE), None);
        assert!(Gpa::new(0x20_0000).is_aligned(PAGE_SIZE_2M));
        assert_eq!(Gpa::new(u64::MAX).checked_add(1), None);
        assert_eq!(Gpa::new(0x3000).offset_from(Gpa::new(0x1000)), Some(0x2000));
        assert_eq!(Gpa::new(0x1000).offset_from(Gpa::new(0x3000)), None);
    }

    #[test]
    fn table_indices() {
        // PML4 index 0x1ff, PDPT 0x1fe, PD 0x1fd, PT 0x1fc, offset 0xabc.
        let va = Gva::new(0xffff_ffff_7f9f_cabc);
        assert_eq!(va.pt_index(4), 0x1ff);
        assert_eq!(va.pt_index(3), 0x1fd);
        assert_eq!(va.pt_index(2), 0x1fc);
        assert_eq!(va.pt_index(1), 0x1fc);
        let va = Gva::new((1 << 39) * 3 + (1 << 30) * 5 + (1 << 21) * 7 + (1 << 12) * 9 + 1);
        assert_eq!(
            [
                va.pt_index(4),
                va.pt_index(3),
                va.pt_index(2),
                va.pt_index(1)
            ],
            [3, 5, 7, 9]
        );
    }

    #[test]
    fn canonical_addresses() {
        assert!(Gva::new(0x0000_7fff_ffff_ffff).is_canonical(48));
        assert!(!Gva::new(0x0000_8000_0000_0000).is_canonical(48));
        assert!(Gva::new(0xffff_8000_0000_0000).is_canonical(48));
        assert!(Gva::new(0x0000_8000_0000_0000).is_canonical(57));
        assert_eq!(
            Gva::new(0x0000_8000_0000_0000).canonicalize(48),
            Gva::new(0xffff_8000_0000_0000)
        );
        assert_eq!(phys_mask(52), 0x000f_ffff_ffff_ffff);
    }
}
