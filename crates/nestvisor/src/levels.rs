//! `nestvisor run --levels 1`: the native hypervisor (L0, `crates/hv` on the software CPU's
//! VMX through [`crate::softvmx::SoftVmx`]) runs an image as its guest at L1 (issue 6).
//!
//! The board's RAM is the guest's RAM (`--mem`, guest-physical = host-physical, mapped lazily
//! in EPT01) followed by the hypervisor's own frames (VMCS, EPT tables, bitmaps), which no
//! guest mapping reaches. The image is loaded by the same multiboot loader as `--bare`, into
//! the guest's part of RAM only, so the memory map it reports is the guest's. The guest's
//! console goes to the output tagged with its level (`[L1] `); its debug-exit status becomes
//! the process's.

use cpu::Bus as _;
use devices::ByteSink;
use hv::vm::{Counters, Ending, HvError, Vm, VmConfig};
use machine::{Machine, Module};
use std::path::PathBuf;
use x86::Hpa;

use crate::bare::{BareConfig, BareError};
use crate::softvmx::SoftVmx;

/// Frames the hypervisor keeps for itself beyond the guest's RAM: VMCS, MSR bitmap, and EPT
/// tables for up to 4 GiB of guest RAM in 2-MiB pages with room to spare, or the shadow
/// pages of [`SHADOW_PAGES`].
const HYPERVISOR_MIB: u64 = 24;

/// The shadow-page budget under `--mmu shadow`: 16 MiB of shadow tables.
const SHADOW_PAGES: usize = 4096;

/// Guest steps between returns to the hypervisor when the guest does not exit on its own.
const SLICE: u64 = 1 << 20;

/// How the hypervisor virtualizes its guest's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmu {
    /// EPT01, built by the hypervisor (the default).
    Ept,
    /// Shadow paging.
    Shadow,
}

/// What `run --levels 1` needs.
#[derive(Clone, Debug)]
pub struct LevelsConfig {
    /// Image, modules, command line, guest RAM and instruction limit, as for `--bare`.
    pub bare: BareConfig,
    /// Memory virtualization.
    pub mmu: Mmu,
}

/// How the run ended, with the counters of each level.
#[derive(Debug)]
pub struct LevelsOutcome {
    /// How the guest's run ended.
    pub ending: Ending,
    /// Instructions the software CPU retired (all of them the guest's: the native hypervisor
    /// executes none, and each VM entry counts one step).
    pub instructions: u64,
    /// The hypervisor's counters.
    pub counters: Counters,
    /// The software CPU's own counters (its TLB: what the guest's translations cost).
    pub cpu: cpu::Counters,
}

/// A console that starts every line with the level tag.
#[derive(Debug)]
pub struct Tagged<S> {
    inner: S,
    tag: &'static str,
    at_line_start: bool,
}

impl<S: ByteSink> Tagged<S> {
    /// `inner` with every line starting `tag`.
    pub fn new(inner: S, tag: &'static str) -> Self {
        Self {
            inner,
            tag,
            at_line_start: true,
        }
    }
}

impl<S: ByteSink> ByteSink for Tagged<S> {
    fn put(&mut self, byte: u8) {
        if self.at_line_start {
            for b in self.tag.bytes() {
                self.inner.put(b);
            }
        }
        self.inner.put(byte);
        self.at_line_start = byte == b'\n';
    }

    fn flush(&mut self) {
        self.inner.flush();
    }
}

/// A board console nobody writes to (the guest's devices are the hypervisor's).
#[derive(Debug, Default)]
struct Unused;

impl ByteSink for Unused {
    fn put(&mut self, _: u8) {}
}

/// Why the run could not start, or the hypervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum LevelsError {
    /// Reading or loading the image.
    #[error("{0}")]
    Load(#[from] BareError),
    /// The hypervisor itself failed (not its guest).
    #[error("the hypervisor failed: {0}")]
    Hypervisor(String),
}

