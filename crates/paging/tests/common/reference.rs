//! A deliberately naive reference walker, written from the SDM's tables without the crate's
//! trait or decoders: one straight-line function per paging mode, bits read by number.
//!
//! Guest walks read entries through a callback, so that the same code serves the
//! one-dimensional walk (plain memory) and the composition with EPT (each entry's
//! guest-physical address first translated by the reference EPT walk).

use nestvisor_paging::{AccessKind, EptOrigin, PagingContext, Privilege};

use super::TestMem;

fn bit(e: u64, n: u32) -> bool {
    (e >> n) & 1 == 1
}

/// Whether any of bits `hi..=lo` (hi ≥ lo) is set.
fn any_bits(e: u64, hi: u32, lo: u32) -> bool {
    (lo..=hi).any(|b| bit(e, b))
}

/// Bits hi..=lo of `e` as a number.
fn bits(e: u64, hi: u32, lo: u32) -> u64 {
    (e >> lo) & ((1u64 << (hi - lo + 1)) - 1)
}

// ---------------------------------------------------------------------------------------------
// Guest paging
// ---------------------------------------------------------------------------------------------

/// A successful guest translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestOk {
    pub addr: u64,
    pub page_shift: u32,
    pub level: u8,
    pub write: bool,
    pub user: bool,
    pub exec: bool,
    pub global: bool,
    pub pat: u8,
    pub dirty: bool,
}

/// What the guest walk wants written: (entry address, width in bytes, flags to OR in, level).
pub type Updates = Vec<(u64, usize, u64, u8)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestEnd<S> {
    Ok(GuestOk, Updates),
    PageFault {
        code: u32,
        level: u8,
    },
    /// The read callback stopped the walk.
    Stopped(S),
}

/// The #PF error code (SDM Vol. 3A §4.7): bit 0 P, 1 W/R, 2 U/S, 3 RSVD, 4 I/D.
fn error_code(present: bool, rsvd: bool, kind: AccessKind, who: Privilege, id_ok: bool) -> u32 {
    let mut code = 0;
    if present {
        code |= 1;
    }
    if kind == AccessKind::Write {
        code |= 2;
    }
    if who == Privilege::User {
        code |= 4;
    }
    if rsvd {
        code |= 8;
    }
    if kind == AccessKind::Fetch && id_ok {
        code |= 16;
    }
    code
}

/// SDM Vol. 3A §4.6.1, as the text reads, case by case.
fn allowed(
    ctx: &PagingContext,
    kind: AccessKind,
    who: Privilege,
    write: bool,
    user: bool,
    exec: bool,
) -> bool {
    if who == Privilege::User {
        // User-mode accesses: only to user-mode addresses.
        if !user {
            return false;
        }
        return match kind {
            AccessKind::Read => true,
            AccessKind::Write => write,
            AccessKind::Fetch => exec,
        };
    }
    // Supervisor-mode accesses (explicit at CPL < 3, or implicit).
    let explicit = who == Privilege::Supervisor;
    match kind {
        AccessKind::Read => {
            if user && ctx.smap {
                explicit && ctx.ac
            } else {
                true
            }
        }
        AccessKind::Write => {
            if user && ctx.smap && !(explicit && ctx.ac) {
                false
            } else if ctx.wp {
                write
            } else {
                true
            }
        }
        AccessKind::Fetch => {
            if user && ctx.smep {
                false
            } else if ctx.nxe {
                exec
            } else {
                true
            }
        }
    }
}

/// Collects the A/D updates of a successful walk: A in every entry used, D in the leaf on a
/// write, only where the flag was clear when read.
fn guest_updates(used: &[(Option<u64>, u64, u8)], width: usize, write: bool) -> (Updates, bool) {
    let mut updates = Vec::new();
    let mut dirty = false;
    for (i, (addr, e, level)) in used.iter().enumerate() {
        let leaf = i == used.len() - 1;
        let mut want = 1 << 5;
        if leaf && write {
            want |= 1 << 6;
        }
        if leaf {
            dirty = bit(*e | want, 6);
        }
        let missing = want & !e;
        if let (Some(addr), true) = (addr, missing != 0) {
            updates.push((*addr, width, missing, *level));
        }
    }
    (updates, dirty)
}

