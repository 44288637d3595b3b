//! Error numbers returned by system calls, negated in RAX (the Linux convention, same values).

/// A system-call error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u16);

pub const ENOENT: Errno = Errno(2);
pub const ECHILD: Errno = Errno(10);
pub const EAGAIN: Errno = Errno(11);
pub const ENOMEM: Errno = Errno(12);
pub const EFAULT: Errno = Errno(14);
pub const EINVAL: Errno = Errno(22);
pub const ENOSYS: Errno = Errno(38);

impl Errno {
    /// The value a system call returns: `-errno`.
    pub fn to_return(self) -> u64 {
        (-i64::from(self.0)) as u64
    }
}
