//! `nestvisor`: run guests on the software x86-64 hardware model.
//!
//! Subcommands: `run --bare` (an image directly on the board), `image` (export an embedded
//! guest image so it can be booted elsewhere, e.g. under QEMU), and `demo` (the main job of the
//! README). Exit statuses are listed in `--help` and in `docs/board.md`.

use clap::{Args, Parser, Subcommand};
use nestvisor::bare::{self, BareConfig, Outcome, StdoutSink};
use nestvisor::{bench, images, levels};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const EXIT_STATUSES: &str = "\
Exit status of `run --bare`:
  (v << 1) | 1  the guest wrote v to the debug-exit port 0xF4 (odd; low 8 bits)
  2             bad command line
  4             the image or a module could not be read or loaded
  6             triple fault (shutdown)
  8             instruction limit reached (--max-insns)
  10            halted forever (HLT with interrupts disabled, or nothing that can wake it)
  12            the model met an unimplemented instruction or device feature
  14            the guest requested a reset
Every ending except the debug-exit port prints a one-line reason on stderr.";

/// The command line of the demo: guest-os's kernel-build workload, sized to take a few seconds.
const DEMO_APPEND: &str = "kbuild jobs=8 parallel=4 kib=256";

#[derive(Debug, Parser)]
#[command(
    name = "nestvisor",
    version,
    about = "Run guests on nestvisor's software x86-64 hardware model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a multiboot1 kernel.
    #[command(after_help = EXIT_STATUSES)]
    Run(RunArgs),
    /// Write an embedded guest image to a file (or list them with --list).
    Image(ImageArgs),
    /// The main job: guest-os's kernel-build workload on the hardware model, with a summary.
    Demo,
    /// Benchmarks measured in the same run against a peer (docs/benchmarking.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The software CPU against QEMU's software emulation (TCG) on the same two bare kernels.
    Cpu(BenchCpuArgs),
}

#[derive(Debug, Args)]
struct BenchCpuArgs {
    /// Multiplies every workload size (1 for the reported figures).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs per size; the fastest counts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeats: u32,
    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Run the image directly on the hardware model (no hypervisor below it).
    #[arg(long, required_unless_present = "levels", conflicts_with = "levels")]
    bare: bool,
    /// Run the image as the guest of the native hypervisor: 1 = the hypervisor (L0) runs it
    /// at L1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1))]
    levels: Option<u32>,
    /// How the hypervisor virtualizes its guest's memory (with --levels).
    #[arg(long, value_enum, default_value_t = MmuArg::Ept, requires = "levels")]
    mmu: MmuArg,
    /// Write the counters of every level as JSON to FILE (with --levels).
    #[arg(long, value_name = "FILE", requires = "levels")]
    stats: Option<PathBuf>,
    /// The multiboot1 kernel (ELF32, ELF64 or a.out-kludge): a file, or the name of an embedded
    /// image (`nestvisor image --list`) when no such file exists.
    #[arg(default_value = "guest-os")]
    image: PathBuf,
    /// A module: "FILE [ARGS]"; the whole string is its command line. FILE may name an
    /// embedded image as IMAGE may. Repeatable.
    #[arg(long = "module", value_name = "FILE [ARGS]")]
    modules: Vec<String>,
    /// Kernel command line after the image path.
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    append: String,
    /// RAM size in MiB (2 to 3072).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem: u64,
    /// Stop after N retired instructions (default: no limit).
    #[arg(long, value_name = "N")]
    max_insns: Option<u64>,
    /// After the run, print on stderr every VMLAUNCH/VMRESUME that failed a VM-entry check:
    /// the SDM rule, the VMCS field, its value and the outcome (VMfailValid or exit 33).
    #[arg(long)]
    explain_vmentry: bool,
}

#[derive(Debug, Args)]
struct ImageArgs {
    /// The embedded image to export.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Where to write it.
    #[arg(long, value_name = "FILE", required_unless_present = "list")]
    out: Option<PathBuf>,
    /// List the embedded images.
    #[arg(long)]
    list: bool,
}

/// The hypervisor's `log` records on stderr, at the level `NESTVISOR_LOG` names (`error` …
/// `trace`); nothing without it.
#[derive(Debug)]
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{} {}] {}", record.level(), record.target(), record.args());
    }
    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

fn main() -> ExitCode {
    if let Some(level) = std::env::var("NESTVISOR_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
        && log::set_logger(&STDERR_LOG).is_ok()
    {
        log::set_max_level(level);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Image(args) => image(args),
        Command::Demo => demo(),
        Command::Bench(BenchCommand::Cpu(args)) => bench_cpu(args),
    }
}

/// `--mmu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MmuArg {
    /// EPT01 built by the hypervisor.
    Ept,
    /// Shadow paging: the processor walks the hypervisor's shadow of the guest's tables.
    Shadow,
}

fn run(args: RunArgs) -> ExitCode {
    let config = BareConfig {
        image: args.image,
        modules: args.modules,
        append: args.append,
        mem_mib: args.mem,
        max_insns: args.max_insns.unwrap_or(u64::MAX),
    };
    if args.levels.is_some() {
        let mmu = match args.mmu {
            MmuArg::Ept => levels::Mmu::Ept,
            MmuArg::Shadow => levels::Mmu::Shadow,
        };
        return run_levels(
            &levels::LevelsConfig { bare: config, mmu },
            args.stats.as_deref(),
        );
    }
    match bare::run(&config, &mut StdoutSink::default()) {
        Ok(outcome) => {
            if args.explain_vmentry {
                explain_vmentry(&outcome);
            }
            finish(&outcome)
        }
        Err(e) => {
            eprintln!("nestvisor: {e}");
            ExitCode::from(bare::EXIT_BAD_INPUT)
        }
    }
}

