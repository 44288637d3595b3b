//! Shared by the integration tests: a sparse test memory, random tables and contexts, and the
//! naive reference walker (`reference`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod reference;

use std::cell::RefCell;
use std::collections::BTreeMap;

use nestvisor_paging::{
    Access, AccessKind, Address, Ept, EptCaps, Memory, MemoryError, PagingContext, Privilege,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use x86::paging::Eptp;
use x86::{Gpa, Hpa};

/// A runner of `cases` cases from a fixed `seed`, so that CI runs the same cases every time;
/// set `PROPTEST_RNG_SEED` to explore others.
pub fn runner(cases: u32, seed: u64) -> TestRunner {
    let mut config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(seed);
    }
    TestRunner::new(config)
}

/// How often a property met each kind of outcome, so that a generator that drifts away from
/// some kind fails loudly instead of testing less than it claims.
#[derive(Default)]
pub struct Outcomes(RefCell<BTreeMap<&'static str, u32>>);

impl Outcomes {
    pub fn count(&self, kind: &'static str) {
        *self.0.borrow_mut().entry(kind).or_default() += 1;
    }

    /// Fails unless every kind in `kinds` occurred at least `at_least` times.
    pub fn require(&self, kinds: &[&'static str], at_least: u32) {
        let counts = self.0.borrow();
        eprintln!("outcomes: {counts:?}");
        for kind in kinds {
            let n = counts.get(kind).copied().unwrap_or(0);
            assert!(n >= at_least, "only {n} cases of {kind}: {counts:?}");
        }
    }
}

/// A valid EPT01 of `levels` levels rooted at `root` (write-back tables), with EPT A/D flags,
/// mode-based execute, execute-only support and 1-GiB pages as `[ad, mbec, execute_only,
/// pages_1g]` says, and the reference's description of the same configuration.
pub fn ept_with_reference(
    root: u64,
    levels: u8,
    [ad, mbec, execute_only, pages_1g]: [bool; 4],
    maxphyaddr: u8,
) -> (Ept<Gpa, Hpa>, reference::EptRef) {
    let caps = EptCaps {
        execute_only,
        walk_length_4: true,
        walk_length_5: true,
        uncacheable: true,
        write_back: true,
        pages_1g,
        accessed_dirty: true,
    };
    let eptp = root | (u64::from(levels - 1) << 3) | 6 | (u64::from(ad) << 6);
    let ept = Ept::new(Eptp::new(eptp), &caps, maxphyaddr, mbec).unwrap();
    let cfg = reference::EptRef {
        root,
        levels,
        ad,
        mbec,
        execute_only,
        pages_1g,
        maxphyaddr,
    };
    (ept, cfg)
}

/// Little-endian memory made of 4-KiB frames; addresses outside them are unbacked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestMem {
    pub frames: BTreeMap<u64, Vec<u8>>,
}

impl TestMem {
    pub fn add_frame(&mut self, base: u64) {
        self.frames
            .entry(base & !0xfff)
            .or_insert_with(|| vec![0; 4096]);
    }

    pub fn read(&self, addr: u64, width: usize) -> Option<u64> {
        let frame = self.frames.get(&(addr & !0xfff))?;
        let off = (addr & 0xfff) as usize;
        let bytes = frame.get(off..off + width)?;
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(bytes);
        Some(u64::from_le_bytes(b))
    }

    pub fn write(&mut self, addr: u64, width: usize, value: u64) -> Option<()> {
        let frame = self.frames.get_mut(&(addr & !0xfff))?;
        let off = (addr & 0xfff) as usize;
        frame
            .get_mut(off..off + width)?
            .copy_from_slice(&value.to_le_bytes()[..width]);
        Some(())
    }
}

impl<A: Address> Memory<A> for TestMem {
    fn read_u32(&mut self, addr: A) -> Result<u32, MemoryError<A>> {
        self.read(addr.to_raw(), 4)
            .map(|v| v as u32)
            .ok_or(MemoryError { addr })
    }
    fn read_u64(&mut self, addr: A) -> Result<u64, MemoryError<A>> {
        self.read(addr.to_raw(), 8).ok_or(MemoryError { addr })
    }
    fn write_u32(&mut self, addr: A, value: u32) -> Result<(), MemoryError<A>> {
        self.write(addr.to_raw(), 4, u64::from(value))
            .ok_or(MemoryError { addr })
    }
    fn write_u64(&mut self, addr: A, value: u64) -> Result<(), MemoryError<A>> {
        self.write(addr.to_raw(), 8, value)
            .ok_or(MemoryError { addr })
    }
}

/// The frames random tables live in: chosen so that some are 2-MiB and 1-GiB aligned and all
/// lie below 2^32 (so 32-bit paging reaches them) and below 2^36.
pub const POOL: [u64; 6] = [0x0, 0x1000, 0x2000, 0x3000, 0x20_0000, 0x4000_0000];
/// A frame-aligned address with no memory behind it.
pub const UNBACKED: u64 = 0xffff_f000;
/// Table indices that random linear and guest-physical addresses use, so that walks meet the
/// populated entries. 0, 1 and the last index of a 512-entry table.
pub const INDICES_512: [u64; 3] = [0, 1, 511];
/// The same for 1024-entry tables.
pub const INDICES_1024: [u64; 3] = [0, 1, 1023];

/// Where the guest tables of the two-dimensional tests live in host-physical memory: guest
/// pool frame `g` is at host `g + GUEST_OFFSET` (when EPT maps it so).
pub const GUEST_OFFSET: u64 = 0x1_0000_0000;

/// A base address for an entry: a pool frame, mostly, or the unbacked one.
fn base() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => prop::sample::select(POOL.to_vec()),
        1 => Just(UNBACKED),
    ]
}

