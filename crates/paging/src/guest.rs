//! What the guest-paging formats share: the control bits that affect translation, the access
//! being translated, the rights of U/S, R/W and XD, the access-rights rules and the #PF error
//! code.
//!
//! SDM Vol. 3A §4.6 (access rights: supervisor and user accesses, implicit supervisor-mode
//! accesses, CR0.WP, SMEP, SMAP with EFLAGS.AC, execute-disable), §4.7 (page-fault exceptions
//! and the error code), §4.8 (accessed and dirty flags), §4.10.1 (global pages). Protection keys
//! (CR4.PKE/PKS) and shadow-stack accesses (CET) are not implemented:
//! [`PagingContext::from_registers`] refuses a CR4 that enables them rather than ignoring them.

use x86::exception::pf_error;
use x86::paging::pte;
use x86::reg::{cr0, cr4, efer, rflags};

use crate::walk::{Level, Rights};

/// The processor state that affects linear-address translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagingContext {
    /// CR0.WP: supervisor writes honour R/W.
    pub wp: bool,
    /// CR4.PSE: 4-MiB pages in 32-bit paging.
    pub pse: bool,
    /// CR4.PGE: global pages.
    pub pge: bool,
    /// CR4.SMEP: supervisor fetches from user pages fault.
    pub smep: bool,
    /// CR4.SMAP: supervisor data accesses to user pages fault (unless explicit with AC = 1).
    pub smap: bool,
    /// IA32_EFER.NXE: the XD bit is honoured (and not reserved).
    pub nxe: bool,
    /// EFLAGS.AC: lets explicit supervisor accesses reach user pages under SMAP.
    pub ac: bool,
    /// The physical-address width (`CPUID.80000008H:EAX[7:0]`), at most 52.
    pub maxphyaddr: u8,
    /// Whether 1-GiB pages are supported (`CPUID.80000001H:EDX[26]`, Page1GB).
    pub gb_pages: bool,
}

/// Paging features the walker does not implement, refused rather than ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// CR4.PKE or CR4.PKS (protection keys, SDM Vol. 3A §4.6.2).
    ProtectionKeys,
    /// CR4.CET (shadow-stack accesses, SDM Vol. 3A §4.6.3).
    ShadowStacks,
    /// A MAXPHYADDR outside 32..=52.
    MaxPhyAddr(u8),
}

impl PagingContext {
    /// The context given by CR0, CR4, IA32_EFER and RFLAGS.
    #[inline]
    pub fn from_registers(
        cr0: u64,
        cr4: u64,
        efer: u64,
        rflags: u64,
        maxphyaddr: u8,
        gb_pages: bool,
    ) -> Result<Self, Unsupported> {
        if cr4 & (cr4::PKE | cr4::PKS) != 0 {
            return Err(Unsupported::ProtectionKeys);
        }
        if cr4 & cr4::CET != 0 {
            return Err(Unsupported::ShadowStacks);
        }
        if !(32..=52).contains(&maxphyaddr) {
            return Err(Unsupported::MaxPhyAddr(maxphyaddr));
        }
        Ok(Self {
            wp: cr0 & cr0::WP != 0,
            pse: cr4 & cr4::PSE != 0,
            pge: cr4 & cr4::PGE != 0,
            smep: cr4 & cr4::SMEP != 0,
            smap: cr4 & cr4::SMAP != 0,
            nxe: efer & efer::NXE != 0,
            ac: rflags & rflags::AC != 0,
            maxphyaddr,
            gb_pages,
        })
    }

    /// Mask of the address bits at or above MAXPHYADDR up to bit 51 (reserved in 64-bit
    /// entries of 4-level and 5-level paging).
    #[inline]
    pub(crate) const fn reserved_51_m(&self) -> u64 {
        pte::ADDR_MASK & !x86::addr::phys_mask(self.maxphyaddr as u32)
    }
}

/// What an access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// Who makes an access (SDM Vol. 3A §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// An explicit access at CPL 3.
    User,
    /// An explicit access at CPL 0, 1 or 2.
    Supervisor,
    /// An implicit supervisor-mode access (GDT, LDT, IDT, TSS, …) at any CPL: a supervisor
    /// access for which EFLAGS.AC does not relax SMAP.
    Implicit,
}

