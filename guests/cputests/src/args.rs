//! The command line of a test program: `name=value` words after the image path that loaders put
//! first (multiboot spec 0.6.96 §3.3, `cmdline`; QEMU and GRUB pass the path as the first word).

/// The value of the numeric parameter `key` (decimal), `default` when absent, `None` when it is
/// present but not a number.
pub fn number(cmdline: &str, key: &str, default: u64) -> Option<u64> {
    for word in cmdline.split_ascii_whitespace() {
        if let Some((k, v)) = word.split_once('=')
            && k == key
        {
            return v.parse().ok();
        }
    }
    Some(default)
}
