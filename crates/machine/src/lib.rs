//! The PC board: RAM, port and MMIO buses, the multiboot1 loader and the bare run loop that
//! drives the software CPU.
