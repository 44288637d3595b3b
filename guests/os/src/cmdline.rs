//! The kernel command line (multiboot spec §3.3, `cmdline`): `[IMAGE-PATH] WORKLOAD [KEY=VALUE
//! ...]`. Pure string handling, tested on the host (`crates/nestvisor/tests/guest_os_cmdline.rs`
//! includes this file).

/// The workload part of the command line. Loaders put the image's path first (GRUB, QEMU and
/// `nestvisor run` do, like argv[0]); the first word is taken for that path, and skipped, when
/// it looks like a path ('/' or '.', no '=') or when it is neither a workload nor a parameter
/// and the word after it is one of `workloads`.
pub fn workload_args<'a>(cmdline: &'a str, workloads: &[&str]) -> &'a str {
    let cmdline = cmdline.trim();
    let Some((first, rest)) = cmdline.split_once(char::is_whitespace) else {
        return if is_path(cmdline) { "" } else { cmdline };
    };
    let rest = rest.trim_start();
    let second = rest.split_whitespace().next().unwrap_or("");
    let before_workload =
        !first.contains('=') && !workloads.contains(&first) && workloads.contains(&second);
    if is_path(first) || before_workload {
        rest
    } else {
        cmdline
    }
}

fn is_path(word: &str) -> bool {
    (word.contains('/') || word.contains('.')) && !word.contains('=')
}
