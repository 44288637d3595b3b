//! `nestvisor`: run guests on the software x86-64 + VMX hardware model, nested to any depth.
//!
//! Subcommands: `run` (today with `--bare`: an image directly on the board). Exit statuses
//! are listed in `--help` and in `docs/board.md`.

use clap::{Args, Parser, Subcommand};
use nestvisor::bare::{self, BareConfig, StdoutSink};
use std::path::PathBuf;
use std::process::ExitCode;

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

#[derive(Debug, Parser)]
#[command(
    name = "nestvisor",
    version,
    about = "Run guests on a software x86-64 CPU with VMX, nested to any depth"
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
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Run the image directly on the hardware model (no hypervisor below it).
    #[arg(long, required = true)]
    bare: bool,
    /// The multiboot1 kernel (ELF32, ELF64 or a.out-kludge).
    image: PathBuf,
    /// A module: "FILE [ARGS]"; the whole string is its command line. Repeatable.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    debug_assert!(args.bare, "only --bare exists, and clap requires it");
    let config = BareConfig {
        image: args.image,
        modules: args.modules,
        append: args.append,
        mem_mib: args.mem,
        max_insns: args.max_insns.unwrap_or(u64::MAX),
    };
    match bare::run(&config, StdoutSink::default()) {
        Ok(ending) => {
            if !matches!(ending, machine::Ending::DebugExit(_)) {
                eprintln!("nestvisor: {ending}");
            }
            ExitCode::from(bare::exit_status(&ending))
        }
        Err(e) => {
            eprintln!("nestvisor: {e}");
            ExitCode::from(bare::EXIT_BAD_INPUT)
        }
    }
}
