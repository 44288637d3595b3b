//! Port I/O: IN, OUT (string forms in [`super::string`]) with the protected-mode permission
//! check: CPL ≤ IOPL, or every bit for the accessed ports clear in the TSS I/O permission
//! bitmap (SDM Vol. 1 §19.5).

use iced_x86::{Instruction, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault};
use crate::state::Mode;
use x86::reg::rflags;

impl Cpu {
    /// I/O permission for `bytes` ports from `port`.
    pub(crate) fn check_io<B: Bus>(&mut self, bus: &mut B, port: u16, bytes: usize) -> Ex<()> {
        if self.mode == Mode::Real {
            return Ok(());
        }
        let iopl = ((self.flags.bits() & rflags::IOPL) >> rflags::IOPL_SHIFT) as u8;
        if self.cpl <= iopl {
            return Ok(());
        }
        // The bitmap needs a 32-bit or 64-bit TSS (type 9 or 11).
        if self.tr.ar & 0x9 != 0x9 || self.tr.limit < 0x67 {
            return Err(Fault::gp(0).into());
        }
        let base = self.read_lin(bus, self.tr.base + 0x66, 2, true)?;
        let at = base + u64::from(port / 8);
        if at + 1 > u64::from(self.tr.limit) {
            return Err(Fault::gp(0).into());
        }
        let bits = self.read_lin(bus, self.tr.base + at, 2, true)?;
        let mask = ((1u64 << bytes) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp(0).into());
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn port_io<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let is_in = ins.mnemonic() == iced_x86::Mnemonic::In;
        let (port_op, data_reg) = if is_in {
            (1, ins.op0_register())
        } else {
            (0, ins.op1_register())
        };
        let port = match ins.op_kind(port_op) {
            OpKind::Register => self.reg(Register::DX) as u16,
            _ => ins.immediate(port_op) as u16,
        };
        let bytes = data_reg.size();
        self.check_io(bus, port, bytes)?;
        self.touched_device = true;
        let now = self.now();
        if is_in {
            let v = bus.io_in(port, bytes as u8, now);
            self.set_reg(data_reg, u64::from(v));
        } else {
            let v = self.reg(data_reg) as u32;
            bus.io_out(port, bytes as u8, v, now);
        }
        Ok(())
    }
}
