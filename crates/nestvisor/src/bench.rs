//! `nestvisor bench cpu`: the speed of the software CPU against QEMU's software emulation (TCG),
//! measured in the same run on the same images (issue 3, item 7; `docs/benchmarking.md`).
//!
//! Two bare kernels from `guests/cputests` are run on both machines: `bench-intloop` (a tight
//! integer loop) and `bench-mmu` (page-table rewrites, CR3 reloads and a new page touched every
//! few instructions, so the TLB design decides the figure). Each machine runs each kernel at two
//! sizes, and the time per unit of work (iteration, round) is the slope between them, so that
//! start-up costs (QEMU's process and firmware, nestvisor's machine construction) cancel out.
//! The four timings (two machines, two sizes) are taken in `repeats` rounds, each round running
//! all four, so that both machines sample the same stretches of a shared machine's load; the
//! fastest of each is kept. Before timing, both machines run the kernel at the same size and
//! must print identical output: a speed figure for a CPU that computes something else would be
//! meaningless.
//!
//! Wall time is read here, in the harness, never inside the model: the model's own counters
//! (instructions retired) are deterministic and reported beside it.

use crate::bare::{self, BareConfig};
use crate::{images, qemu};
use devices::ByteSink;
use machine::Ending;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use thiserror::Error;

/// RAM given to both machines.
const MEM_MIB: u64 = 128;

/// One benchmark kernel and the sizes it runs at on each machine.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// The embedded image.
    pub image: &'static str,
    /// The command-line parameter that sets its size.
    pub param: &'static str,
    /// What one unit of that size is.
    pub unit: &'static str,
    /// Small and large size on nestvisor. At scale 1 the two differ by more than a second of
    /// work, so that the noise of one run (tens of milliseconds) stays a few percent.
    pub nestvisor_sizes: [u64; 2],
    /// Small and large size on QEMU: larger, QEMU being faster, for the same reason; QEMU's own
    /// start-up varies by about a tenth of a second from run to run.
    pub qemu_sizes: [u64; 2],
    /// The speed the issue asks for, as a fraction of QEMU's.
    pub target: f64,
}

/// The kernels of `bench cpu`.
pub const KERNELS: [Kernel; 2] = [
    Kernel {
        image: "bench-intloop",
        param: "iters",
        unit: "iteration",
        nestvisor_sizes: [500_000, 2_500_000],
        qemu_sizes: [20_000_000, 520_000_000],
        target: 0.15,
    },
    Kernel {
        image: "bench-mmu",
        param: "rounds",
        unit: "round",
        nestvisor_sizes: [1_000, 11_000],
        qemu_sizes: [2_000, 82_000],
        target: 1.0,
    },
];

/// How hard to measure.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Multiplies every size (1.0 for the real figures; small values for a smoke run).
    pub scale: f64,
    /// Runs per size; the fastest counts.
    pub repeats: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scale: 1.0,
            repeats: 3,
        }
    }
}

/// One kernel's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The kernel.
    pub kernel: &'static str,
    /// The unit of work.
    pub unit: &'static str,
    /// Nanoseconds per unit on nestvisor, or `None` when the slope was not positive (too
    /// little work for the timer's noise: raise `--scale`).
    pub nestvisor_ns: Option<f64>,
    /// Nanoseconds per unit on QEMU, or `None` as above.
    pub qemu_ns: Option<f64>,
    /// Guest instructions retired per unit (nestvisor's deterministic count).
    pub instructions_per_unit: f64,
    /// nestvisor's speed as a fraction of QEMU's (QEMU's time over nestvisor's).
    pub speed: Option<f64>,
    /// The target for `speed`.
    pub target: f64,
}

/// Why a benchmark could not be measured.
#[derive(Debug, Error)]
pub enum BenchError {
    /// QEMU is not installed.
    #[error(
        "{} not found: install qemu-system-x86 (scripts/setup does)",
        qemu::BINARY
    )]
    QemuMissing,
    /// An image is not embedded.
    #[error("no embedded image {0}")]
    NoImage(&'static str),
    /// A file could not be written or a process started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A run did not end with the kernel's success status.
    #[error("{kernel} `{append}` on {machine} did not succeed: {detail}")]
    Run {
        /// The kernel.
        kernel: &'static str,
        /// Its command line.
        append: String,
        /// `nestvisor` or `qemu`.
        machine: &'static str,
        /// The ending and the output.
        detail: String,
    },
    /// The two machines computed different things.
    #[error(
        "{kernel} `{append}` prints different output on nestvisor and QEMU:\n--- nestvisor ---\n{nestvisor}--- qemu ---\n{qemu}"
    )]
    Mismatch {
        /// The kernel.
        kernel: &'static str,
        /// Its command line.
        append: String,
        /// nestvisor's output.
        nestvisor: String,
        /// QEMU's output.
        qemu: String,
    },
}