/// 32-bit paging (SDM Vol. 3A §4.3, Tables 4-4 to 4-6).
pub fn walk_32<S>(
    read: &mut dyn FnMut(u64, usize, u8) -> Result<u64, S>,
    cr3: u64,
    va: u64,
    ctx: &PagingContext,
    kind: AccessKind,
    who: Privilege,
) -> GuestEnd<S> {
    let id_ok = ctx.smep;
    let pf = |present, rsvd, level| GuestEnd::PageFault {
        code: error_code(present, rsvd, kind, who, id_ok),
        level,
    };
    // PDE: CR3 bits 31:12, linear bits 31:22.
    let pde_addr = (cr3 & 0xffff_f000) | (bits(va, 31, 22) << 2);
    let pde = match read(pde_addr, 4, 2) {
        Ok(v) => v,
        Err(s) => return GuestEnd::Stopped(s),
    };
    if !bit(pde, 0) {
        return pf(false, false, 2);
    }
    let mut used = vec![(Some(pde_addr), pde, 2)];
    let (addr, shift, level, pat, global, write, user);
    if ctx.pse && bit(pde, 7) {
        // 4-MiB page: bit 21 reserved; bits 20:13 are address bits 39:32 below
        // M = min(MAXPHYADDR, 40), reserved above.
        let m = u32::from(ctx.maxphyaddr).min(40);
        if bit(pde, 21) {
            return pf(true, true, 2);
        }
        for b in 13..=20 {
            if b + 19 >= m && bit(pde, b) {
                return pf(true, true, 2);
            }
        }
        let base = (bits(pde, 31, 22) << 22) | (bits(pde, 20, 13) << 32);
        addr = base | bits(va, 21, 0);
        shift = 22;
        level = 2;
        pat = ((bit(pde, 12) as u8) << 2) | ((bit(pde, 4) as u8) << 1) | bit(pde, 3) as u8;
        global = ctx.pge && bit(pde, 8);
        write = bit(pde, 1);
        user = bit(pde, 2);
    } else {
        let pte_addr = (pde & 0xffff_f000) | (bits(va, 21, 12) << 2);
        let pte = match read(pte_addr, 4, 1) {
            Ok(v) => v,
            Err(s) => return GuestEnd::Stopped(s),
        };
        if !bit(pte, 0) {
            return pf(false, false, 1);
        }
        used.push((Some(pte_addr), pte, 1));
        addr = (pte & 0xffff_f000) | bits(va, 11, 0);
        shift = 12;
        level = 1;
        pat = ((bit(pte, 7) as u8) << 2) | ((bit(pte, 4) as u8) << 1) | bit(pte, 3) as u8;
        global = ctx.pge && bit(pte, 8);
        write = bit(pde, 1) && bit(pte, 1);
        user = bit(pde, 2) && bit(pte, 2);
    }
    if !allowed(ctx, kind, who, write, user, true) {
        return pf(true, false, level);
    }
    let (updates, dirty) = guest_updates(&used, 4, kind == AccessKind::Write);
    GuestEnd::Ok(
        GuestOk {
            addr,
            page_shift: shift,
            level,
            write,
            user,
            exec: true,
            global,
            pat,
            dirty,
        },
        updates,
    )
}

/// PAE PDPTE register check (SDM Vol. 3A Table 4-8): present PDPTEs may not set bits 2:1, 8:5
/// or 63:MAXPHYADDR. Returns the index of the first offending PDPTE.
pub fn pdpte_check(pdptes: &[u64; 4], maxphyaddr: u8) -> Option<usize> {
    let m = u32::from(maxphyaddr);
    (0..4).find(|&i| {
        let e = pdptes[i];
        bit(e, 0) && (bit(e, 1) || bit(e, 2) || any_bits(e, 8, 5) || any_bits(e, 63, m))
    })
}

