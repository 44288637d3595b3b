//! Intel VMX definitions: VMCS field encodings, exit reasons and exit information, VM-instruction
//! errors, VMX controls and the capability MSRs (SDM Vol. 3C chapters 24–31, "Introduction to
//! Virtual Machine Extensions" to "VMX Instruction Reference", and Vol. 3D Appendices A–C).

pub mod caps;
pub mod controls;
pub mod error;
pub mod exit;
pub mod fields;

pub use caps::{
    AllowedControls, AllowedControls64, EptVpidCap, FixedBits, VmcsEnum, VmxBasic, VmxMisc,
};
pub use error::VmInstructionError;
pub use exit::{ExitReason, ExitReasonField, InterruptionInfo, InterruptionType};
pub use fields::{
    VmcsAccess, VmcsEncoding, VmcsField, VmcsFieldKind, VmcsFieldWidth, VmwriteScope,
    WritableEncoding, WritableField,
};
