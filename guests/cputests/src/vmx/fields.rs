//! VMCS field encodings (SDM Vol. 3D Appendix B "Field Encoding in VMCS"), named as the SDM
//! names them, and the layout of an encoding (§25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS
//! Fields", Table 25-21): bit 0 access type (1 = the high 32 bits of a 64-bit field), bits 9:1
//! index, bits 11:10 type (control, read-only data, guest state, host state), bits 14:13 width
//! (16-bit, 64-bit, 32-bit, natural width).

/// Bit 0 of an encoding: "high" access to bits 63:32 of a 64-bit field.
pub const ACCESS_HIGH: u32 = 1;

/// The index of an encoding (bits 9:1).
pub const fn index(encoding: u32) -> u32 {
    (encoding >> 1) & 0x1FF
}

// 16-bit control fields (B.1.1).
pub const VIRTUAL_PROCESSOR_ID: u32 = 0x0000;
// 16-bit guest-state fields (B.1.2).
pub const GUEST_ES_SELECTOR: u32 = 0x0800;
pub const GUEST_CS_SELECTOR: u32 = 0x0802;
pub const GUEST_SS_SELECTOR: u32 = 0x0804;
pub const GUEST_DS_SELECTOR: u32 = 0x0806;
pub const GUEST_FS_SELECTOR: u32 = 0x0808;
pub const GUEST_GS_SELECTOR: u32 = 0x080A;
pub const GUEST_LDTR_SELECTOR: u32 = 0x080C;
pub const GUEST_TR_SELECTOR: u32 = 0x080E;
// 16-bit host-state fields (B.1.3).
pub const HOST_ES_SELECTOR: u32 = 0x0C00;
pub const HOST_CS_SELECTOR: u32 = 0x0C02;
pub const HOST_SS_SELECTOR: u32 = 0x0C04;
pub const HOST_DS_SELECTOR: u32 = 0x0C06;
pub const HOST_FS_SELECTOR: u32 = 0x0C08;
pub const HOST_GS_SELECTOR: u32 = 0x0C0A;
pub const HOST_TR_SELECTOR: u32 = 0x0C0C;

// 64-bit control fields (B.2.1).
pub const IO_BITMAP_A: u32 = 0x2000;
pub const IO_BITMAP_B: u32 = 0x2002;
pub const MSR_BITMAPS: u32 = 0x2004;
pub const VM_EXIT_MSR_STORE_ADDRESS: u32 = 0x2006;
pub const VM_EXIT_MSR_LOAD_ADDRESS: u32 = 0x2008;
pub const VM_ENTRY_MSR_LOAD_ADDRESS: u32 = 0x200A;
pub const EPT_POINTER: u32 = 0x201A;
pub const VMREAD_BITMAP: u32 = 0x2026;
pub const VMWRITE_BITMAP: u32 = 0x2028;
// 64-bit read-only data field (B.2.2).
pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
// 64-bit guest-state fields (B.2.3).
pub const VMCS_LINK_POINTER: u32 = 0x2800;
pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
pub const GUEST_IA32_PAT: u32 = 0x2804;
pub const GUEST_IA32_EFER: u32 = 0x2806;
// 64-bit host-state fields (B.2.4).
pub const HOST_IA32_PAT: u32 = 0x2C00;
pub const HOST_IA32_EFER: u32 = 0x2C02;

