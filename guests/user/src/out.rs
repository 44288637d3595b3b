//! Console output for user programs: formatted text buffered into one `write` per line.

use core::fmt;

/// A line buffer flushed with one system call.
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    pub fn flush(&mut self) {
        if self.len > 0 {
            crate::sys::write(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _println(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    // Line::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut line, format_args!("{args}\n"));
    line.flush();
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::out::_println(format_args!($($arg)*)) };
}

/// Formats into a fixed byte buffer (argument strings for exec).
pub struct BufWriter<'a> {
    buf: &'a mut [u8],
    pub len: usize,
}

impl<'a> BufWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        BufWriter { buf, len: 0 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
