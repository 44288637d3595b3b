//! VMCS storage: the contents of one VMCS, its in-memory region format, its launch state and
//! VMREAD/VMWRITE on it (SDM Vol. 3C §25.2 "Format of the VMCS Region", §25.11.1 "Software Use
//! of the VMCS and Related Structures", §25.11.3 "Initializing a VMCS", and the VMREAD and
//! VMWRITE instructions of §31.3; field encodings: Vol. 3D Appendix B, through
//! [`x86::vmx::VmcsField`]). Section numbers are those of the 2023–2024 SDM editions, in which
//! chapter 25 is "Virtual Machine Control Structures" (older editions number it 24).
//!
//! A [`Vmcs`] holds every field of [`VmcsField::ALL`] in a dense array, the revision identifier
//! with the shadow-VMCS indicator, the VMX-abort indicator and the launch state. The processor
//! may cache the current VMCS (§25.11.1); VMPTRLD reads a region with [`Vmcs::load`] and
//! VMCLEAR writes it back with [`Vmcs::store`], through the small [`PhysMemory`] trait.
//!
//! # Region layout (revision [`super::capabilities::REVISION_ID`])
//!
//! | offset | size | contents                                                              |
//! |--------|------|-----------------------------------------------------------------------|
//! | 0x000  | 4    | bits 30:0 VMCS revision identifier, bit 31 shadow-VMCS indicator (§25.2) |
//! | 0x004  | 4    | VMX-abort indicator (§25.2)                                           |
//! | 0x008  | 4    | launch state: 0 = clear, 1 = launched (any other value reads as clear) |
//! | 0x00c  | 4    | reserved, written 0                                                    |
//! | 0x010  | 8 × N | the N fields of `VmcsField::ALL` in encoding order, little-endian, each in a 64-bit slot |
//!
//! Everything after the first 8 bytes is implementation-specific (§25.2): software must access
//! fields with VMREAD/VMWRITE only. A change of `VmcsField::ALL` changes the layout and must
//! change the revision identifier; a test pins the slot of a few fields.

use x86::Hpa;
use x86::vmx::{VmInstructionError, VmcsField, VmxCapabilities};

/// The number of VMCS fields the storage holds.
pub const FIELD_COUNT: usize = VmcsField::ALL.len();

/// Offset of the VMX-abort indicator in the region.
pub const ABORT_OFFSET: u64 = 4;
/// Offset of the launch state in the region.
pub const LAUNCH_STATE_OFFSET: u64 = 8;
/// Offset of the first field slot in the region.
pub const FIELDS_OFFSET: u64 = 16;
/// The size of the region this implementation reads and writes.
pub const REGION_BYTES: usize = FIELDS_OFFSET as usize + 8 * FIELD_COUNT;
/// Bit 31 of the first word: the region is a shadow VMCS (§25.2).
pub const SHADOW_INDICATOR: u32 = 1 << 31;

// The region must fit the 4 KiB that IA32_VMX_BASIC[44:32] reports.
const _: () = assert!(REGION_BYTES <= 4096);
// Dense indexing relies on `ALL` being sorted by encoding.
const _: () = {
    let mut i = 1;
    while i < FIELD_COUNT {
        assert!(VmcsField::ALL[i - 1].encoding() < VmcsField::ALL[i].encoding());
        i += 1;
    }
};

/// Physical memory as VMX instructions and VM entry access it (the VMCS region, the VMCS link
/// pointer, PDPTEs): bytes at a physical address. An error means the range is not memory the
/// implementation can access.
pub trait PhysMemory {
    /// Why an access failed.
    type Error;
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&mut self, addr: Hpa, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes `data` at `addr`.
    fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), Self::Error>;
}

/// The launch state of a VMCS (§25.11.3): VMLAUNCH needs "clear", VMRESUME "launched".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LaunchState {
    /// After VMCLEAR.
    #[default]
    Clear,
    /// After a successful VMLAUNCH.
    Launched,
}

