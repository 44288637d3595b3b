//! guest-os's command-line handling (`guests/os/src/cmdline.rs`), tested on the host: the image
//! path loaders put first is skipped, everything else reaches init unchanged.

#[path = "../../../guests/os/src/cmdline.rs"]
mod cmdline;

use cmdline::workload_args;

const WORKLOADS: &[&str] = &["kbuild", "memtouch", "ptchurn", "cpu", "syscall", "io"];

#[test]
fn the_image_path_is_skipped() {
    let cases = [
        ("/tmp/guest-os.elf kbuild jobs=4", "kbuild jobs=4"),
        ("guest-os.elf cpu", "cpu"),
        ("./guest-os cpu iters=5", "cpu iters=5"),
        ("guest-os cpu iters=5", "cpu iters=5"),
        ("/boot/guest-os", ""),
        ("/boot/guest-os   ", ""),
        ("  /boot/guest-os \t io  lines=3 ", "io  lines=3"),
    ];
    for (line, args) in cases {
        assert_eq!(workload_args(line, WORKLOADS), args, "{line:?}");
    }
}

#[test]
fn without_a_path_the_line_is_kept() {
    let cases = [
        ("kbuild jobs=4", "kbuild jobs=4"),
        ("cpu", "cpu"),
        ("", ""),
        ("bogus", "bogus"),
        ("bogus iters=3", "bogus iters=3"),
        ("jobs=4 kbuild", "jobs=4 kbuild"),
        ("cpu iters=1.5", "cpu iters=1.5"),
        ("guest-os", "guest-os"),
    ];
    for (line, args) in cases {
        assert_eq!(workload_args(line, WORKLOADS), args, "{line:?}");
    }
}