/// Collects a guest's serial output.
#[derive(Debug, Default)]
struct Capture(Vec<u8>);

impl ByteSink for Capture {
    fn put(&mut self, byte: u8) {
        self.0.push(byte);
    }
}

/// A timed run: output, wall time and (nestvisor only) instructions retired.
struct Timed {
    output: String,
    time: Duration,
    instructions: u64,
}

/// The debug-exit value the bench kernels end with when they pass.
const PASS: u32 = 0;

fn run_nestvisor(kernel: &Kernel, append: &str) -> Result<Timed, BenchError> {
    let config = BareConfig {
        image: PathBuf::from(kernel.image),
        modules: Vec::new(),
        append: append.to_owned(),
        mem_mib: MEM_MIB,
        max_insns: u64::MAX,
    };
    let mut capture = Capture::default();
    let start = Instant::now();
    let outcome = bare::run(&config, &mut capture).map_err(|e| BenchError::Run {
        kernel: kernel.image,
        append: append.to_owned(),
        machine: "nestvisor",
        detail: e.to_string(),
    })?;
    let time = start.elapsed();
    let output = String::from_utf8_lossy(&capture.0).into_owned();
    match outcome.ending {
        Ending::DebugExit(request) if request.value == PASS => Ok(Timed {
            output,
            time,
            instructions: outcome.instructions,
        }),
        ending => Err(BenchError::Run {
            kernel: kernel.image,
            append: append.to_owned(),
            machine: "nestvisor",
            detail: format!("{ending}\n{output}"),
        }),
    }
}

fn run_qemu(kernel: &Kernel, image: &Path, append: &str) -> Result<Timed, BenchError> {
    let start = Instant::now();
    let out = qemu::command(image, append, MEM_MIB)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BenchError::Io {
            what: format!("starting {}", qemu::BINARY),
            source,
        })?;
    let time = start.elapsed();
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    // isa-debug-exit: the process status is (value << 1) | 1.
    if out.status.code() != Some(((PASS << 1) | 1) as i32) {
        return Err(BenchError::Run {
            kernel: kernel.image,
            append: append.to_owned(),
            machine: "qemu",
            detail: format!("{}\n{output}", out.status),
        });
    }
    Ok(Timed {
        output,
        time,
        instructions: 0,
    })
}

/// Nanoseconds per unit between two sizes, or `None` if the slope is not positive.
fn slope_ns(sizes: [u64; 2], small: &Timed, large: &Timed) -> Option<f64> {
    let units = sizes[1].saturating_sub(sizes[0]) as f64;
    let ns = large.time.as_nanos() as f64 - small.time.as_nanos() as f64;
    (units > 0.0 && ns > 0.0).then(|| ns / units)
}

fn scaled(sizes: [u64; 2], scale: f64) -> [u64; 2] {
    let small = ((sizes[0] as f64 * scale) as u64).max(1);
    let large = ((sizes[1] as f64 * scale) as u64).max(small + 1);
    [small, large]
}

/// Measures one kernel.
fn measure(kernel: &Kernel, image: &Path, options: Options) -> Result<Row, BenchError> {
    let append = |size: u64| format!("{}={size}", kernel.param);
    let nv_sizes = scaled(kernel.nestvisor_sizes, options.scale);
    let qemu_sizes = scaled(kernel.qemu_sizes, options.scale);

    // Same work, same output: checked once at nestvisor's small size.
    let check = append(nv_sizes[0]);
    let nv = run_nestvisor(kernel, &check)?;
    let reference = run_qemu(kernel, image, &check)?;
    if nv.output != reference.output {
        return Err(BenchError::Mismatch {
            kernel: kernel.image,
            append: check,
            nestvisor: nv.output,
            qemu: reference.output,
        });
    }

    // Rounds of all four runs, interleaved, so that a burst of load on the shared machine
    // slows both machines rather than one; the fastest of each run counts.
    let round = || -> Result<[Timed; 4], BenchError> {
        Ok([
            run_nestvisor(kernel, &append(nv_sizes[0]))?,
            run_qemu(kernel, image, &append(qemu_sizes[0]))?,
            run_nestvisor(kernel, &append(nv_sizes[1]))?,
            run_qemu(kernel, image, &append(qemu_sizes[1]))?,
        ])
    };
    let mut best = round()?;
    for _ in 1..options.repeats {
        for (best, run) in best.iter_mut().zip(round()?) {
            if run.time < best.time {
                *best = run;
            }
        }
    }
    let [nv_small, q_small, nv_large, q_large] = best;

    let nestvisor_ns = slope_ns(nv_sizes, &nv_small, &nv_large);
    let qemu_ns = slope_ns(qemu_sizes, &q_small, &q_large);
    let instructions_per_unit =
        (nv_large.instructions - nv_small.instructions) as f64 / (nv_sizes[1] - nv_sizes[0]) as f64;
    Ok(Row {
        kernel: kernel.image,
        unit: kernel.unit,
        nestvisor_ns,
        qemu_ns,
        instructions_per_unit,
        speed: nestvisor_ns.zip(qemu_ns).map(|(nv, q)| q / nv),
        target: kernel.target,
    })
}

