//! `key=value` parameters of a workload, with defaults and bounds; a bad one ends the program
//! with a message and status 1.

use crate::println;
use crate::sys::exit;

/// Status for a malformed or unknown parameter.
pub const EXIT_USAGE: u32 = 1;

/// One parameter: its name, default, and the smallest and largest values accepted.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

impl Param {
    pub const fn new(
        name: &'static str,
        default: u64,
        range: core::ops::RangeInclusive<u64>,
    ) -> Self {
        Param {
            name,
            default,
            min: *range.start(),
            max: *range.end(),
        }
    }
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        _ => None,
    }
}

/// Parses `args` against `spec`; returns the values in `spec` order.
pub fn parse<const N: usize>(program: &str, args: &str, spec: [Param; N]) -> [u64; N] {
    let mut values = spec.map(|p| p.default);
    for word in args.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            println!("{program}: malformed parameter '{word}': expected key=value");
            exit(EXIT_USAGE);
        };
        let Some(i) = spec.iter().position(|p| p.name == key) else {
            println!(
                "{program}: unknown parameter '{key}' (known: {})",
                Names(&spec)
            );
            exit(EXIT_USAGE);
        };
        let p = spec[i];
        match number(value) {
            Some(v) if (p.min..=p.max).contains(&v) => values[i] = v,
            Some(_) => {
                println!(
                    "{program}: parameter {key}={value} is out of range {}..={}",
                    p.min, p.max
                );
                exit(EXIT_USAGE);
            }
            None => {
                println!("{program}: parameter {key}={value}: '{value}' is not a number");
                exit(EXIT_USAGE);
            }
        }
    }
    values
}

struct Names<'a>(&'a [Param]);

impl core::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", p.name)?;
        }
        Ok(())
    }
}