/// A base address for an EPT entry of the two-dimensional tests: a pool frame (EPT tables)
/// or a guest frame, or the unbacked one.
fn nested_base() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop::sample::select(POOL.to_vec()),
        6 => prop::sample::select(POOL.iter().map(|p| p + GUEST_OFFSET).collect::<Vec<_>>()),
        1 => Just(UNBACKED),
    ]
}

/// Occasional noise: nothing, one random bit at or above bit 12, or a random value.
fn noise() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => Just(0u64),
        2 => (12u32..64).prop_map(|b| 1u64 << b),
        1 => any::<u64>(),
    ]
}

/// A random entry of 32-bit, PAE, 4-level or 5-level paging (P mostly set, PS sometimes, XD
/// sometimes, reserved bits sometimes).
pub fn guest_entry() -> impl Strategy<Value = u64> {
    guest_entry_with(0.85, 0.2, 0.15, noise().boxed())
}

/// A guest entry that more often lets a walk go on: for the two-dimensional tests, where every
/// guest step also needs an EPT walk to succeed.
pub fn tame_guest_entry() -> impl Strategy<Value = u64> {
    let noise = prop_oneof![6 => Just(0u64), 1 => noise()].boxed();
    guest_entry_with(0.95, 0.1, 0.1, noise)
}

fn guest_entry_with(
    present: f64,
    large: f64,
    xd: f64,
    noise: BoxedStrategy<u64>,
) -> impl Strategy<Value = u64> {
    (
        base(),
        prop::bool::weighted(present),
        any::<u16>(),
        prop::bool::weighted(large),
        prop::bool::weighted(xd),
        noise,
    )
        .prop_map(|(base, p, low, ps, xd, noise)| {
            let mut e = base | (u64::from(low) & 0xf7e) | noise;
            if p {
                e |= 1;
            }
            if ps {
                e |= 1 << 7;
            }
            if xd {
                e |= 1 << 63;
            }
            e
        })
}

/// A random EPT entry (R/W/X mostly all set, memory-type bits mostly 0 or WB, large-page bit
/// sometimes, reserved bits sometimes).
pub fn ept_entry() -> impl Strategy<Value = u64> {
    ept_entry_from(base().boxed())
}

/// A random EPT entry for the two-dimensional tests (see [`nested_base`]).
pub fn nested_ept_entry() -> impl Strategy<Value = u64> {
    ept_entry_from(nested_base().boxed())
}