/// `run --levels 1`: the image as the native hypervisor's guest.
fn run_levels(config: &levels::LevelsConfig, stats: Option<&std::path::Path>) -> ExitCode {
    let outcome = match levels::run(config, StdoutSink::default()) {
        Ok(o) => o,
        Err(e @ levels::LevelsError::Load(_)) => {
            eprintln!("nestvisor: {e}");
            return ExitCode::from(bare::EXIT_BAD_INPUT);
        }
        Err(e) => {
            eprintln!("nestvisor: {e}");
            return ExitCode::from(bare::EXIT_UNIMPLEMENTED);
        }
    };
    if let Some(path) = stats {
        let json = levels::stats_json(&outcome);
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("nestvisor: cannot write {}: {e}", path.display());
            return ExitCode::from(bare::EXIT_BAD_INPUT);
        }
    }
    use hv::vm::Ending;
    let status = match &outcome.ending {
        Ending::DebugExit(r) => return ExitCode::from(r.os_status()),
        Ending::TripleFault => bare::EXIT_TRIPLE_FAULT,
        Ending::HaltedForever => bare::EXIT_HALTED,
        Ending::InstructionLimit => bare::EXIT_INSTRUCTION_LIMIT,
        Ending::Unsupported(_) => bare::EXIT_UNIMPLEMENTED,
    };
    eprintln!("nestvisor: L1 guest: {}", levels::describe(&outcome.ending));
    ExitCode::from(status)
}

/// `--explain-vmentry`: one line per failed VM entry, naming the check.
fn explain_vmentry(outcome: &Outcome) {
    let (failures, dropped) = &outcome.vm_entry_failures;
    if failures.is_empty() {
        eprintln!("nestvisor: no VM entry failed a check");
    }
    for (rip, failure) in failures {
        eprintln!("nestvisor: VM entry at {rip:#x} failed: {failure}");
    }
    if *dropped > 0 {
        eprintln!("nestvisor: … and {dropped} more failed VM entries");
    }
}

/// Reports how a run ended (on stderr, unless the guest ended it through the debug-exit port)
/// and turns it into the process exit status.
fn finish(outcome: &Outcome) -> ExitCode {
    if !matches!(outcome.ending, machine::Ending::DebugExit(_)) {
        eprintln!("nestvisor: {}", outcome.ending);
    }
    ExitCode::from(bare::exit_status(&outcome.ending))
}

fn image(args: ImageArgs) -> ExitCode {
    if args.list {
        for name in images::NAMES {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let (Some(name), Some(out)) = (args.name, args.out) else {
        eprintln!("nestvisor: image needs NAME and --out FILE, or --list");
        return ExitCode::from(2);
    };
    let Some(bytes) = images::by_name(&name) else {
        eprintln!(
            "nestvisor: no embedded image {name:?} (embedded: {})",
            images::NAMES.join(", ")
        );
        return ExitCode::from(2);
    };
    match std::fs::write(&out, bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nestvisor: cannot write {}: {e}", out.display());
            ExitCode::from(bare::EXIT_BAD_INPUT)
        }
    }
}

/// Boots the embedded guest-os on the bare hardware model with the kernel-build workload and
/// prints what ran. Until the hypervisor exists, the deepest stack that works is one level:
/// guest-os directly on the software CPU.
fn demo() -> ExitCode {
    eprintln!(
        "nestvisor demo: guest-os `{DEMO_APPEND}` at L1, the guest of the native hypervisor \
         (crates/hv on the software CPU's VMX, EPT)"
    );
    let config = levels::LevelsConfig {
        bare: BareConfig {
            image: PathBuf::from("guest-os"),
            modules: Vec::new(),
            append: DEMO_APPEND.to_owned(),
            mem_mib: 128,
            max_insns: u64::MAX,
        },
        mmu: levels::Mmu::Ept,
    };
    let start = Instant::now();
    let outcome = match levels::run(&config, StdoutSink::default()) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("nestvisor: {e}");
            return ExitCode::from(bare::EXIT_UNIMPLEMENTED);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let c = &outcome.counters;
    eprintln!(
        "nestvisor demo: L1 retired {} instructions; L0 handled {} VM exits \
         ({} I/O, {} EPT violations, {} APIC accesses emulated, {} interrupts injected); \
         {seconds:.2} s wall time ({:.1} MIPS)",
        outcome.instructions,
        c.exits.values().sum::<u64>(),
        c.io,
        c.exits.get(&48).copied().unwrap_or(0),
        c.mmio,
        c.injected,
        outcome.instructions as f64 / seconds.max(1e-9) / 1e6
    );
    match outcome.ending {
        // guest-os reports success as debug-exit value 0.
        hv::vm::Ending::DebugExit(request) if request.value == 0 => ExitCode::SUCCESS,
        other => {
            eprintln!("nestvisor: L1 guest: {}", levels::describe(&other));
            ExitCode::from(bare::EXIT_UNIMPLEMENTED)
        }
    }
}

fn bench_cpu(args: BenchCpuArgs) -> ExitCode {
    if !(args.scale > 0.0 && args.scale.is_finite()) {
        eprintln!("nestvisor: --scale must be a positive number");
        return ExitCode::from(2);
    }
    let options = bench::Options {
        scale: args.scale,
        repeats: args.repeats,
    };
    let rows = match bench::cpu(options) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("nestvisor: bench cpu: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", bench::table(&rows));
    if let Some(path) = args.json {
        let json = match serde_json::to_string_pretty(&rows) {
            Ok(json) => json,
            Err(e) => {
                eprintln!("nestvisor: bench cpu: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("nestvisor: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
