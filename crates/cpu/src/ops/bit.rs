//! Bit instructions: BT, BTS, BTR, BTC (SDM Vol. 2A "BT" with the bit-string addressing of
//! memory operands), BSF, BSR, LZCNT, POPCNT, TZCNT, BSWAP.
//!
//! BMI1 is not advertised, so TZCNT (F3 0F BC) executes as BSF, as the SDM says for processors
//! without it. LZCNT and POPCNT are implemented and advertised. BSF/BSR leave the destination
//! unchanged for a zero source (what Intel hardware does; the SDM says undefined) and leave the
//! undefined flags unchanged.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::Loc;
use crate::fault::Ex;
use crate::flags::mask;
use x86::reg::rflags::{AF, CF, OF, PF, SF, ZF};

impl Cpu {
    pub(crate) fn bit_test<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let w = self.op_width(ins, 0);
        let writes = ins.mnemonic() != M::Bt;
        self.check_lock(ins, writes)?;
        let off_loc = self.loc(ins, 1);
        let raw = self.get(bus, off_loc, w)?;
        let mut dst = self.loc(ins, 0);
        let bit = raw & u64::from(w - 1);
        if let (Loc::Mem(seg, ea), OpKind::Register) = (dst, ins.op1_kind()) {
            // A register bit offset addresses a bit string: signed, any distance (Vol. 2A §3.1.1.9).
            let signed = ((raw << (64 - w)) as i64) >> (64 - w);
            let step = signed >> w.trailing_zeros();
            let delta = (step as u64).wrapping_mul(u64::from(w / 8));
            let addr_mask = mask(if self.code_bits == 64 { 64 } else { 32 });
            dst = Loc::Mem(seg, ea.wrapping_add(delta) & addr_mask);
        }
        let v = if writes {
            self.get_rmw(bus, dst, w)?
        } else {
            self.get(bus, dst, w)?
        };
        let cf = (v >> bit) & 1 != 0;
        self.flags.set(CF, cf);
        let r = match ins.mnemonic() {
            M::Bts => v | (1 << bit),
            M::Btr => v & !(1 << bit),
            M::Btc => v ^ (1 << bit),
            _ => return Ok(()),
        };
        self.put(bus, dst, w, r)
    }

    #[inline(never)]
    pub(crate) fn bit_scan<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let w = self.op_width(ins, 0);
        let src_loc = self.loc(ins, 1);
        let src = self.get(bus, src_loc, w)?;
        let dst = self.loc(ins, 0);
        match ins.mnemonic() {
            M::Bsf | M::Tzcnt | M::Bsr => {
                self.flags.set(ZF, src == 0);
                if src != 0 {
                    let r = if ins.mnemonic() == M::Bsr {
                        63 - u64::from(src.leading_zeros())
                    } else {
                        u64::from(src.trailing_zeros())
                    };
                    self.put(bus, dst, w, r)?;
                }
            }
            M::Lzcnt => {
                let r = u64::from((src << (64 - w)).leading_zeros()).min(u64::from(w));
                let b = self.flags.bits() & !(CF | ZF);
                self.flags
                    .set_bits(b | if src == 0 { CF } else { 0 } | if r == 0 { ZF } else { 0 });
                self.put(bus, dst, w, r)?;
            }
            _ => {
                let r = u64::from(src.count_ones());
                let b = self.flags.bits() & !(CF | ZF | OF | SF | AF | PF);
                self.flags.set_bits(b | if src == 0 { ZF } else { 0 });
                self.put(bus, dst, w, r)?;
            }
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn bswap(&mut self, ins: &Instruction) -> Ex<()> {
        let r = ins.op0_register();
        let v = self.reg(r);
        let out = match self.op_width(ins, 0) {
            64 => v.swap_bytes(),
            32 => u64::from((v as u32).swap_bytes()),
            // 16-bit BSWAP is undefined; Intel processors clear the register's low word.
            _ => 0,
        };
        self.set_reg(r, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::run_bytes64;
    use x86::reg::rflags::{CF, ZF};

    #[test]
    fn bt_family() {
        // bts rax, 63 (48 0f ba e8 3f)
        let (cpu, _) = run_bytes64(&[0x48, 0x0f, 0xba, 0xe8, 0x3f], |c| c.gpr[0] = 1);
        assert_eq!(cpu.gpr[0], 1 | (1 << 63));
        assert_eq!(cpu.rflags() & CF, 0);
        // btr eax, ebx (0f b3 d8), ebx = 32 + 0 -> bit 0
        let (cpu, _) = run_bytes64(&[0x0f, 0xb3, 0xd8], |c| {
            c.gpr[0] = 1;
            c.gpr[3] = 32;
        });
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(cpu.rflags() & CF, CF);
        // bt [rdi], rbx (48 0f a3 1f) with rbx = 8*8+3 = bit 3 of the qword at rdi+8
        let (cpu, _) = run_bytes64(&[0x48, 0x0f, 0xa3, 0x1f], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[3] = 67;
        });
        assert_eq!(cpu.rflags() & CF, 0);
        // lock btc qword [rdi], rbx: negative offset -1 -> bit 63 of the qword at rdi-8
        let (_, bus) = run_bytes64(&[0xf0, 0x48, 0x0f, 0xbb, 0x1f], |c| {
            c.gpr[7] = 0x20_0008;
            c.gpr[3] = u64::MAX;
        });
        assert_eq!(bus.read_u64(0x20_0000), 1 << 63);
    }

    #[test]
    fn scans_and_counts() {
        // bsf eax, ebx / bsr eax, ebx / popcnt rax, rbx / lzcnt eax, ebx / tzcnt eax, ebx
        let (cpu, _) = run_bytes64(&[0x0f, 0xbc, 0xc3], |c| c.gpr[3] = 0x50);
        assert_eq!(cpu.gpr[0], 4);
        let (cpu, _) = run_bytes64(&[0x0f, 0xbd, 0xc3], |c| c.gpr[3] = 0x50);
        assert_eq!(cpu.gpr[0], 6);
        let (cpu, _) = run_bytes64(&[0x0f, 0xbc, 0xc3], |c| {
            c.gpr[0] = 77;
            c.gpr[3] = 0;
        });
        assert_eq!(
            (cpu.gpr[0], cpu.rflags() & ZF),
            (77, ZF),
            "BSF of 0 keeps the destination"
        );
        let (cpu, _) = run_bytes64(&[0xf3, 0x48, 0x0f, 0xb8, 0xc3], |c| c.gpr[3] = 0xf0f0);
        assert_eq!(cpu.gpr[0], 8);
        let (cpu, _) = run_bytes64(&[0xf3, 0x0f, 0xbd, 0xc3], |c| c.gpr[3] = 0);
        assert_eq!((cpu.gpr[0], cpu.rflags() & (CF | ZF)), (32, CF));
        // tzcnt without BMI1 is BSF: zero source keeps the destination and sets ZF
        let (cpu, _) = run_bytes64(&[0xf3, 0x0f, 0xbc, 0xc3], |c| {
            c.gpr[0] = 5;
            c.gpr[3] = 0;
        });
        assert_eq!((cpu.gpr[0], cpu.rflags() & ZF), (5, ZF));
        // bswap eax / bswap rax
        let (cpu, _) = run_bytes64(&[0x0f, 0xc8], |c| c.gpr[0] = 0x1122_3344);
        assert_eq!(cpu.gpr[0], 0x4433_2211);
        let (cpu, _) = run_bytes64(&[0x48, 0x0f, 0xc8], |c| c.gpr[0] = 0x0102_0304_0506_0708);
        assert_eq!(cpu.gpr[0], 0x0807_0605_0403_0201);
    }
}
