//! Results of a test program: the lines it prints, the checks it makes against what the SDM
//! specifies, and a closing summary line
//! `summary <program>: checks=<n> failures=<m> checksum=<16 hex digits>` whose checksum is the
//! FNV-1a hash of every line printed before it. The program then leaves through the debug-exit
//! port with [`EXIT_PASS`] or [`EXIT_FAIL`].

use core::fmt::{self, Write};
use rt::serial::Console;

/// Debug-exit status when every check passed.
pub const EXIT_PASS: u8 = 0;
/// Debug-exit status when a check failed.
pub const EXIT_FAIL: u8 = 1;
/// Debug-exit status for a command line the program cannot use.
pub const EXIT_USAGE: u8 = 2;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// A 64-bit FNV-1a hash.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Fnv {
    /// Folds bytes in.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    /// Folds a value in (little-endian bytes).
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// The output and the verdict of one program.
#[derive(Debug)]
pub struct Report {
    program: &'static str,
    checks: u32,
    failures: u32,
    output: Fnv,
}

/// Console output that also feeds the output checksum.
struct Tee<'a>(&'a mut Fnv);

impl Write for Tee<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.bytes(s.as_bytes());
        Console.write_str(s)
    }
}

impl Report {
    /// Starts the report of `program` and prints its first line.
    pub fn new(program: &'static str) -> Report {
        let mut report = Report {
            program,
            checks: 0,
            failures: 0,
            output: Fnv::default(),
        };
        report.line(format_args!("{program}: start"));
        report
    }

    /// Prints one line of results.
    pub fn line(&mut self, args: fmt::Arguments<'_>) {
        let mut tee = Tee(&mut self.output);
        // Tee::write_str never fails.
        let _ = tee.write_fmt(args);
        let _ = tee.write_str("\n");
    }

    /// Records a check; a failed one prints `FAIL <what>`.
    pub fn check(&mut self, what: fmt::Arguments<'_>, ok: bool) {
        self.checks += 1;
        if !ok {
            self.failures += 1;
            self.line(format_args!("FAIL {what}"));
        }
    }

    /// Records that `got` equals `want`; a mismatch prints both.
    pub fn expect_eq(&mut self, what: fmt::Arguments<'_>, got: u64, want: u64) {
        self.checks += 1;
        if got != want {
            self.failures += 1;
            self.line(format_args!("FAIL {what}: got {got:#x}, want {want:#x}"));
        }
    }

    /// Prints the summary line and leaves the machine with the verdict.
    pub fn finish(mut self) -> ! {
        let (program, checks, failures, checksum) =
            (self.program, self.checks, self.failures, self.output.0);
        self.line(format_args!(
            "summary {program}: checks={checks} failures={failures} checksum={checksum:016x}"
        ));
        rt::exit(if failures == 0 { EXIT_PASS } else { EXIT_FAIL })
    }
}

/// Prints a line through a [`Report`]: `out!(report, "format", args...)`.
#[macro_export]
macro_rules! out {
    ($report:expr, $($arg:tt)*) => { $report.line(format_args!($($arg)*)) };
}
