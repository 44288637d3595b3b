//! The built-in user programs of guest-os, as one multi-call ELF linked at 0x400000 and run in
//! ring 3. The kernel's exec loads this image into fresh pages and passes the program's name and
//! arguments at the top of the stack; `_start` dispatches on the name.
//!
//! - `init`: pid 1; checks the command line, runs the workload (and the optional `fault` test)
//!   and exits with the workload's status.
//! - workloads `kbuild` (with its job program `cc`), `memtouch`, `ptchurn`, `cpu`, `syscall`,
//!   `io`: each ends with exactly one line `result <workload> checksum=<hex>`.
//! - `fault`: commits the fault it is asked for; the kernel kills it.

#![no_std]
#![no_main]

mod arch;
mod hash;
mod out;
mod params;
mod sys;
mod workloads;

use core::fmt::Write;
use out::BufWriter;
use sys::{Fork, STATUS_KILLED, exit};

/// What the kernel passes in RDI: where the program's name and argument string are.
#[repr(C)]
#[derive(Debug)]
pub struct StartInfo {
    name: *const u8,
    name_len: usize,
    args: *const u8,
    args_len: usize,
}

/// Status of a workload whose own check failed, or of init when the workload was killed.
pub const EXIT_FAILED: u32 = 2;

/// The workloads init may run, with their entry points.
type Entry = fn(&str);

const WORKLOADS: &[(&str, Entry)] = &[
    ("kbuild", workloads::kbuild::main),
    ("memtouch", workloads::memtouch::main),
    ("ptchurn", workloads::ptchurn::main),
    ("cpu", workloads::cpu::main),
    ("syscall", workloads::syscall::main),
    ("io", workloads::io::main),
];

/// Faults the `fault` program can commit.
const FAULTS: &[(&str, fn())] = &[
    ("null", arch::write_null),
    ("kernel", arch::read_kernel),
    ("text", arch::write_text),
    ("ud", arch::undefined_opcode),
    ("gp", arch::privileged),
    ("de", arch::divide_by_zero),
    ("mprotect", write_after_mprotect),
];

#[unsafe(no_mangle)]
extern "C" fn _start(info: &StartInfo) -> ! {
    // SAFETY: the kernel wrote both strings on our stack, with these lengths, before entry.
    let (name, args) = unsafe {
        (
            core::slice::from_raw_parts(info.name, info.name_len),
            core::slice::from_raw_parts(info.args, info.args_len),
        )
    };
    let name = core::str::from_utf8(name).unwrap_or("");
    let Ok(args) = core::str::from_utf8(args) else {
        println!("{name}: arguments are not UTF-8");
        exit(params::EXIT_USAGE);
    };
    match name {
        "init" => init(args),
        "cc" => workloads::kbuild::cc(args),
        "fault" => fault(args),
        _ => match WORKLOADS.iter().find(|(w, _)| *w == name) {
            Some((_, main)) => main(args),
            None => println!("{name}: not a built-in program"),
        },
    }
    exit(0)
}

/// pid 1: `<workload> [fault=KIND] [key=value ...]`.
fn init(args: &str) {
    let mut words = args.split_ascii_whitespace();
    let Some(workload) = words.next() else {
        println!(
            "guest-os: no workload given; usage: <workload> [key=value ...] with workload one of {}",
            Names(WORKLOADS)
        );
        exit(params::EXIT_USAGE);
    };
    if !WORKLOADS.iter().any(|(w, _)| *w == workload) {
        println!(
            "guest-os: unknown workload '{workload}' (known: {})",
            Names(WORKLOADS)
        );
        exit(params::EXIT_USAGE);
    }
    let mut rest = [0u8; 1024];
    let mut rest = BufWriter::new(&mut rest);
    let mut fault_kind = None;
    for word in words {
        match word.strip_prefix("fault=") {
            Some(kind) if FAULTS.iter().any(|(k, _)| *k == kind) => fault_kind = Some(kind),
            Some(kind) => {
                println!(
                    "guest-os: unknown fault '{kind}' (known: {})",
                    Names(FAULTS)
                );
                exit(params::EXIT_USAGE);
            }
            // The buffer is as large as the kernel's argument limit.
            None => drop(write!(
                rest,
                "{}{word}",
                if rest.len == 0 { "" } else { " " }
            )),
        }
    }
    if let Some(kind) = fault_kind {
        let status = run("fault", kind);
        if status & STATUS_KILLED == 0 {
            println!("init: the fault program was not killed (status {status:#x})");
            exit(EXIT_FAILED);
        }
        println!(
            "init: fault program killed by vector {}, carrying on",
            status & 0xFF
        );
    }
    let status = run(workload, rest.as_str());
    if status & STATUS_KILLED != 0 {
        println!("init: {workload} was killed by vector {}", status & 0xFF);
        exit(EXIT_FAILED);
    }
    exit(status as u32)
}

/// Forks, execs `program` in the child, waits for it; returns its status.
fn run(program: &str, args: &str) -> u64 {
    match sys::fork() {
        Ok(Fork::Child) => {
            let err = sys::exec(program, args);
            println!("init: exec {program} failed: errno {}", err.0);
            exit(127);
        }
        Ok(Fork::Parent(pid)) => loop {
            match sys::wait() {
                Ok((p, status)) if p == pid => return status,
                Ok(_) => {} // an orphan that was handed to init
                Err(e) => {
                    println!("init: wait failed: errno {}", e.0);
                    exit(EXIT_FAILED);
                }
            }
        },
        Err(e) => {
            println!("init: fork failed: errno {}", e.0);
            exit(EXIT_FAILED);
        }
    }
}

/// The `fault` program: commits the fault named by its argument.
fn fault(kind: &str) {
    match FAULTS.iter().find(|(k, _)| *k == kind.trim()) {
        Some((_, commit)) => commit(),
        None => println!("fault: unknown kind '{kind}'"),
    }
    println!("fault: still alive after '{kind}'");
    exit(EXIT_FAILED);
}

/// Writes to a page, makes it read-only, writes again: the second write must fault (it would
/// not if the kernel left the writable translation in the TLB).
fn write_after_mprotect() {
    const PAGE: u64 = 4096;
    let Ok(addr) = sys::mmap(PAGE, sys::PROT_READ | sys::PROT_WRITE) else {
        return;
    };
    let word = addr as *mut u64;
    // SAFETY: the page was just mapped read-write for this process.
    unsafe { word.write_volatile(1) };
    // SAFETY: nothing but the deliberate write below touches the page while it is read-only.
    if unsafe { sys::mprotect(addr, PAGE, sys::PROT_READ) }.is_err() {
        return;
    }
    // SAFETY: deliberately faults; the kernel kills the process before the store completes.
    unsafe { word.write_volatile(2) };
}

struct Names<T: 'static>(&'static [(&'static str, T)]);

impl<T> core::fmt::Display for Names<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (name, _)) in self.0.iter().enumerate() {
            write!(f, "{}{name}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("user panic: {info}");
    exit(101)
}
