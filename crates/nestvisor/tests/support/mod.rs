//! What the integration tests share: booting an image under QEMU (the reference machine, as
//! `nestvisor::qemu` invokes it) and under `nestvisor run --bare`, with a timeout, and the
//! embedded images as files.

#![allow(dead_code)] // each test crate uses its own subset

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// COM1 output.
    pub stdout: String,
    /// The process exit status (`None` if killed by a signal).
    pub status: Option<i32>,
}

/// The embedded image `name` as a file, named after its content so that concurrent test
/// processes share it and a stale copy is never reused.
pub fn image(name: &str) -> PathBuf {
    let bytes =
        nestvisor::images::by_name(name).unwrap_or_else(|| panic!("{name} is not embedded"));
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}-{hash:016x}.elf"));
    if !path.exists() {
        // Tests run on several threads and in several processes: each writer gets its own
        // temporary file, and the rename makes the complete file appear at once.
        static WRITERS: AtomicU64 = AtomicU64::new(0);
        let writer = WRITERS.fetch_add(1, Ordering::Relaxed);
        let partial = dir.join(format!(
            "{name}-{hash:016x}.{}-{writer}.part",
            std::process::id()
        ));
        std::fs::write(&partial, bytes).unwrap();
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// `qemu-system-x86_64 -accel tcg -kernel IMAGE -append APPEND -m MIB` (see `nestvisor::qemu`).
/// Fails the test, saying what to install, when QEMU is missing.
pub fn qemu(image: &Path, append: &str, mem_mib: u32, timeout: Duration) -> Run {
    assert!(
        nestvisor::qemu::available(),
        "{} not found: install qemu-system-x86 (scripts/setup does) to run this test",
        nestvisor::qemu::BINARY
    );
    run_with_timeout(
        nestvisor::qemu::command(image, append, u64::from(mem_mib)),
        timeout,
    )
}

/// `nestvisor run --bare IMAGE --append APPEND --mem MIB`: the same image on the project's own
/// board, whose debug-exit port gives the same process status as QEMU's.
pub fn nestvisor(image: &Path, append: &str, mem_mib: u32, timeout: Duration) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nestvisor"));
    command.args(["run", "--bare"]).arg(image).args([
        "--append",
        append,
        "--mem",
        &mem_mib.to_string(),
    ]);
    run_with_timeout(command, timeout)
}

/// Runs a command to its end, killing it after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            child.kill().unwrap();
            child.wait().unwrap();
            let stdout = reader.join().unwrap();
            panic!("timed out after {timeout:?}: {command:?}\n--- output ---\n{stdout}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        stdout: reader.join().unwrap(),
        status: status.code(),
    }
}