fn ept_entry_from(base: BoxedStrategy<u64>) -> impl Strategy<Value = u64> {
    (
        base,
        prop_oneof![8 => Just(7u64), 1 => 0u64..8],
        // Bits 7:3: clear (a table-like entry) or a leaf-like mix of memory type, ignore-PAT
        // and the large-page bit.
        prop_oneof![
            12 => Just(0u64),
            3 => (prop_oneof![3 => Just(6u64), 1 => 0u64..8], any::<bool>(), prop::bool::weighted(0.4))
                .prop_map(|(mt, ipat, large)| (mt << 3) | (u64::from(ipat) << 6) | (u64::from(large) << 7)),
            1 => (0u64..32).prop_map(|b| b << 3),
        ],
        0u64..16,
        prop_oneof![4 => Just(0u64), 1 => noise()],
    )
        .prop_map(|(base, rwx, bits_7_3, bits_11_8, noise)| {
            base | rwx | bits_7_3 | (bits_11_8 << 8) | noise
        })
}

/// Random tables: every pool frame gets random entries at the indices addresses use.
pub fn tables(
    entry: impl Strategy<Value = u64>,
    indices: &'static [u64],
    width: usize,
) -> impl Strategy<Value = TestMem> {
    tables_at(entry, indices, width, 0)
}

/// Random tables in the pool frames moved up by `offset`.
pub fn tables_at(
    entry: impl Strategy<Value = u64>,
    indices: &'static [u64],
    width: usize,
    offset: u64,
) -> impl Strategy<Value = TestMem> {
    prop::collection::vec(entry, POOL.len() * indices.len()).prop_map(move |entries| {
        let mut mem = TestMem::default();
        for frame in POOL {
            mem.add_frame(frame + offset);
        }
        for (i, e) in entries.into_iter().enumerate() {
            let frame = POOL[i / indices.len()] + offset;
            let index = indices[i % indices.len()];
            let value = if width == 4 { e & 0xffff_ffff } else { e };
            mem.write(frame + index * width as u64, width, value);
        }
        mem
    })
}

/// A random linear address whose table indices are among `INDICES_512` (for 9-bit indices
/// starting at `first_shift`, `levels` of them) plus a random page offset and random bits above.
pub fn address_512(levels: u32) -> impl Strategy<Value = u64> {
    (
        prop::collection::vec(prop::sample::select(INDICES_512.to_vec()), levels as usize),
        0u64..4096,
        any::<u64>(),
    )
        .prop_map(move |(idx, offset, high)| {
            let mut a = offset;
            for (l, i) in idx.iter().enumerate() {
                a |= i << (12 + 9 * l as u32);
            }
            let used = 12 + 9 * levels;
            if used < 64 {
                a |= high << used;
            }
            a
        })
}

/// A random 32-bit linear address with indices among `INDICES_1024`.
pub fn address_32() -> impl Strategy<Value = u64> {
    (
        prop::sample::select(INDICES_1024.to_vec()),
        prop::sample::select(INDICES_1024.to_vec()),
        0u64..4096,
    )
        .prop_map(|(d, t, o)| (d << 22) | (t << 12) | o)
}

pub fn access() -> impl Strategy<Value = Access> {
    (
        prop::sample::select(vec![AccessKind::Read, AccessKind::Write, AccessKind::Fetch]),
        prop::sample::select(vec![
            Privilege::User,
            Privilege::Supervisor,
            Privilege::Implicit,
        ]),
    )
        .prop_map(|(kind, privilege)| Access::new(kind, privilege))
}

pub fn context() -> impl Strategy<Value = PagingContext> {
    (
        any::<[bool; 8]>(),
        prop::sample::select(vec![32u8, 36, 40, 46, 52]),
    )
        .prop_map(|(b, maxphyaddr)| PagingContext {
            wp: b[0],
            pse: b[1],
            pge: b[2],
            smep: b[3],
            smap: b[4],
            nxe: b[5],
            ac: b[6],
            maxphyaddr,
            gb_pages: b[7],
        })
}

impl TestMem {
    /// The union of two memories (frames of `other` win).
    pub fn merged(mut self, other: TestMem) -> TestMem {
        self.frames.extend(other.frames);
        self
    }
}