/// Runs the image as the guest of the native hypervisor.
pub fn run<S: ByteSink>(config: &LevelsConfig, console: S) -> Result<LevelsOutcome, LevelsError> {
    let c = &config.bare;
    let image = crate::bare::read_image(&c.image)?;
    let module_data = c
        .modules
        .iter()
        .map(|m| crate::bare::read_image(&PathBuf::from(m.split(' ').next().unwrap_or(m))))
        .collect::<Result<Vec<_>, _>>()?;
    let modules: Vec<Module<'_>> = c
        .modules
        .iter()
        .zip(&module_data)
        .map(|(line, data)| Module {
            data,
            cmdline: line,
        })
        .collect();
    let guest_ram = c.mem_mib.saturating_mul(1 << 20);
    let total = guest_ram + (HYPERVISOR_MIB << 20);
    let load_err = |source| {
        LevelsError::Load(BareError::Load {
            path: c.image.clone(),
            source,
        })
    };
    let mut machine = Machine::new(total, Unused).map_err(load_err)?;
    let (cpu, board) = machine.parts_mut();
    let cmdline = format!("{} {}", c.image.display(), c.append);
    let ram = board
        .ram_mut()
        .get_mut(..guest_ram as usize)
        .ok_or_else(|| LevelsError::Hypervisor("guest RAM beyond the board's".into()))?;
    let loaded = machine::multiboot::load(ram, &image, &modules, &cmdline)
        .map_err(|e| load_err(machine::Error::from(e)))?;
    cpu.flush_decode_cache();
    let info = u32::try_from(loaded.info.raw())
        .map_err(|_| LevelsError::Hypervisor("multiboot information above 4 GiB".into()))?;
    let frames = guest_ram >> 12..total >> 12;
    let mut host = SoftVmx::new(cpu, board, frames, SLICE, Tagged::new(console, "[L1] "))
        .map_err(|e| LevelsError::Hypervisor(e.to_string()))?;
    host.set_instruction_limit(c.max_insns);
    let hv_err = |e: HvError| LevelsError::Hypervisor(e.to_string());
    let mut vm = Vm::new(
        &mut host,
        VmConfig {
            ram: guest_ram,
            ram_base: Hpa::new(0),
            entry: loaded.entry,
            multiboot_info: info,
            vpid: 1,
            mmu: match config.mmu {
                Mmu::Ept => hv::vm::Mmu::Ept,
                Mmu::Shadow => hv::vm::Mmu::Shadow {
                    max_pages: SHADOW_PAGES,
                },
            },
        },
    )
    .map_err(hv_err)?;
    let ending = vm.run(&mut host).map_err(hv_err)?;
    host.console().flush();
    Ok(LevelsOutcome {
        ending,
        instructions: host.cpu().instructions_retired(),
        counters: vm.counters().clone(),
        cpu: host.cpu().counters(),
    })
}

/// One line on how the guest's run ended.
pub fn describe(ending: &Ending) -> String {
    match ending {
        Ending::DebugExit(r) => format!("debug-exit with value {:#x}", r.value),
        Ending::TripleFault => "triple fault".into(),
        Ending::HaltedForever => "halted with nothing that can wake it".into(),
        Ending::InstructionLimit => "instruction limit reached".into(),
        Ending::Unsupported(what) => format!("not implemented: {what}"),
    }
}

/// The counters of every level as JSON (`--stats`): deterministic, so two runs of the same
/// image and options give identical files.
pub fn stats_json(outcome: &LevelsOutcome) -> String {
    use serde_json::json;
    let c = &outcome.counters;
    let exits: serde_json::Map<String, serde_json::Value> = c
        .exits
        .iter()
        .map(|(&reason, &n)| {
            let name = x86::vmx::ExitReason::from_u16(reason)
                .map_or_else(|| format!("reason {reason}"), |r| r.name().to_owned());
            (name, json!(n))
        })
        .collect();
    let doc = json!({
        "levels": [
            {
                "level": 0,
                "role": "native hypervisor (crates/hv on the software CPU)",
                "vm_entries": c.entries,
                "exits": exits,
                "exits_total": c.exits.values().sum::<u64>(),
                "ept_violations_mapped": c.ept_maps,
                "mmio_emulated": c.mmio,
                "io_emulated": c.io,
                "interrupts_injected": c.injected,
                "events_reinjected": c.reinjected,
                "exits_by_outcome": c.outcomes,
                "tlb_flushes_requested": c.tlb_flushes,
                "mmu": match &c.shadow {
                    None => json!({ "mode": "ept" }),
                    Some(s) => json!({
                        "mode": "shadow",
                        "shadow_page_faults": s.shadow_faults,
                        "guest_page_faults_injected": s.guest_faults,
                        "mmio_page_faults": s.mmio_faults,
                        "write_protection_emulations": s.wp_emulations,
                        "unshadowed_tables": s.unshadowed,
                        "unsync": s.unsync,
                        "resync": s.resync,
                        "invlpg_zaps": s.invlpg,
                        "roots_built": s.roots_built,
                        "roots_reused": s.roots_reused,
                        "shadow_pages_created": s.pages_created,
                        "shadow_pages_freed": s.pages_freed,
                        "resets": s.resets,
                    }),
                },
            },
            {
                "level": 1,
                "role": "guest",
                "instructions_retired": outcome.instructions,
                "tlb_flushes": outcome.cpu.tlb_flushes,
                "tlb_misses": outcome.cpu.tlb_misses,
                "ending": describe(&outcome.ending),
            }
        ]
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
