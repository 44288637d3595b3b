//! General-purpose registers and their 8/16/32/64-bit views (SDM Vol. 1 §3.4.1, §3.7.2.1:
//! a 32-bit write zero-extends into the full register, 8- and 16-bit writes merge).

use iced_x86::Register;

/// The sixteen general-purpose registers in encoding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// All sixteen, in encoding order.
    pub const ALL: [Gpr; 16] = {
        use Gpr::*;
        [
            Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8, R9, R10, R11, R12, R13, R14, R15,
        ]
    };

    /// The register numbered `n` in the encoding (the low four bits count).
    pub const fn from_index(n: u8) -> Gpr {
        Self::ALL[(n & 15) as usize]
    }
}

/// Where an iced register lives: register index, width in bits, and whether it is one of the
/// legacy high-byte registers AH/CH/DH/BH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GprRef {
    pub index: usize,
    pub width: u32,
    pub high: bool,
}

/// Maps an iced register number to a general-purpose register view, computed once.
const fn map(r: u32) -> Option<GprRef> {
    let al = Register::AL as u32;
    let ah = Register::AH as u32;
    let ax = Register::AX as u32;
    let eax = Register::EAX as u32;
    let rax = Register::RAX as u32;
    if r >= ah && r < ah + 4 {
        Some(GprRef {
            index: (r - ah) as usize,
            width: 8,
            high: true,
        })
    } else if r >= al && r < al + 20 {
        // AL, CL, DL, BL, then AH..BH (above), then SPL, BPL, SIL, DIL, R8L..R15L.
        let i = r - al;
        Some(GprRef {
            index: if i < 4 { i as usize } else { (i - 4) as usize },
            width: 8,
            high: false,
        })
    } else if r >= ax && r < ax + 16 {
        Some(GprRef {
            index: (r - ax) as usize,
            width: 16,
            high: false,
        })
    } else if r >= eax && r < eax + 16 {
        Some(GprRef {
            index: (r - eax) as usize,
            width: 32,
            high: false,
        })
    } else if r >= rax && r < rax + 16 {
        Some(GprRef {
            index: (r - rax) as usize,
            width: 64,
            high: false,
        })
    } else {
        None
    }
}

const TABLE: [Option<GprRef>; 256] = {
    let mut t = [None; 256];
    let mut r = 0;
    while r < 256 {
        t[r] = map(r as u32);
        r += 1;
    }
    t
};

/// Maps an iced general-purpose register; `None` for any other register.
#[inline(always)]
pub(crate) fn gpr_ref(reg: Register) -> Option<GprRef> {
    TABLE[reg as usize & 0xff]
}

/// Reads a register view.
#[inline]
pub(crate) fn read(gpr: &[u64; 16], r: GprRef) -> u64 {
    let v = gpr[r.index];
    match (r.width, r.high) {
        (8, true) => (v >> 8) & 0xff,
        (8, false) => v & 0xff,
        (16, _) => v & 0xffff,
        (32, _) => v & 0xffff_ffff,
        _ => v,
    }
}

/// Writes a register view with the SDM's merge / zero-extend rules.
#[inline]
pub(crate) fn write(gpr: &mut [u64; 16], r: GprRef, value: u64) {
    let slot = &mut gpr[r.index];
    *slot = match (r.width, r.high) {
        (8, true) => (*slot & !0xff00) | ((value & 0xff) << 8),
        (8, false) => (*slot & !0xff) | (value & 0xff),
        (16, _) => (*slot & !0xffff) | (value & 0xffff),
        (32, _) => value & 0xffff_ffff,
        _ => value,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iced_register_mapping() {
        let cases = [
            (Register::AL, 0, 8, false),
            (Register::BL, 3, 8, false),
            (Register::AH, 0, 8, true),
            (Register::BH, 3, 8, true),
            (Register::SPL, 4, 8, false),
            (Register::DIL, 7, 8, false),
            (Register::R8L, 8, 8, false),
            (Register::R15L, 15, 8, false),
            (Register::AX, 0, 16, false),
            (Register::R15W, 15, 16, false),
            (Register::ESP, 4, 32, false),
            (Register::R9D, 9, 32, false),
            (Register::RAX, 0, 64, false),
            (Register::R15, 15, 64, false),
        ];
        for (reg, index, width, high) in cases {
            assert_eq!(gpr_ref(reg), Some(GprRef { index, width, high }), "{reg:?}");
        }
        assert_eq!(gpr_ref(Register::CS), None);
        assert_eq!(gpr_ref(Register::RIP), None);
    }

    #[test]
    fn partial_writes_merge_and_32_bit_writes_zero_extend() {
        let mut g = [0u64; 16];
        g[0] = 0x1122_3344_5566_7788;
        write(&mut g, gpr_ref(Register::AH).unwrap(), 0xab);
        assert_eq!(g[0], 0x1122_3344_5566_ab88);
        write(&mut g, gpr_ref(Register::AX).unwrap(), 0xcdef);
        assert_eq!(g[0], 0x1122_3344_5566_cdef);
        write(&mut g, gpr_ref(Register::EAX).unwrap(), 0x1234_5678);
        assert_eq!(g[0], 0x1234_5678);
        assert_eq!(read(&g, gpr_ref(Register::AH).unwrap()), 0x56);
    }
}
