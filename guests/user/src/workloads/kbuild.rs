//! `kbuild`: the kernel-build pattern. A make-like parent forks up to `parallel` children at a
//! time; each execs `cc` for one job and the parent waits for them, starting a new job whenever
//! one ends. A `cc` job allocates its memory with brk, generates `kib` KiB of C-like source text,
//! parses it (identifiers hashed, numbers converted), sorts the numbers, writes an object buffer
//! and exits with the buffer's checksum as its status. The parent combines the statuses in job
//! order, so the result does not depend on the order in which jobs finish.

use super::{fail, report};
use crate::hash::{Fnv, Rng};
use crate::out::BufWriter;
use crate::params::{Param, parse};
use crate::sys::{self, Fork, STATUS_KILLED};
use crate::{EXIT_FAILED, exit, println};
use core::fmt::Write;

const MAX_JOBS: usize = 4096;
const MAX_PARALLEL: usize = 32;
const CANARY: u64 = 0xC0DE_CAFE_F00D_0001;

pub fn main(args: &str) {
    let [jobs, parallel, kib] = parse(
        "kbuild",
        args,
        [
            Param::new("jobs", 8, 1..=MAX_JOBS as u64),
            Param::new("parallel", 4, 1..=MAX_PARALLEL as u64),
            Param::new("kib", 2048, 16..=1 << 20),
        ],
    );
    let mut results = [0u32; MAX_JOBS];
    // Like a shell between fork and exec, every child writes to memory it shares copy-on-write
    // with the parent; the parent checks at the end that its own copy never changed.
    let mut canary = [0u64; 512];
    for (i, c) in canary.iter_mut().enumerate() {
        *c = CANARY ^ i as u64;
    }
    // (pid, job) of the running jobs.
    let mut running = [(0u32, 0usize); MAX_PARALLEL];
    let mut active = 0;
    let mut next = 0;
    let mut failed = false;
    while next < jobs as usize || active > 0 {
        if next < jobs as usize && active < parallel as usize {
            match sys::fork() {
                Ok(Fork::Child) => {
                    for c in &mut canary {
                        *c = core::hint::black_box(!*c);
                    }
                    let mut buf = [0u8; 64];
                    let mut w = BufWriter::new(&mut buf);
                    let _ = write!(w, "job={next} kib={kib}");
                    let err = sys::exec("cc", w.as_str());
                    println!("kbuild: exec cc failed: errno {}", err.0);
                    exit(EXIT_FAILED);
                }
                Ok(Fork::Parent(pid)) => {
                    running[active] = (pid, next);
                    active += 1;
                    next += 1;
                }
                Err(e) => fail("kbuild", "fork", e),
            }
            continue;
        }
        let (pid, status) = sys::wait().unwrap_or_else(|e| fail("kbuild", "wait", e));
        let Some(i) = running[..active].iter().position(|&(p, _)| p == pid) else {
            continue;
        };
        let job = running[i].1;
        running[i] = running[active - 1];
        active -= 1;
        if status & STATUS_KILLED != 0 {
            println!("kbuild: job {job} was killed by vector {}", status & 0xFF);
            failed = true;
        }
        results[job] = status as u32;
    }
    let intact = canary
        .iter()
        .enumerate()
        .all(|(i, &c)| core::hint::black_box(c) == CANARY ^ i as u64);
    if !intact {
        println!("kbuild: a child's writes reached the parent's memory (copy-on-write broken)");
        failed = true;
    }
    if failed {
        exit(EXIT_FAILED);
    }
    let mut sum = Fnv::new();
    for (job, r) in results[..jobs as usize].iter().enumerate() {
        sum.word((job as u64) << 32 | u64::from(*r));
    }
    report("kbuild", sum.0);
}