/// Runs `bench cpu`: every kernel of [`KERNELS`] on both machines.
pub fn cpu(options: Options) -> Result<Vec<Row>, BenchError> {
    if !qemu::available() {
        return Err(BenchError::QemuMissing);
    }
    let dir = std::env::temp_dir();
    KERNELS
        .iter()
        .map(|kernel| {
            let bytes = images::by_name(kernel.image).ok_or(BenchError::NoImage(kernel.image))?;
            let image = dir.join(format!(
                "nestvisor-bench-{}-{}.elf",
                kernel.image,
                std::process::id()
            ));
            std::fs::write(&image, bytes).map_err(|source| BenchError::Io {
                what: format!("writing {}", image.display()),
                source,
            })?;
            let row = measure(kernel, &image, options);
            let _ = std::fs::remove_file(&image);
            row
        })
        .collect()
}

/// The rows as a table for people.
pub fn table(rows: &[Row]) -> String {
    let ns = |v: Option<f64>| match v {
        Some(ns) if ns >= 1_000_000.0 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{ns:.1} ns"),
        None => "noisy".to_owned(),
    };
    let mut out = format!(
        "{:<14} {:<10} {:>12} {:>12} {:>10} {:>8} {:>11} {:>9}\n",
        "kernel", "unit", "nestvisor", "qemu-tcg", "speed", "target", "insns/unit", "MIPS"
    );
    for r in rows {
        let speed = r.speed.map_or("noisy".to_owned(), |s| format!("{s:.3}×"));
        let mips = r.nestvisor_ns.map_or("noisy".to_owned(), |ns| {
            format!("{:.1}", r.instructions_per_unit / ns * 1e3)
        });
        out.push_str(&format!(
            "{:<14} {:<10} {:>12} {:>12} {:>10} {:>8} {:>11.1} {:>9}\n",
            r.kernel,
            r.unit,
            ns(r.nestvisor_ns),
            ns(r.qemu_ns),
            speed,
            format!("≥ {}×", r.target),
            r.instructions_per_unit,
            mips
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(ms: u64) -> Timed {
        Timed {
            output: String::new(),
            time: Duration::from_millis(ms),
            instructions: 0,
        }
    }

    #[test]
    fn the_slope_cancels_start_up_time() {
        // 100 ms of start-up, then 2 ms per unit.
        let ns = slope_ns([10, 60], &timed(120), &timed(220)).unwrap();
        assert!((ns - 2e6).abs() < 1.0, "{ns}");
        assert_eq!(slope_ns([10, 60], &timed(220), &timed(120)), None);
    }

    #[test]
    fn scaling_keeps_two_distinct_positive_sizes() {
        assert_eq!(scaled([1_000, 6_000], 1.0), [1_000, 6_000]);
        assert_eq!(scaled([1_000, 6_000], 0.01), [10, 60]);
        assert_eq!(scaled([1_000, 6_000], 0.0), [1, 2]);
    }

    #[test]
    fn table_names_noise_instead_of_inventing_a_figure() {
        let rows = [Row {
            kernel: "bench-mmu",
            unit: "round",
            nestvisor_ns: Some(150_000.0),
            qemu_ns: None,
            instructions_per_unit: 300.0,
            speed: None,
            target: 1.0,
        }];
        let table = table(&rows);
        assert!(table.contains("150.00 µs"), "{table}");
        assert!(table.contains("noisy"), "{table}");
    }
}
