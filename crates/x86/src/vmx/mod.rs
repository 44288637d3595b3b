//! Intel VMX definitions: VMCS field encodings, exit reasons and exit information, VM-instruction
//! errors, VMX controls and the capability MSRs (SDM Vol. 3C chapters 24–31, "Introduction to
//! Virtual Machine Extensions" to "VMX Instruction Reference", and Vol. 3D Appendices A–C).
//!
//! - [`fields`]: [`VmcsField`], every field of Appendix B, with width, type, index and the typed
//!   write path ([`WritableField`]) that keeps VMWRITE away from read-only fields.
//! - [`exit`]: basic exit reasons (Appendix C), the exit-reason field, exit qualifications,
//!   instruction information and interruption information (§25.9, §28.2).
//! - [`error`]: VM-instruction error numbers (§31.4).
//! - [`controls`]: named bits of every control class, their default1 bits (§A.2), and the guest
//!   non-register state (§25.4.2).
//! - [`caps`]: the capability MSR layouts and the allowed-0/allowed-1 rules (Appendix A).
//!
//! Section numbers follow the 2023–2024 SDM editions (chapter 25 is "Virtual Machine Control
//! Structures"); every module also names the sections it cites, so they can be found in editions
//! that number the chapters differently.

pub mod caps;
pub mod controls;
pub mod error;
pub mod exit;
pub mod fields;

pub use caps::{
    AllowedControls, AllowedControls64, EptVpidCap, FixedBits, VmcsEnum, VmxBasic, VmxCapabilities,
    VmxMisc,
};
pub use error::VmInstructionError;
pub use exit::{ExitReason, ExitReasonField, InterruptionInfo, InterruptionType};
pub use fields::{
    Capability, VmcsAccess, VmcsEncoding, VmcsField, VmcsFieldKind, VmcsFieldWidth, VmwriteScope,
    WritableEncoding, WritableField,
};