/// A linear-address access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// User, supervisor or implicit supervisor.
    pub privilege: Privilege,
}

impl Access {
    /// An access of `kind` by `privilege`.
    #[inline]
    pub const fn new(kind: AccessKind, privilege: Privilege) -> Self {
        Self { kind, privilege }
    }
}

/// The rights of a linear-address translation: the R/W and U/S flags and the inverse of XD,
/// each the AND over every entry used (SDM Vol. 3A §4.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageRights {
    /// R/W = 1 in every entry.
    pub write: bool,
    /// U/S = 1 in every entry: a user-mode address.
    pub user: bool,
    /// XD = 0 in every entry (or IA32_EFER.NXE = 0, or 32-bit paging).
    pub execute: bool,
}

impl Rights for PageRights {
    const ALL: Self = Self {
        write: true,
        user: true,
        execute: true,
    };

    #[inline]
    fn intersect(self, other: Self) -> Self {
        Self {
            write: self.write && other.write,
            user: self.user && other.user,
            execute: self.execute && other.execute,
        }
    }
}

impl PageRights {
    /// The rights one entry grants (`xd_honoured`: IA32_EFER.NXE = 1 and the format has XD).
    #[inline]
    pub(crate) const fn of_entry(entry: u64, xd_honoured: bool) -> Self {
        Self {
            write: entry & pte::WRITABLE != 0,
            user: entry & pte::USER != 0,
            execute: !(xd_honoured && entry & pte::XD != 0),
        }
    }

    /// Whether `access` is allowed to a translation with these rights under `ctx` (SDM Vol. 3A
    /// §4.6.1).
    pub const fn permit(self, ctx: &PagingContext, access: Access) -> bool {
        match access.privilege {
            Privilege::User => {
                self.user
                    && match access.kind {
                        AccessKind::Read => true,
                        AccessKind::Write => self.write,
                        AccessKind::Fetch => self.execute,
                    }
            }
            Privilege::Supervisor | Privilege::Implicit => {
                let explicit_ac = matches!(access.privilege, Privilege::Supervisor) && ctx.ac;
                match access.kind {
                    AccessKind::Read => !(self.user && ctx.smap && !explicit_ac),
                    AccessKind::Write => {
                        !(self.user && ctx.smap && !explicit_ac) && (self.write || !ctx.wp)
                    }
                    AccessKind::Fetch => !(self.user && ctx.smep) && self.execute,
                }
            }
        }
    }
}

/// Leaf attributes of a linear-address translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageAttrs {
    /// G = 1 in the leaf and CR4.PGE = 1 (SDM Vol. 3A §4.10.2.4).
    pub global: bool,
    /// The PAT index PAT·4 + PCD·2 + PWT of the leaf (SDM Vol. 3A §4.9.2).
    pub pat_index: u8,
}

impl PageAttrs {
    #[inline]
    pub(crate) const fn of_leaf(ctx: &PagingContext, leaf: u64, large: bool) -> Self {
        Self {
            global: ctx.pge && leaf & pte::GLOBAL != 0,
            pat_index: pte::pat_index(leaf, large),
        }
    }
}

/// A translation by any guest-paging format.
pub type GuestTranslation<P> = crate::walk::Translation<P, PageRights, PageAttrs>;

/// A page-fault exception (#PF) raised by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageFault {
    /// The error code pushed with #PF (SDM Vol. 3A §4.7): P, W/R, U/S, RSVD, I/D. PK, SS, HLAT
    /// and SGX are never set (not implemented).
    pub error_code: u32,
    /// The level of the entry that was not present or had a reserved bit set, or the leaf
    /// level for an access-rights violation. (Not architectural: for diagnostics and for
    /// shadow paging.)
    pub level: Level,
}

/// Why a translation faulted, for the error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultCause {
    NotPresent,
    Reserved,
    Rights,
}