/// The contents of one VMCS.
#[derive(Clone, PartialEq, Eq)]
pub struct Vmcs {
    revision: u32,
    shadow: bool,
    abort: u32,
    launch: LaunchState,
    fields: [u64; FIELD_COUNT],
}

impl core::fmt::Debug for Vmcs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut s = f.debug_struct("Vmcs");
        s.field("revision", &format_args!("{:#x}", self.revision))
            .field("shadow", &self.shadow)
            .field("abort", &self.abort)
            .field("launch", &self.launch);
        // Only the non-zero fields, by name.
        for (field, value) in VmcsField::ALL.iter().zip(self.fields.iter()) {
            if *value != 0 {
                s.field(field.name(), &format_args!("{value:#x}"));
            }
        }
        s.finish()
    }
}

/// The dense index of `field` in [`VmcsField::ALL`].
fn slot(field: VmcsField) -> usize {
    // `ALL` holds every variant, sorted by encoding, so the search always finds the field;
    // the fallback index is never used.
    VmcsField::ALL
        .binary_search_by_key(&field.encoding(), |f| f.encoding())
        .unwrap_or(0)
}

impl Vmcs {
    /// A VMCS with revision identifier `revision` (bits 30:0), every field 0, launch state
    /// clear, not a shadow VMCS.
    pub fn new(revision: u32) -> Self {
        Self {
            revision: revision & !SHADOW_INDICATOR,
            shadow: false,
            abort: 0,
            launch: LaunchState::Clear,
            fields: [0; FIELD_COUNT],
        }
    }

    /// Bits 30:0 of the first word.
    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// The shadow-VMCS indicator (bit 31 of the first word).
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Sets the shadow-VMCS indicator.
    pub fn set_shadow(&mut self, shadow: bool) {
        self.shadow = shadow;
    }

    /// The VMX-abort indicator.
    pub fn abort_indicator(&self) -> u32 {
        self.abort
    }

    /// Records a VMX abort (SDM Vol. 3C §28.7).
    pub fn set_abort_indicator(&mut self, abort: u32) {
        self.abort = abort;
    }

    /// The launch state.
    pub fn launch_state(&self) -> LaunchState {
        self.launch
    }

    /// Sets the launch state (VMLAUNCH: launched; VMCLEAR: clear).
    pub fn set_launch_state(&mut self, launch: LaunchState) {
        self.launch = launch;
    }

    /// The stored value of `field` (what the processor uses; zero-extended to 64 bits).
    pub fn get(&self, field: VmcsField) -> u64 {
        self.fields.get(slot(field)).copied().unwrap_or(0)
    }

    /// Stores `value` in `field`, truncated to the field's width. This is the processor's own
    /// write path (VM exits writing exit information); guest software goes through
    /// [`Self::vmwrite`].
    pub fn set(&mut self, field: VmcsField, value: u64) {
        if let Some(v) = self.fields.get_mut(slot(field)) {
            *v = value & field.width().value_mask();
        }
    }

    /// VMREAD of `encoding` on a processor with `caps`: the value, or VM-instruction error 12
    /// for an encoding that names no field or a field the processor does not support
    /// (SDM Vol. 3C §31.3, VMREAD).
    pub fn vmread(&self, encoding: u32, caps: &VmxCapabilities) -> Result<u64, VmInstructionError> {
        let enc = VmcsField::from_encoding(encoding)
            .filter(|e| caps.supports_field(e.field))
            .ok_or(VmInstructionError::UnsupportedVmcsComponent)?;
        Ok(enc.read(self.get(enc.field)))
    }

    /// VMWRITE of `value` to `encoding` on a processor with `caps`: error 12 for an unknown or
    /// unsupported field, error 13 for a VM-exit information field unless IA32_VMX_MISC bit 29
    /// allows it (SDM Vol. 3C §31.3, VMWRITE). Full access keeps the bits the field's width
    /// holds; high access replaces bits 63:32 of a 64-bit field.
    pub fn vmwrite(
        &mut self,
        encoding: u32,
        value: u64,
        caps: &VmxCapabilities,
    ) -> Result<(), VmInstructionError> {
        let enc = VmcsField::from_encoding(encoding)
            .filter(|e| caps.supports_field(e.field))
            .ok_or(VmInstructionError::UnsupportedVmcsComponent)?;
        let writable = enc
            .writable(caps.misc.vmwrite_scope())
            .ok_or(VmInstructionError::VmwriteReadOnlyComponent)?;
        let field = writable.field().field();
        let merged = writable.merge(self.get(field), value);
        self.set(field, merged);
        Ok(())
    }