/// PAE paging (SDM Vol. 3A §4.4, Tables 4-8 to 4-11) from the PDPTE registers.
pub fn walk_pae<S>(
    read: &mut dyn FnMut(u64, usize, u8) -> Result<u64, S>,
    pdptes: &[u64; 4],
    va: u64,
    ctx: &PagingContext,
    kind: AccessKind,
    who: Privilege,
) -> GuestEnd<S> {
    let id_ok = ctx.smep || ctx.nxe;
    let pf = |present, rsvd, level| GuestEnd::PageFault {
        code: error_code(present, rsvd, kind, who, id_ok),
        level,
    };
    let m = u32::from(ctx.maxphyaddr);
    // Reserved in PDEs and PTEs: 62:M always, 63 when NXE = 0.
    let rsvd_high = |e: u64| any_bits(e, 62, m) || (!ctx.nxe && bit(e, 63));
    let pdpte = pdptes[bits(va, 31, 30) as usize];
    if !bit(pdpte, 0) {
        return pf(false, false, 3);
    }
    let pde_addr = (pdpte & 0x000f_ffff_ffff_f000) | (bits(va, 29, 21) << 3);
    let pde = match read(pde_addr, 8, 2) {
        Ok(v) => v,
        Err(s) => return GuestEnd::Stopped(s),
    };
    if !bit(pde, 0) {
        return pf(false, false, 2);
    }
    if rsvd_high(pde) {
        return pf(true, true, 2);
    }
    let mut used = vec![(None, pdpte, 3), (Some(pde_addr), pde, 2)];
    let xd = |e: u64| ctx.nxe && bit(e, 63);
    let (addr, shift, level, pat, global, write, user, exec);
    if bit(pde, 7) {
        if any_bits(pde, 20, 13) {
            return pf(true, true, 2);
        }
        addr = (bits(pde, 51, 21) << 21) | bits(va, 20, 0);
        shift = 21;
        level = 2;
        pat = ((bit(pde, 12) as u8) << 2) | ((bit(pde, 4) as u8) << 1) | bit(pde, 3) as u8;
        global = ctx.pge && bit(pde, 8);
        write = bit(pde, 1);
        user = bit(pde, 2);
        exec = !xd(pde);
    } else {
        let pte_addr = (bits(pde, 51, 12) << 12) | (bits(va, 20, 12) << 3);
        let pte = match read(pte_addr, 8, 1) {
            Ok(v) => v,
            Err(s) => return GuestEnd::Stopped(s),
        };
        if !bit(pte, 0) {
            return pf(false, false, 1);
        }
        if rsvd_high(pte) {
            return pf(true, true, 1);
        }
        used.push((Some(pte_addr), pte, 1));
        addr = (bits(pte, 51, 12) << 12) | bits(va, 11, 0);
        shift = 12;
        level = 1;
        pat = ((bit(pte, 7) as u8) << 2) | ((bit(pte, 4) as u8) << 1) | bit(pte, 3) as u8;
        global = ctx.pge && bit(pte, 8);
        write = bit(pde, 1) && bit(pte, 1);
        user = bit(pde, 2) && bit(pte, 2);
        exec = !xd(pde) && !xd(pte);
    }
    if !allowed(ctx, kind, who, write, user, exec) {
        return pf(true, false, level);
    }
    let (updates, dirty) = guest_updates(&used, 8, kind == AccessKind::Write);
    GuestEnd::Ok(
        GuestOk {
            addr,
            page_shift: shift,
            level,
            write,
            user,
            exec,
            global,
            pat,
            dirty,
        },
        updates,
    )
}

