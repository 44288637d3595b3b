//! One generic x86 page walker for every paging mode and for EPT, and the two-dimensional walk.
//!
//! (Being built: see docs/architecture.md.)

#![no_std]