// 32-bit control fields (B.3.1).
pub const PIN_BASED_VM_EXECUTION_CONTROLS: u32 = 0x4000;
pub const PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS: u32 = 0x4002;
pub const EXCEPTION_BITMAP: u32 = 0x4004;
pub const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x4006;
pub const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x4008;
pub const CR3_TARGET_COUNT: u32 = 0x400A;
pub const PRIMARY_VM_EXIT_CONTROLS: u32 = 0x400C;
pub const VM_EXIT_MSR_STORE_COUNT: u32 = 0x400E;
pub const VM_EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
pub const VM_ENTRY_CONTROLS: u32 = 0x4012;
pub const VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
pub const VM_ENTRY_INTERRUPTION_INFORMATION: u32 = 0x4016;
pub const VM_ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
pub const VM_ENTRY_INSTRUCTION_LENGTH: u32 = 0x401A;
pub const SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS: u32 = 0x401E;
// 32-bit read-only data fields (B.3.2).
pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
pub const EXIT_REASON: u32 = 0x4402;
pub const VM_EXIT_INTERRUPTION_INFORMATION: u32 = 0x4404;
pub const VM_EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
pub const IDT_VECTORING_INFORMATION: u32 = 0x4408;
pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440A;
pub const VM_EXIT_INSTRUCTION_LENGTH: u32 = 0x440C;
pub const VM_EXIT_INSTRUCTION_INFORMATION: u32 = 0x440E;
// 32-bit guest-state fields (B.3.3).
pub const GUEST_ES_LIMIT: u32 = 0x4800;
pub const GUEST_CS_LIMIT: u32 = 0x4802;
pub const GUEST_SS_LIMIT: u32 = 0x4804;
pub const GUEST_DS_LIMIT: u32 = 0x4806;
pub const GUEST_FS_LIMIT: u32 = 0x4808;
pub const GUEST_GS_LIMIT: u32 = 0x480A;
pub const GUEST_LDTR_LIMIT: u32 = 0x480C;
pub const GUEST_TR_LIMIT: u32 = 0x480E;
pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
pub const GUEST_ES_ACCESS_RIGHTS: u32 = 0x4814;
pub const GUEST_CS_ACCESS_RIGHTS: u32 = 0x4816;
pub const GUEST_SS_ACCESS_RIGHTS: u32 = 0x4818;
pub const GUEST_DS_ACCESS_RIGHTS: u32 = 0x481A;
pub const GUEST_FS_ACCESS_RIGHTS: u32 = 0x481C;
pub const GUEST_GS_ACCESS_RIGHTS: u32 = 0x481E;
pub const GUEST_LDTR_ACCESS_RIGHTS: u32 = 0x4820;
pub const GUEST_TR_ACCESS_RIGHTS: u32 = 0x4822;
pub const GUEST_INTERRUPTIBILITY_STATE: u32 = 0x4824;
pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
pub const GUEST_IA32_SYSENTER_CS: u32 = 0x482A;
pub const VMX_PREEMPTION_TIMER_VALUE: u32 = 0x482E;
// 32-bit host-state field (B.3.4).
pub const HOST_IA32_SYSENTER_CS: u32 = 0x4C00;

// Natural-width control fields (B.4.1).
pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
pub const CR0_READ_SHADOW: u32 = 0x6004;
pub const CR4_READ_SHADOW: u32 = 0x6006;
pub const CR3_TARGET_VALUE0: u32 = 0x6008;
pub const CR3_TARGET_VALUE1: u32 = 0x600A;
// Natural-width read-only data fields (B.4.2).
pub const EXIT_QUALIFICATION: u32 = 0x6400;
pub const GUEST_LINEAR_ADDRESS: u32 = 0x640A;
// Natural-width guest-state fields (B.4.3).
pub const GUEST_CR0: u32 = 0x6800;
pub const GUEST_CR3: u32 = 0x6802;
pub const GUEST_CR4: u32 = 0x6804;
pub const GUEST_ES_BASE: u32 = 0x6806;
pub const GUEST_CS_BASE: u32 = 0x6808;
pub const GUEST_SS_BASE: u32 = 0x680A;
pub const GUEST_DS_BASE: u32 = 0x680C;
pub const GUEST_FS_BASE: u32 = 0x680E;
pub const GUEST_GS_BASE: u32 = 0x6810;
pub const GUEST_LDTR_BASE: u32 = 0x6812;
pub const GUEST_TR_BASE: u32 = 0x6814;
pub const GUEST_GDTR_BASE: u32 = 0x6816;
pub const GUEST_IDTR_BASE: u32 = 0x6818;
pub const GUEST_DR7: u32 = 0x681A;
pub const GUEST_RSP: u32 = 0x681C;
pub const GUEST_RIP: u32 = 0x681E;
pub const GUEST_RFLAGS: u32 = 0x6820;
pub const GUEST_PENDING_DEBUG_EXCEPTIONS: u32 = 0x6822;
pub const GUEST_IA32_SYSENTER_ESP: u32 = 0x6824;
pub const GUEST_IA32_SYSENTER_EIP: u32 = 0x6826;
// Natural-width host-state fields (B.4.4).
pub const HOST_CR0: u32 = 0x6C00;
pub const HOST_CR3: u32 = 0x6C02;
pub const HOST_CR4: u32 = 0x6C04;
pub const HOST_FS_BASE: u32 = 0x6C06;
pub const HOST_GS_BASE: u32 = 0x6C08;
pub const HOST_TR_BASE: u32 = 0x6C0A;
pub const HOST_GDTR_BASE: u32 = 0x6C0C;
pub const HOST_IDTR_BASE: u32 = 0x6C0E;
pub const HOST_IA32_SYSENTER_ESP: u32 = 0x6C10;
pub const HOST_IA32_SYSENTER_EIP: u32 = 0x6C12;
pub const HOST_RSP: u32 = 0x6C14;
pub const HOST_RIP: u32 = 0x6C16;