/// 4-level (`levels` = 4) and 5-level (`levels` = 5) paging (SDM Vol. 3A §4.5, Tables 4-14 to
/// 4-20).
#[allow(clippy::too_many_arguments)]
pub fn walk_long<S>(
    read: &mut dyn FnMut(u64, usize, u8) -> Result<u64, S>,
    cr3: u64,
    levels: u8,
    va: u64,
    ctx: &PagingContext,
    kind: AccessKind,
    who: Privilege,
) -> GuestEnd<S> {
    let id_ok = ctx.smep || ctx.nxe;
    let pf = |present, rsvd, level| GuestEnd::PageFault {
        code: error_code(present, rsvd, kind, who, id_ok),
        level,
    };
    let m = u32::from(ctx.maxphyaddr);
    let mut table = bits(cr3, 51, 12) << 12;
    let (mut write, mut user, mut exec) = (true, true, true);
    let mut used = Vec::new();
    let mut level = levels;
    loop {
        // Linear bits 56:48 (PML5), 47:39 (PML4), 38:30 (PDPT), 29:21 (PD), 20:12 (PT).
        let lo = 12 + 9 * (u32::from(level) - 1);
        let addr = table | (bits(va, lo + 8, lo) << 3);
        let e = match read(addr, 8, level) {
            Ok(v) => v,
            Err(s) => return GuestEnd::Stopped(s),
        };
        if !bit(e, 0) {
            return pf(false, false, level);
        }
        // Reserved: 51:M everywhere, 63 without NXE; PS in PML5E/PML4E; PS in a PDPTE
        // without 1-GiB pages; 29:13 of a 1-GiB PDPTE; 20:13 of a 2-MiB PDE.
        if (m <= 51 && any_bits(e, 51, m)) || (!ctx.nxe && bit(e, 63)) {
            return pf(true, true, level);
        }
        let ps = bit(e, 7);
        if ps && (level == 5 || level == 4) {
            return pf(true, true, level);
        }
        if ps && level == 3 && (!ctx.gb_pages || any_bits(e, 29, 13)) {
            return pf(true, true, level);
        }
        if ps && level == 2 && any_bits(e, 20, 13) {
            return pf(true, true, level);
        }
        used.push((Some(addr), e, level));
        write &= bit(e, 1);
        user &= bit(e, 2);
        if ctx.nxe && bit(e, 63) {
            exec = false;
        }
        if level == 1 || ps {
            let shift = lo;
            let page = (bits(e, 51, 12) << 12) & !((1u64 << shift) - 1);
            let pat_bit = if level == 1 { 7 } else { 12 };
            let pat = ((bit(e, pat_bit) as u8) << 2) | ((bit(e, 4) as u8) << 1) | bit(e, 3) as u8;
            if !allowed(ctx, kind, who, write, user, exec) {
                return pf(true, false, level);
            }
            let (updates, dirty) = guest_updates(&used, 8, kind == AccessKind::Write);
            return GuestEnd::Ok(
                GuestOk {
                    addr: page | (va & ((1u64 << shift) - 1)),
                    page_shift: shift,
                    level,
                    write,
                    user,
                    exec,
                    global: ctx.pge && bit(e, 8),
                    pat,
                    dirty,
                },
                updates,
            );
        }
        table = bits(e, 51, 12) << 12;
        level -= 1;
    }
}

/// Runs a guest walk over plain memory and applies its updates if it succeeded.
pub fn guest_1d(
    mem: &mut TestMem,
    walk: impl FnOnce(&mut dyn FnMut(u64, usize, u8) -> Result<u64, u64>) -> GuestEnd<u64>,
) -> GuestEnd<u64> {
    let end = {
        let mut read = |addr: u64, width: usize, _level: u8| mem.read(addr, width).ok_or(addr);
        walk(&mut read)
    };
    if let GuestEnd::Ok(_, updates) = &end {
        for (addr, width, flags, _) in updates {
            let old = mem.read(*addr, *width).unwrap();
            if old | flags != old {
                mem.write(*addr, *width, old | flags).unwrap();
            }
        }
    }
    end
}

// ---------------------------------------------------------------------------------------------
// EPT
// ---------------------------------------------------------------------------------------------