impl PageFault {
    /// The #PF for `access`; `fetch_reported` says whether I/D may be set: CR4.SMEP = 1, or
    /// IA32_EFER.NXE = 1 with PAE, 4-level or 5-level paging (SDM Vol. 3A §4.7).
    pub(crate) const fn new(
        cause: FaultCause,
        access: Access,
        fetch_reported: bool,
        level: Level,
    ) -> Self {
        let mut code = match cause {
            FaultCause::NotPresent => 0,
            FaultCause::Reserved => pf_error::PRESENT | pf_error::RSVD,
            FaultCause::Rights => pf_error::PRESENT,
        };
        if matches!(access.kind, AccessKind::Write) {
            code |= pf_error::WRITE;
        }
        if matches!(access.privilege, Privilege::User) {
            code |= pf_error::USER;
        }
        if matches!(access.kind, AccessKind::Fetch) && fetch_reported {
            code |= pf_error::FETCH;
        }
        Self {
            error_code: code,
            level,
        }
    }
}

/// The accessed and dirty flags a successful guest access sets in an entry it used.
#[inline]
pub(crate) const fn guest_flags_to_set(access: Access, leaf: bool) -> u64 {
    if leaf && matches!(access.kind, AccessKind::Write) {
        pte::ACCESSED | pte::DIRTY
    } else {
        pte::ACCESSED
    }
}