    /// Reads the first word of the region at `addr`: (revision identifier, shadow indicator),
    /// as VMPTRLD checks it before making the VMCS current and VM entry checks the VMCS link
    /// pointer.
    pub fn read_header<M: PhysMemory>(mem: &mut M, addr: Hpa) -> Result<(u32, bool), M::Error> {
        let mut word = [0u8; 4];
        mem.read(addr, &mut word)?;
        let word = u32::from_le_bytes(word);
        Ok((word & !SHADOW_INDICATOR, word & SHADOW_INDICATOR != 0))
    }

    /// Reads a VMCS from its region at `addr` (VMPTRLD). Stored values wider than their field
    /// (a region written by software, not by this processor) are truncated to the field width.
    pub fn load<M: PhysMemory>(mem: &mut M, addr: Hpa) -> Result<Self, M::Error> {
        let mut bytes = [0u8; REGION_BYTES];
        mem.read(addr, &mut bytes)?;
        let word = |offset: usize| {
            let mut w = [0u8; 4];
            if let Some(src) = bytes.get(offset..offset + 4) {
                w.copy_from_slice(src);
            }
            u32::from_le_bytes(w)
        };
        let first = word(0);
        let mut vmcs = Self::new(first);
        vmcs.shadow = first & SHADOW_INDICATOR != 0;
        vmcs.abort = word(ABORT_OFFSET as usize);
        vmcs.launch = match word(LAUNCH_STATE_OFFSET as usize) {
            1 => LaunchState::Launched,
            _ => LaunchState::Clear,
        };
        let slots = bytes.get(FIELDS_OFFSET as usize..).unwrap_or(&[]);
        for ((field, stored), chunk) in VmcsField::ALL
            .iter()
            .zip(vmcs.fields.iter_mut())
            .zip(slots.chunks_exact(8))
        {
            let mut v = [0u8; 8];
            v.copy_from_slice(chunk);
            *stored = u64::from_le_bytes(v) & field.width().value_mask();
        }
        Ok(vmcs)
    }

    /// The region image of this VMCS (the layout in the module documentation).
    pub fn to_bytes(&self) -> [u8; REGION_BYTES] {
        let mut bytes = [0u8; REGION_BYTES];
        let first = self.revision | if self.shadow { SHADOW_INDICATOR } else { 0 };
        let launch: u32 = match self.launch {
            LaunchState::Clear => 0,
            LaunchState::Launched => 1,
        };
        let header = [first, self.abort, launch, 0];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip(header) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let slots = bytes.get_mut(FIELDS_OFFSET as usize..).unwrap_or(&mut []);
        for (chunk, v) in slots.chunks_exact_mut(8).zip(self.fields.iter()) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        bytes
    }

    /// Writes this VMCS to its region at `addr` (VMCLEAR of the current VMCS, or any time the
    /// processor chooses to flush its cache).
    pub fn store<M: PhysMemory>(&self, mem: &mut M, addr: Hpa) -> Result<(), M::Error> {
        mem.write(addr, &self.to_bytes())
    }