/// EPT configuration: root, walk length, EPTP bit 6, MBEC control, capabilities, MAXPHYADDR.
#[derive(Clone, Copy, Debug)]
pub struct EptRef {
    pub root: u64,
    pub levels: u8,
    pub ad: bool,
    pub mbec: bool,
    pub execute_only: bool,
    pub pages_1g: bool,
    pub maxphyaddr: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EptOk {
    pub addr: u64,
    pub page_shift: u32,
    pub level: u8,
    /// R, W, X, user-X.
    pub rights: [bool; 4],
    pub memtype: u64,
    pub ipat: bool,
    pub sve: bool,
    pub dirty: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EptEnd {
    Ok(EptOk),
    Violation { qual: u64, level: u8 },
    Misconfig { level: u8 },
    Unbacked(u64),
}

/// Exit qualification bits 0–8 (SDM Vol. 3C Table 28-7).
fn qualification(kind: AccessKind, origin: EptOrigin, as_write: bool, r: [bool; 4]) -> u64 {
    let mut q = 0;
    if kind == AccessKind::Read {
        q |= 1;
    }
    if kind == AccessKind::Write || as_write {
        q |= 2;
    }
    if kind == AccessKind::Fetch {
        q |= 4;
    }
    for (i, right) in r.iter().enumerate() {
        if *right {
            q |= 8 << i;
        }
    }
    match origin {
        EptOrigin::NoLinear => {}
        EptOrigin::GuestPagingStructure => q |= 1 << 7,
        EptOrigin::GuestLinear { .. } => q |= (1 << 7) | (1 << 8),
    }
    q
}

/// The EPT walk (SDM Vol. 3C §29.3), setting A/D flags on success when `cfg.ad`.
pub fn ept_walk(
    mem: &mut TestMem,
    cfg: &EptRef,
    gpa: u64,
    kind: AccessKind,
    origin: EptOrigin,
) -> EptEnd {
    let m = u32::from(cfg.maxphyaddr);
    let as_write = cfg.ad && kind == AccessKind::Read && origin == EptOrigin::GuestPagingStructure;
    let mut table = bits(cfg.root, 51, 12) << 12;
    let mut r = [true; 4];
    let mut used: Vec<u64> = Vec::new();
    let mut level = cfg.levels;
    loop {
        let lo = 12 + 9 * (u32::from(level) - 1);
        let addr = table | (bits(gpa, lo + 8, lo) << 3);
        let Some(e) = mem.read(addr, 8) else {
            return EptEnd::Unbacked(addr);
        };
        let er = [bit(e, 0), bit(e, 1), bit(e, 2), cfg.mbec && bit(e, 10)];
        for i in 0..4 {
            r[i] &= er[i];
        }
        // Present: any of bits 2:0, or bit 10 under MBEC.
        if !(er[0] || er[1] || er[2] || er[3]) {
            return EptEnd::Violation {
                qual: qualification(kind, origin, as_write, r),
                level,
            };
        }
        // Misconfigurations.
        let misconfig = EptEnd::Misconfig { level };
        if er[1] && !er[0] {
            return misconfig;
        }
        if !er[0] && !er[1] && !cfg.execute_only {
            return misconfig;
        }
        if m <= 51 && any_bits(e, 51, m) {
            return misconfig;
        }
        let large = bit(e, 7);
        let leaf = level == 1 || (large && (level == 2 || level == 3));
        // Reserved bits by level: 7:3 of a PML5E/PML4E; 29:12 of a 1-GiB leaf (which needs the
        // capability); 20:12 of a 2-MiB leaf; 6:3 of a non-leaf PDPTE/PDE.
        let reserved = match level {
            5 | 4 => any_bits(e, 7, 3),
            3 if large => !cfg.pages_1g || any_bits(e, 29, 12),
            2 if large => any_bits(e, 20, 12),
            3 | 2 => any_bits(e, 6, 3),
            _ => false,
        };
        if reserved {
            return misconfig;
        }
        let memtype = bits(e, 5, 3);
        if leaf && matches!(memtype, 2 | 3 | 7) {
            return misconfig;
        }
        used.push(addr);
        if leaf {
            let ok = match kind {
                AccessKind::Read if as_write => r[1],
                AccessKind::Read => r[0],
                AccessKind::Write => r[1],
                AccessKind::Fetch => match origin {
                    EptOrigin::GuestLinear { user: true } if cfg.mbec => r[3],
                    _ => r[2],
                },
            };
            if !ok {
                return EptEnd::Violation {
                    qual: qualification(kind, origin, as_write, r),
                    level,
                };
            }
            let shift = lo;
            let mut dirty = !cfg.ad || bit(e, 9);
            if cfg.ad {
                let writes = kind == AccessKind::Write || origin == EptOrigin::GuestPagingStructure;
                for (i, a) in used.iter().enumerate() {
                    let mut flags = 1 << 8;
                    if i == used.len() - 1 && writes {
                        flags |= 1 << 9;
                        dirty = true;
                    }
                    let old = mem.read(*a, 8).unwrap();
                    if old | flags != old {
                        mem.write(*a, 8, old | flags).unwrap();
                    }
                }
            }
            let page = (bits(e, 51, 12) << 12) & !((1u64 << shift) - 1);
            return EptEnd::Ok(EptOk {
                addr: page | (gpa & ((1u64 << shift) - 1)),
                page_shift: shift,
                level,
                rights: r,
                memtype,
                ipat: bit(e, 6),
                sve: bit(e, 63),
                dirty,
            });
        }
        table = bits(e, 51, 12) << 12;
        level -= 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Two dimensions: the guest walk composed with EPT walks.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    GuestTable(u8),
    Final,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NestedEnd {
    Ok { guest: GuestOk, ept: EptOk },
    PageFault { code: u32, level: u8 },
    Ept { end: EptEnd, gpa: u64, stage: Stage },
    Unbacked(u64),
}

/// Composes a guest walk (given as a function of its read callback) with EPT walks: each
/// guest entry read is an EPT-translated read; then the guest's flag writes are checked for EPT
/// write access; then the final guest-physical address is translated; then the guest's flags
/// are written.
pub fn nested(
    mem: &mut TestMem,
    cfg: &EptRef,
    kind: AccessKind,
    walk: impl FnOnce(&mut dyn FnMut(u64, usize, u8) -> Result<u64, NestedEnd>) -> GuestEnd<NestedEnd>,
) -> NestedEnd {
    // Each guest entry read: (gpa, guest level, hpa, EPT rights, EPT leaf level).
    let mut seen: Vec<(u64, u8, u64, [bool; 4], u8)> = Vec::new();
    let end = {
        let mut read = |gpa: u64, width: usize, level: u8| -> Result<u64, NestedEnd> {
            match ept_walk(
                mem,
                cfg,
                gpa,
                AccessKind::Read,
                EptOrigin::GuestPagingStructure,
            ) {
                EptEnd::Ok(t) => {
                    let Some(v) = mem.read(t.addr, width) else {
                        return Err(NestedEnd::Unbacked(t.addr));
                    };
                    seen.push((gpa, level, t.addr, t.rights, t.level));
                    Ok(v)
                }
                EptEnd::Unbacked(a) => Err(NestedEnd::Unbacked(a)),
                other => Err(NestedEnd::Ept {
                    end: other,
                    gpa,
                    stage: Stage::GuestTable(level),
                }),
            }
        };
        walk(&mut read)
    };
    let (guest, updates) = match end {
        GuestEnd::Ok(g, u) => (g, u),
        GuestEnd::PageFault { code, level } => return NestedEnd::PageFault { code, level },
        GuestEnd::Stopped(s) => return s,
    };
    let mut writes = Vec::new();
    for &(gpa, width, flags, level) in &updates {
        let &(_, _, hpa, rights, ept_level) =
            seen.iter().find(|s| s.0 == gpa && s.1 == level).unwrap();
        if !rights[1] {
            return NestedEnd::Ept {
                end: EptEnd::Violation {
                    qual: qualification(
                        AccessKind::Write,
                        EptOrigin::GuestPagingStructure,
                        false,
                        rights,
                    ),
                    level: ept_level,
                },
                gpa,
                stage: Stage::GuestTable(level),
            };
        }
        writes.push((hpa, width, flags));
    }
    let origin = EptOrigin::GuestLinear { user: guest.user };
    let ept = match ept_walk(mem, cfg, guest.addr, kind, origin) {
        EptEnd::Ok(t) => t,
        EptEnd::Unbacked(a) => return NestedEnd::Unbacked(a),
        other => {
            return NestedEnd::Ept {
                end: other,
                gpa: guest.addr,
                stage: Stage::Final,
            };
        }
    };
    for (hpa, width, flags) in writes {
        let old = mem.read(hpa, width).unwrap();
        if old | flags != old {
            mem.write(hpa, width, old | flags).unwrap();
        }
    }
    NestedEnd::Ok { guest, ept }
}