/// The [`PagingFormat`](crate::PagingFormat) methods that 32-bit, PAE, 4-level and 5-level
/// paging share once an entry is decoded: how a fault is reported (SDM Vol. 3A §4.7), how the
/// combined rights are checked (§4.6), the leaf's attributes, and which accessed and dirty flags
/// an access sets (§4.8). Each guest format expands it inside its `impl PagingFormat`, the way
/// KVM's `paging_tmpl.h` is instantiated once per mode; the format supplies only
/// `fetch_reported(&self) -> bool`, whether its error codes report instruction fetches (I/D).
macro_rules! guest_format_rules {
    () => {
        #[inline]
        fn not_present(
            &self,
            access: $crate::guest::Access,
            level: $crate::walk::Level,
            _rights: $crate::guest::PageRights,
        ) -> $crate::guest::PageFault {
            $crate::guest::PageFault::new(
                $crate::guest::FaultCause::NotPresent,
                access,
                self.fetch_reported(),
                level,
            )
        }

        #[inline]
        fn reserved(
            &self,
            access: $crate::guest::Access,
            level: $crate::walk::Level,
        ) -> $crate::guest::PageFault {
            $crate::guest::PageFault::new(
                $crate::guest::FaultCause::Reserved,
                access,
                self.fetch_reported(),
                level,
            )
        }

        #[inline]
        fn check(
            &self,
            access: $crate::guest::Access,
            rights: $crate::guest::PageRights,
            level: $crate::walk::Level,
        ) -> Result<(), $crate::guest::PageFault> {
            if rights.permit(&self.ctx, access) {
                Ok(())
            } else {
                Err($crate::guest::PageFault::new(
                    $crate::guest::FaultCause::Rights,
                    access,
                    self.fetch_reported(),
                    level,
                ))
            }
        }

        #[inline]
        fn attrs(&self, leaf: u64, size: $crate::walk::PageSize) -> $crate::guest::PageAttrs {
            $crate::guest::PageAttrs::of_leaf(
                &self.ctx,
                leaf,
                size != $crate::walk::PageSize::Size4K,
            )
        }

        #[inline]
        fn flags_to_set(&self, access: $crate::guest::Access, leaf: bool) -> u64 {
            $crate::guest::guest_flags_to_set(access, leaf)
        }

        #[inline]
        fn is_dirty(&self, leaf: u64) -> bool {
            leaf & x86::paging::pte::DIRTY != 0
        }
    };
}
pub(crate) use guest_format_rules;

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PagingContext {
        PagingContext {
            wp: false,
            pse: false,
            pge: false,
            smep: false,
            smap: false,
            nxe: false,
            ac: false,
            maxphyaddr: 52,
            gb_pages: true,
        }
    }

    const RO_USER: PageRights = PageRights {
        write: false,
        user: true,
        execute: true,
    };
    const RO_SUP: PageRights = PageRights {
        write: false,
        user: false,
        execute: true,
    };

    fn a(kind: AccessKind, privilege: Privilege) -> Access {
        Access::new(kind, privilege)
    }

    #[test]
    fn user_accesses_need_user_pages_and_rw_for_writes() {
        let c = ctx();
        assert!(RO_USER.permit(&c, a(AccessKind::Read, Privilege::User)));
        assert!(!RO_USER.permit(&c, a(AccessKind::Write, Privilege::User)));
        assert!(!RO_SUP.permit(&c, a(AccessKind::Read, Privilege::User)));
        // CR0.WP does not matter for user writes.
        let wp = PagingContext { wp: true, ..c };
        assert!(!RO_USER.permit(&wp, a(AccessKind::Write, Privilege::User)));
    }

    #[test]
    fn supervisor_writes_follow_cr0_wp() {
        let c = ctx();
        assert!(RO_SUP.permit(&c, a(AccessKind::Write, Privilege::Supervisor)));
        assert!(RO_USER.permit(&c, a(AccessKind::Write, Privilege::Supervisor)));
        let wp = PagingContext { wp: true, ..c };
        assert!(!RO_SUP.permit(&wp, a(AccessKind::Write, Privilege::Supervisor)));
        assert!(!RO_USER.permit(&wp, a(AccessKind::Write, Privilege::Implicit)));
    }

    #[test]
    fn smap_is_relaxed_by_ac_only_for_explicit_accesses() {
        let smap = PagingContext {
            smap: true,
            ..ctx()
        };
        let rw_user = PageRights::ALL;
        assert!(!rw_user.permit(&smap, a(AccessKind::Read, Privilege::Supervisor)));
        assert!(!rw_user.permit(&smap, a(AccessKind::Write, Privilege::Supervisor)));
        let ac = PagingContext { ac: true, ..smap };
        assert!(rw_user.permit(&ac, a(AccessKind::Read, Privilege::Supervisor)));
        assert!(rw_user.permit(&ac, a(AccessKind::Write, Privilege::Supervisor)));
        assert!(!rw_user.permit(&ac, a(AccessKind::Read, Privilege::Implicit)));
        assert!(!rw_user.permit(&ac, a(AccessKind::Write, Privilege::Implicit)));
        // SMAP does not restrict fetches, nor user accesses.
        assert!(rw_user.permit(&smap, a(AccessKind::Fetch, Privilege::Supervisor)));
        assert!(rw_user.permit(&smap, a(AccessKind::Read, Privilege::User)));
    }

    #[test]
    fn smep_and_execute_disable() {
        let smep = PagingContext {
            smep: true,
            ..ctx()
        };
        assert!(!RO_USER.permit(&smep, a(AccessKind::Fetch, Privilege::Supervisor)));
        assert!(RO_USER.permit(&smep, a(AccessKind::Fetch, Privilege::User)));
        assert!(RO_SUP.permit(&smep, a(AccessKind::Fetch, Privilege::Supervisor)));
        let nx = PageRights {
            execute: false,
            ..PageRights::ALL
        };
        assert!(!nx.permit(&ctx(), a(AccessKind::Fetch, Privilege::User)));
        assert!(!nx.permit(&ctx(), a(AccessKind::Fetch, Privilege::Supervisor)));
        assert!(nx.permit(&ctx(), a(AccessKind::Read, Privilege::User)));
    }

    #[test]
    fn error_codes() {
        let w = a(AccessKind::Write, Privilege::User);
        assert_eq!(
            PageFault::new(FaultCause::NotPresent, w, true, 1).error_code,
            0b110
        );
        assert_eq!(
            PageFault::new(FaultCause::Reserved, w, true, 1).error_code,
            0b1111
        );
        let f = a(AccessKind::Fetch, Privilege::Implicit);
        assert_eq!(
            PageFault::new(FaultCause::Rights, f, true, 1).error_code,
            0b10001
        );
        assert_eq!(
            PageFault::new(FaultCause::Rights, f, false, 1).error_code,
            0b00001
        );
    }

    #[test]
    fn context_from_registers() {
        let c = PagingContext::from_registers(
            cr0::WP | cr0::PG,
            cr4::PAE | cr4::SMEP,
            efer::NXE,
            rflags::AC,
            48,
            true,
        )
        .unwrap();
        assert!(c.wp && c.smep && c.nxe && c.ac && !c.smap && !c.pse);
        assert_eq!(
            PagingContext::from_registers(0, cr4::PKE, 0, 0, 48, true),
            Err(Unsupported::ProtectionKeys)
        );
        assert_eq!(
            PagingContext::from_registers(0, 0, 0, 0, 60, true),
            Err(Unsupported::MaxPhyAddr(60))
        );
    }
}
