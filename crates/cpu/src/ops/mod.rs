//! Instruction semantics, one file per family (SDM Vol. 2A–2D).

pub(crate) mod arith;
pub(crate) mod bit;
pub(crate) mod control;
pub(crate) mod data;
pub(crate) mod hint;
pub(crate) mod io;
pub(crate) mod legacy;
pub(crate) mod logic;
pub(crate) mod muldiv;
pub(crate) mod shift;
pub(crate) mod stack;
pub(crate) mod string;
pub(crate) mod system;
pub(crate) mod vmx;
mod vmx_inv;