/// One compiler-like job: `job=N kib=K`.
pub fn cc(args: &str) {
    let [job, kib] = parse(
        "cc",
        args,
        [
            Param::new("job", 0, 0..=u32::MAX as u64),
            Param::new("kib", 256, 16..=1 << 20),
        ],
    );
    let size = kib * 1024;
    let base = sys::brk(0);
    if sys::brk(base + size) != base + size {
        println!("cc: brk failed");
        exit(EXIT_FAILED);
    }
    // SAFETY: brk just gave this process [base, base + size), zeroed on first touch.
    let heap = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) };
    let (source, rest) = heap.split_at_mut(size as usize / 2);
    let (numbers, object) = rest.split_at_mut(size as usize / 4);
    // SAFETY: `numbers` is 8-aligned (brk is page-aligned, the split is at a multiple of 4 KiB)
    // and its length is a multiple of 4.
    let numbers = unsafe {
        core::slice::from_raw_parts_mut(numbers.as_mut_ptr().cast::<u32>(), numbers.len() / 4)
    };

    let text = generate(job, source);
    let (count, symbols) = tokenize(&source[..text], numbers);
    heapsort(&mut numbers[..count]);
    let written = emit(&numbers[..count], symbols, object);
    let mut sum = Fnv::new();
    sum.bytes(&object[..written]);
    sum.word(count as u64);
    sum.word(symbols);
    exit((sum.0 ^ (sum.0 >> 32)) as u32)
}

/// Fills `out` with lines of C-like source; returns the length used.
fn generate(job: u64, out: &mut [u8]) -> usize {
    let mut rng = Rng::new(job + 1);
    let mut w = BufWriter::new(out);
    loop {
        let (a, b, c, d) = (
            rng.below(512),
            rng.below(100_000),
            rng.below(512),
            rng.below(1000),
        );
        let line = match rng.below(4) {
            0 => writeln!(w, "int v{a} = {b} * v{c} + {d};"),
            1 => writeln!(w, "if (v{a} > {b}) {{ v{c} -= {d}; }}"),
            2 => writeln!(w, "static long f{a}(long x) {{ return x ^ {b}; }}"),
            _ => writeln!(w, "v{a} = f{c}(v{a}) % {d};"),
        };
        if line.is_err() {
            return w.len;
        }
    }
}

/// Splits source into identifiers (hashed into the returned symbol hash) and numbers (stored in
/// `numbers`); returns (numbers found, symbol hash).
fn tokenize(source: &[u8], numbers: &mut [u32]) -> (usize, u64) {
    let mut symbols = Fnv::new();
    let mut count = 0;
    let mut i = 0;
    while i < source.len() {
        let b = source[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < source.len() && (source[i].is_ascii_alphanumeric() || source[i] == b'_') {
                i += 1;
            }
            symbols.bytes(&source[start..i]);
        } else if b.is_ascii_digit() {
            let mut n: u32 = 0;
            while i < source.len() && source[i].is_ascii_digit() {
                n = n.wrapping_mul(10).wrapping_add(u32::from(source[i] - b'0'));
                i += 1;
            }
            if count < numbers.len() {
                numbers[count] = n;
                count += 1;
            }
        } else {
            symbols.byte(b);
            i += 1;
        }
    }
    (count, symbols.0)
}

/// In-place heapsort.
fn heapsort(v: &mut [u32]) {
    fn sift_down(v: &mut [u32], mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                return;
            }
            if child + 1 < end && v[child] < v[child + 1] {
                child += 1;
            }
            if v[root] >= v[child] {
                return;
            }
            v.swap(root, child);
            root = child;
        }
    }
    for start in (0..v.len() / 2).rev() {
        sift_down(v, start, v.len());
    }
    for end in (1..v.len()).rev() {
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

/// Writes the "object": the sorted numbers, little endian, each mixed with the symbol hash.
fn emit(numbers: &[u32], symbols: u64, out: &mut [u8]) -> usize {
    let mut written = 0;
    for (i, n) in numbers.iter().enumerate() {
        if written + 4 > out.len() {
            break;
        }
        let word = n ^ (symbols.rotate_left(i as u32 % 64) as u32);
        out[written..written + 4].copy_from_slice(&word.to_le_bytes());
        written += 4;
    }
    written
}
