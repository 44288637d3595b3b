//! Library side of the `nestvisor` program: the glue that wires the software CPU, the board and
//! the hypervisor together, so that integration tests and benchmarks drive the same code as the
//! command line.
//!
//! - [`bare`]: `nestvisor run --bare`: one multiboot image on the board, serial output to a
//!   sink, and the process exit status of each [`machine::Ending`] ([`bare::exit_status`]).
//! - [`images`]: the guest images embedded at build time.
//! - [`qemu`]: QEMU as the reference machine.
//! - [`bench`]: `nestvisor bench cpu`, the software CPU's speed against QEMU's.
//! - [`softvmx`]: the software CPU as the hypervisor's VMX backend (the native L0's silicon).
//! - [`levels`]: `nestvisor run --levels 1`, an image as the guest of the native hypervisor.

pub mod bench;
pub mod images;
pub mod levels;
pub mod qemu;
pub mod softvmx;

/// Running an image directly on the hardware model (`run --bare`).
pub mod bare {
    use devices::ByteSink;
    use machine::{Ending, Machine, Module};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use thiserror::Error;

    /// Exit status when the image or a module cannot be read or loaded.
    pub const EXIT_BAD_INPUT: u8 = 4;
    /// Exit status of a triple fault (shutdown).
    pub const EXIT_TRIPLE_FAULT: u8 = 6;
    /// Exit status when the instruction limit is reached.
    pub const EXIT_INSTRUCTION_LIMIT: u8 = 8;
    /// Exit status of a HLT nothing can end (interrupts disabled, or no interrupt source).
    pub const EXIT_HALTED: u8 = 10;
    /// Exit status when the model meets something it does not implement (an instruction, a
    /// CPU feature, a device feature).
    pub const EXIT_UNIMPLEMENTED: u8 = 12;
    /// Exit status of a reset requested by the guest.
    pub const EXIT_RESET: u8 = 14;

    /// The process exit status for a run's ending. Endings of the model are even, so that
    /// none is ever mistaken for the odd `(value << 1) | 1` of the debug-exit port; like any
    /// process status, the debug-exit one keeps only its low 8 bits.
    pub fn exit_status(ending: &Ending) -> u8 {
        match ending {
            Ending::DebugExit(r) => r.os_status(),
            Ending::Shutdown => EXIT_TRIPLE_FAULT,
            Ending::InstructionLimit => EXIT_INSTRUCTION_LIMIT,
            Ending::HaltedForever { .. } => EXIT_HALTED,
            Ending::Reset => EXIT_RESET,
            Ending::DeviceUnimplemented(_) | Ending::Cpu(_) => EXIT_UNIMPLEMENTED,
        }
    }

    /// What `run --bare` needs.
    #[derive(Clone, Debug)]
    pub struct BareConfig {
        /// The multiboot kernel.
        pub image: PathBuf,
        /// Modules: a path, optionally followed by a space and arguments; the whole string is
        /// the module's command line (as QEMU's `-initrd "file args"`).
        pub modules: Vec<String>,
        /// Appended to the kernel command line, which starts with the image path (as QEMU's
        /// `-kernel FILE -append ARGS` gives `"FILE ARGS"`).
        pub append: String,
        /// RAM in MiB.
        pub mem_mib: u64,
        /// Instruction limit.
        pub max_insns: u64,
    }

    /// Failures before the run starts.
    #[derive(Debug, Error)]
    pub enum BareError {
        /// A file could not be read.
        #[error("cannot read {path}: {source}")]
        Read {
            /// The file.
            path: PathBuf,
            /// Why.
            source: std::io::Error,
        },
        /// The machine could not be built or the image loaded.
        #[error("{path}: {source}")]
        Load {
            /// The image.
            path: PathBuf,
            /// Why.
            source: machine::Error,
        },
    }