    /// VMCLEAR's effect on a region that is not cached (§31.3, VMCLEAR): the launch state in
    /// memory becomes clear; nothing else changes.
    pub fn clear_in_memory<M: PhysMemory>(mem: &mut M, addr: Hpa) -> Result<(), M::Error> {
        match addr.checked_add(LAUNCH_STATE_OFFSET) {
            Some(at) => mem.write(at, &0u32.to_le_bytes()),
            // An address this close to 2^64 is refused by VMCLEAR's MAXPHYADDR check.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vmx::capabilities::{MODEL, REVISION_ID};
    use x86::vmx::VmcsFieldKind;

    /// Flat test memory starting at physical address 0.
    #[derive(Debug)]
    pub(crate) struct TestMemory(pub Vec<u8>);

    impl TestMemory {
        pub(crate) fn new(size: usize) -> Self {
            Self(vec![0; size])
        }

        fn range(&self, addr: Hpa, len: usize) -> Result<core::ops::Range<usize>, ()> {
            let start = usize::try_from(addr.raw()).map_err(|_| ())?;
            let end = start.checked_add(len).ok_or(())?;
            if end <= self.0.len() {
                Ok(start..end)
            } else {
                Err(())
            }
        }
    }

    impl PhysMemory for TestMemory {
        type Error = ();
        fn read(&mut self, addr: Hpa, buf: &mut [u8]) -> Result<(), ()> {
            let r = self.range(addr, buf.len())?;
            buf.copy_from_slice(&self.0[r]);
            Ok(())
        }
        fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), ()> {
            let r = self.range(addr, data.len())?;
            self.0[r].copy_from_slice(data);
            Ok(())
        }
    }

    const CAPS: VmxCapabilities = MODEL.caps;

    #[test]
    fn slots_are_dense_and_pinned() {
        for (i, &field) in VmcsField::ALL.iter().enumerate() {
            assert_eq!(slot(field), i, "{field:?}");
        }
        // Layout version 1: these offsets are part of the region format.
        assert_eq!(slot(VmcsField::Vpid), 0);
        assert_eq!(
            VmcsField::ALL[FIELD_COUNT - 1],
            VmcsField::HostIa32InterruptSspTableAddr
        );
    }

    #[test]
    fn vmread_vmwrite_widths_and_high_access() {
        let mut v = Vmcs::new(REVISION_ID);
        // 16-bit field: VMWRITE keeps bits 15:0.
        v.vmwrite(0x0800, 0xdead_beef_1234, &CAPS).unwrap();
        assert_eq!(v.vmread(0x0800, &CAPS), Ok(0x1234));
        // 32-bit field.
        v.vmwrite(0x4002, u64::MAX, &CAPS).unwrap();
        assert_eq!(v.get(VmcsField::PrimaryProcBasedControls), 0xffff_ffff);
        // 64-bit field, full then high access.
        v.vmwrite(0x2800, 0x1111_2222_3333_4444, &CAPS).unwrap();
        assert_eq!(v.vmread(0x2801, &CAPS), Ok(0x1111_2222));
        v.vmwrite(0x2801, 0xaaaa_bbbb_cccc_dddd, &CAPS).unwrap();
        assert_eq!(v.vmread(0x2800, &CAPS), Ok(0xcccc_dddd_3333_4444));
        // Natural width: all 64 bits.
        v.vmwrite(0x681e, u64::MAX, &CAPS).unwrap();
        assert_eq!(v.vmread(0x681e, &CAPS), Ok(u64::MAX));
    }

    #[test]
    fn vmread_vmwrite_errors() {
        let mut v = Vmcs::new(REVISION_ID);
        let e12 = VmInstructionError::UnsupportedVmcsComponent;
        let e13 = Err(VmInstructionError::VmwriteReadOnlyComponent);
        // Unknown encodings, reserved bits, high access to a 32-bit field.
        for enc in [0x0001, 0x1000_0000, 0x4003, 0x6801, 0x0ffe] {
            assert_eq!(v.vmread(enc, &CAPS), Err(e12), "{enc:#x}");
            assert_eq!(v.vmwrite(enc, 0, &CAPS), Err(e12), "{enc:#x}");
        }
        // Fields of features the model does not have: TPR shadow, posted interrupts, PML.
        for field in [
            VmcsField::VirtualApicAddress,
            VmcsField::PostedInterruptNotificationVector,
            VmcsField::PmlAddress,
        ] {
            assert_eq!(v.vmread(field.encoding(), &CAPS), Err(e12), "{field:?}");
        }
        // Read-only fields: VMREAD works, VMWRITE fails with 13 (no VMWRITE-any-field).
        for field in VmcsField::ALL
            .iter()
            .filter(|f| f.kind() == VmcsFieldKind::ExitInformation)
        {
            if CAPS.supports_field(*field) {
                assert_eq!(v.vmwrite(field.encoding(), 1, &CAPS), e13, "{field:?}");
                assert_eq!(v.vmread(field.encoding(), &CAPS), Ok(0));
            }
        }
        // With VMWRITE to any field, the processor may write them.
        let mut any = CAPS;
        any.misc = any.misc.with(x86::vmx::VmxMisc::VMWRITE_ANY_FIELD);
        v.vmwrite(VmcsField::ExitQualification.encoding(), 7, &any)
            .unwrap();
        assert_eq!(
            v.vmread(VmcsField::ExitQualification.encoding(), &any),
            Ok(7)
        );
    }

    #[test]
    fn every_supported_field_round_trips_through_memory() {
        let mut v = Vmcs::new(REVISION_ID);
        let mut state = 0x1234_5678_9abc_def1u64;
        for &field in VmcsField::ALL {
            state = state.rotate_left(13).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x55;
            v.set(field, state);
            assert_eq!(v.get(field), state & field.width().value_mask());
        }
        v.set_launch_state(LaunchState::Launched);
        v.set_abort_indicator(4);
        v.set_shadow(true);
        let mut mem = TestMemory::new(0x4000);
        let at = Hpa::new(0x1000);
        v.store(&mut mem, at).unwrap();
        assert_eq!(Vmcs::read_header(&mut mem, at), Ok((REVISION_ID, true)));
        assert_eq!(
            &mem.0[0x1000..0x1004],
            &(REVISION_ID | 1 << 31).to_le_bytes()
        );
        assert_eq!(&mem.0[0x1004..0x1008], &4u32.to_le_bytes());
        let back = Vmcs::load(&mut mem, at).unwrap();
        assert_eq!(back, v);
        // VMCLEAR of an uncached region clears the launch state only.
        Vmcs::clear_in_memory(&mut mem, at).unwrap();
        let cleared = Vmcs::load(&mut mem, at).unwrap();
        assert_eq!(cleared.launch_state(), LaunchState::Clear);
        assert_eq!(cleared.get(VmcsField::GuestRip), v.get(VmcsField::GuestRip));
        // Outside memory: the trait's error.
        assert_eq!(Vmcs::load(&mut mem, Hpa::new(0x3c00)), Err(()));
        assert!(Vmcs::clear_in_memory(&mut mem, Hpa::new(u64::MAX)).is_ok());
    }

    #[test]
    fn vmread_agrees_with_ia32_vmx_vmcs_enum() {
        // VMREAD accepts exactly the supported fields, and the highest index among them is
        // the one IA32_VMX_VMCS_ENUM reports (SDM Vol. 3D §A.9).
        let v = Vmcs::new(REVISION_ID);
        let mut highest = 0;
        for &field in VmcsField::ALL {
            let ok = v.vmread(field.encoding(), &CAPS).is_ok();
            assert_eq!(ok, CAPS.supports_field(field), "{field:?}");
            if ok {
                highest = highest.max(field.index());
            }
        }
        assert_eq!(highest, MODEL.vmcs_enum().highest_index());
    }

    #[test]
    fn load_truncates_software_written_slots() {
        let mut mem = TestMemory::new(0x2000);
        mem.0.fill(0xff);
        let v = Vmcs::load(&mut mem, Hpa::new(0)).unwrap();
        assert_eq!(v.revision(), 0x7fff_ffff);
        assert!(v.is_shadow());
        assert_eq!(v.launch_state(), LaunchState::Clear);
        assert_eq!(v.get(VmcsField::GuestCsSelector), 0xffff);
        assert_eq!(v.get(VmcsField::GuestCsLimit), 0xffff_ffff);
        assert!(format!("{v:?}").contains("Guest CS selector"));
    }
}
