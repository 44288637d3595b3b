//! String instructions: MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS, with REP/REPE/REPNE (SDM Vol.
//! 2B "MOVS", "REP/REPE/REPZ/REPNE/REPNZ"; Vol. 1 §7.3.9).
//!
//! The count register and the index registers have the instruction's address size; each
//! element moves RSI/RDI by the element size, down when RFLAGS.DF = 1. A repeated string
//! instruction runs in slices of at most [`SLICE`] iterations: between slices it is restarted
//! at the same RIP with updated registers, as the SDM allows for interrupt recognition, so
//! interrupts and the instruction budget are honoured during long copies. A fault in the middle
//! leaves the registers describing the iterations already done.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::seg_of;
use crate::fault::Ex;
use crate::flags::mask;
use crate::regs::Gpr;
use crate::state::Seg;
use x86::reg::rflags::{DF, ZF};

/// Iterations executed before a repeated string instruction yields to the run loop.
const SLICE: u64 = 1024;

impl Cpu {
    #[inline(never)]
    pub(crate) fn string<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        use M::*;
        let m = ins.mnemonic();
        let bytes: usize = match m {
            Movsb | Stosb | Lodsb | Cmpsb | Scasb | Insb | Outsb => 1,
            Movsw | Stosw | Lodsw | Cmpsw | Scasw | Insw | Outsw => 2,
            Movsd | Stosd | Lodsd | Cmpsd | Scasd | Insd | Outsd => 4,
            _ => 8,
        };
        let w = (bytes * 8) as u32;
        let abits = (0..ins.op_count())
            .find_map(|i| match ins.op_kind(i) {
                OpKind::MemorySegSI | OpKind::MemoryESDI => Some(16),
                OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(32),
                OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(64),
                _ => None,
            })
            .unwrap_or(64);
        let am = mask(abits);
        let src_seg = seg_of(ins.memory_segment());
        let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
        let compares = matches!(
            m,
            Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq
        );
        let step = if self.flags.get(DF) {
            (bytes as u64).wrapping_neg()
        } else {
            bytes as u64
        };
        let is_io = matches!(m, Insb | Insw | Insd | Outsb | Outsw | Outsd);
        if is_io {
            let port = self.gpr[Gpr::Rdx as usize] as u16;
            self.check_io(bus, port, bytes)?;
        }
        let mut done = 0;
        loop {
            if rep {
                if self.gpr[Gpr::Rcx as usize] & am == 0 {
                    break;
                }
                if done == SLICE {
                    // Restart the instruction with the registers as they are.
                    self.next_rip = self.rip;
                    break;
                }
            }
            let si = self.gpr[Gpr::Rsi as usize] & am;
            let di = self.gpr[Gpr::Rdi as usize] & am;
            let mut adv_si = false;
            let mut adv_di = false;
            match m {
                Movsb | Movsw | Movsd | Movsq => {
                    let v = self.read_seg(bus, src_seg, si, bytes)?;
                    self.write_seg(bus, Seg::Es, di, bytes, v)?;
                    adv_si = true;
                    adv_di = true;
                }
                Stosb | Stosw | Stosd | Stosq => {
                    let v = self.gpr[Gpr::Rax as usize];
                    self.write_seg(bus, Seg::Es, di, bytes, v)?;
                    adv_di = true;
                }
                Lodsb | Lodsw | Lodsd | Lodsq => {
                    let v = self.read_seg(bus, src_seg, si, bytes)?;
                    let r = crate::regs::GprRef {
                        index: 0,
                        width: w,
                        high: false,
                    };
                    crate::regs::write(&mut self.gpr, r, v);
                    adv_si = true;
                }
                Cmpsb | Cmpsw | Cmpsd | Cmpsq => {
                    let a = self.read_seg(bus, src_seg, si, bytes)?;
                    let b = self.read_seg(bus, Seg::Es, di, bytes)?;
                    self.alu_compute(super::arith::AluOp::Cmp, w, a, b);
                    adv_si = true;
                    adv_di = true;
                }
                Scasb | Scasw | Scasd | Scasq => {
                    let b = self.read_seg(bus, Seg::Es, di, bytes)?;
                    let a = self.gpr[Gpr::Rax as usize] & mask(w);
                    self.alu_compute(super::arith::AluOp::Cmp, w, a, b);
                    adv_di = true;
                }
                Insb | Insw | Insd => {
                    // The destination is checked before the port is read.
                    self.probe_write(bus, Seg::Es, di, bytes)?;
                    let port = self.gpr[Gpr::Rdx as usize] as u16;
                    self.touched_device = true;
                    let v = bus.io_in(port, bytes as u8, self.now());
                    self.write_seg(bus, Seg::Es, di, bytes, u64::from(v))?;
                    adv_di = true;
                }
                _ => {
                    let v = self.read_seg(bus, src_seg, si, bytes)?;
                    let port = self.gpr[Gpr::Rdx as usize] as u16;
                    self.touched_device = true;
                    bus.io_out(port, bytes as u8, v as u32, self.now());
                    adv_si = true;
                }
            }
            if adv_si {
                self.set_index(Gpr::Rsi, si.wrapping_add(step), abits);
            }
            if adv_di {
                self.set_index(Gpr::Rdi, di.wrapping_add(step), abits);
            }
            if !rep {
                break;
            }
            let c = (self.gpr[Gpr::Rcx as usize] & am).wrapping_sub(1);
            self.set_index(Gpr::Rcx, c, abits);
            done += 1;
            if compares {
                let zf = self.flags.get(ZF);
                if (ins.has_rep_prefix() && !zf) || (ins.has_repne_prefix() && zf) {
                    break;
                }
            }
            if is_io && self.touched_device && bus.stop_requested() {
                break;
            }
        }
        Ok(())
    }

    /// Writes an index/count register at the address size (16-bit: low word only; 32-bit:
    /// zero-extended).
    fn set_index(&mut self, r: Gpr, v: u64, abits: u32) {
        let g = crate::regs::GprRef {
            index: r as usize,
            width: abits,
            high: false,
        };
        crate::regs::write(&mut self.gpr, g, v);
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::run_bytes64;

    #[test]
    fn rep_movs_stos_scas() {
        // rep stosb: fill 300 bytes at 0x200000 with 0xaa
        let (c, bus) = run_bytes64(&[0xf3, 0xaa], |c| {
            c.gpr[0] = 0xaa;
            c.gpr[1] = 300;
            c.gpr[7] = 0x20_0000;
        });
        assert_eq!((c.gpr[1], c.gpr[7]), (0, 0x20_0000 + 300));
        assert_eq!(bus.ram[0x20_0000 + 299], 0xaa);
        assert_eq!(bus.ram[0x20_0000 + 300], 0);
        // std; rep movsq copies backwards, 3 qwords (more than one slice is not needed here)
        let (c, bus) = run_bytes64(&[0xfd, 0xf3, 0x48, 0xa5], |c| {
            c.gpr[1] = 3;
            c.gpr[6] = 0x10_0010; // source: the code page itself (bytes of this program)
            c.gpr[7] = 0x20_0010;
        });
        assert_eq!(c.gpr[6], 0x10_0010 - 24);
        assert_eq!(bus.read_u64(0x20_0010), bus.read_u64(0x10_0010));
        // repne scasb finds 0 after "ab"
        let (c, _) = run_bytes64(&[0xf2, 0xae], |c| {
            c.gpr[1] = 100;
            c.gpr[7] = 0x20_0000;
            c.gpr[0] = 0;
        });
        assert_eq!((c.gpr[1], c.gpr[7]), (99, 0x20_0001));
        // a long rep stosq (5000 iterations, several slices)
        let (c, bus) = run_bytes64(&[0xf3, 0x48, 0xab], |c| {
            c.gpr[0] = 1;
            c.gpr[1] = 5000;
            c.gpr[7] = 0x20_0000;
        });
        assert_eq!(c.gpr[1], 0);
        assert_eq!(bus.read_u64(0x20_0000 + 8 * 4999), 1);
    }
}