    /// Reads an image or module: the file at `path` if there is one, otherwise the embedded
    /// image of that name (`nestvisor image --list`), so `run --bare guest-os` works from any
    /// directory. A file always wins, and `./NAME` names the file explicitly.
    pub fn read_image(path: &Path) -> Result<Vec<u8>, BareError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(bytes),
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => path
                .to_str()
                .and_then(crate::images::by_name)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| BareError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "no such file, and no embedded image of that name (embedded: {})",
                            crate::images::NAMES.join(", ")
                        ),
                    ),
                }),
            Err(source) => Err(BareError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// How a run ended, with the CPU's counters at the end.
    #[derive(Debug)]
    pub struct Outcome {
        /// Why the run stopped.
        pub ending: Ending,
        /// Instructions the CPU retired.
        pub instructions: u64,
        /// The CPU model's own counters (TLB, decode cache, events).
        pub counters: cpu::Counters,
        /// Every VMLAUNCH or VMRESUME that failed a check, with the linear address of the
        /// instruction (the first 256), and how many more failed.
        pub vm_entry_failures: (Vec<(u64, cpu::vmx::checks::EntryCheckFailure)>, u64),
    }

    /// Builds the machine, loads the image and runs it; COM1 writes to `console`.
    ///
    /// The console is a trait object so that every caller (`run --bare`, `bench cpu`) runs the
    /// same compiled machine: the board, and the CPU's loop with it, is generic over its
    /// console, and separate copies of that loop are compiled (and optimized) separately,
    /// which made the benchmark measure different machine code than `run --bare` runs.
    pub fn run(config: &BareConfig, console: &mut dyn ByteSink) -> Result<Outcome, BareError> {
        let image = read_image(&config.image)?;
        let mut module_data = Vec::with_capacity(config.modules.len());
        for m in &config.modules {
            let path = m.split(' ').next().unwrap_or(m);
            module_data.push(read_image(Path::new(path))?);
        }
        let modules: Vec<Module<'_>> = config
            .modules
            .iter()
            .zip(&module_data)
            .map(|(line, data)| Module {
                data,
                cmdline: line,
            })
            .collect();
        let cmdline = format!("{} {}", config.image.display(), config.append);
        let load_err = |source| BareError::Load {
            path: config.image.clone(),
            source,
        };
        let mut machine =
            Machine::new(config.mem_mib.saturating_mul(1 << 20), console).map_err(load_err)?;
        machine
            .load_multiboot(&image, &modules, &cmdline)
            .map_err(load_err)?;
        let ending = machine.run(config.max_insns);
        Ok(Outcome {
            ending,
            instructions: machine.cpu().instructions_retired(),
            counters: machine.cpu().counters(),
            vm_entry_failures: machine.cpu_mut().take_vm_entry_failures(),
        })
    }

    /// COM1 on the process's standard output: raw bytes, flushed at every newline, when 4 KiB
    /// are buffered, and whenever the board flushes (between run slices and at the end).
    #[derive(Debug, Default)]
    pub struct StdoutSink {
        buf: Vec<u8>,
    }

    impl ByteSink for StdoutSink {
        fn put(&mut self, byte: u8) {
            self.buf.push(byte);
            if byte == b'\n' || self.buf.len() >= 4096 {
                self.flush();
            }
        }

        fn flush(&mut self) {
            let mut out = std::io::stdout().lock();
            // A closed stdout (a pipe whose reader left) must not stop the guest.
            let _ = out.write_all(&self.buf);
            let _ = out.flush();
            self.buf.clear();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use devices::debug_exit::ExitRequest;

        #[test]
        fn exit_statuses_are_distinct_and_never_collide_with_debug_exit() {
            let endings = [
                Ending::Shutdown,
                Ending::InstructionLimit,
                Ending::HaltedForever {
                    interrupts_enabled: false,
                },
                Ending::Reset,
                Ending::DeviceUnimplemented(String::new()),
            ];
            let codes: Vec<u8> = endings.iter().map(exit_status).collect();
            for (i, c) in codes.iter().enumerate() {
                assert_eq!(c % 2, 0);
                assert_ne!(*c, 0);
                assert_ne!(*c, 2, "2 is clap's usage error");
                assert!(!codes[i + 1..].contains(c));
            }
            assert_eq!(
                exit_status(&Ending::DebugExit(ExitRequest { value: 0x10 })),
                0x21
            );
            assert_eq!(
                exit_status(&Ending::DebugExit(ExitRequest { value: 0x80 })),
                0x01
            );
        }
    }
}
