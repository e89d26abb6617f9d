//! Text inputs: memory sizes, shapes, `synthetic:` specs and whole command lines.
//!
//! Strings come from a small grammar of near-valid spellings (digits with leading zeros and
//! fractions, every unit spelling, separators, signs, spaces), then get character-level
//! mutations (inserted, deleted or replaced characters, some of them non-ASCII, control or
//! whitespace characters); command lines take their flags and possible values from the clap
//! definition itself, so new flags are fuzzed without touching this file.
use clap::{CommandFactory, Parser};
use nf_host::cli::{plan_command, value_error_line, Cli, Command};
use nf_host::plan_args::parse_shape;
use nf_host::size::{parse_size, parse_size_or_zero};

use super::{Probe, Rng, KIB, MIB};

/// Characters mutations insert: the syntax's own, and some that trip careless parsers
/// (multi-byte, whose lower case has another length, Unicode digits and spaces, controls).
const ODD: [&str; 24] = [
    "x", "X", "*", ".", ":", "-", "+", " ", "\t", "\n", "\r", "\0", "e", "K", "i", "B", "İ", "ｋ",
    "١", "\u{a0}", "\u{2028}", "😀", "ß", "0",
];

/// One to three character-level edits of `s`.
pub fn mutate_str(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<String> = s.chars().map(String::from).collect();
    for _ in 0..rng.range(1, 3) {
        let n = c.len();
        match rng.below(4) {
            0 => c.insert(rng.below(n + 1), rng.pick(&ODD).to_string()),
            1 if n > 0 => {
                c.remove(rng.below(n));
            }
            2 if n > 0 => c[rng.below(n)] = rng.pick(&ODD).to_string(),
            _ => {
                let digits: String = (0..rng.range(1, 25))
                    .map(|_| char::from(b'0' + rng.below(10) as u8))
                    .collect();
                c.insert(rng.below(n + 1), digits);
            }
        }
    }
    c.concat()
}

/// A decimal number: usually short, sometimes with leading zeros or 20+ digits.
fn number(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "0".repeat(rng.range(1, 3)) + &rng.below(100).to_string(),
        1 => (0..rng.range(19, 40))
            .map(|_| char::from(b'0' + rng.below(10) as u8))
            .collect(),
        2 => u64::MAX.to_string(),
        _ => rng.range(0, 5000).to_string(),
    }
}

const UNITS: [&str; 20] = [
    "", "b", "B", "k", "K", "KB", "KiB", "kib", "m", "M", "MB", "MiB", "g", "GiB", "GB", "t", "T",
    "TiB", "tb", "XB",
];

/// A size as a user might type one, right or nearly.
pub fn gen_size(rng: &mut Rng) -> String {
    let mut s = String::new();
    if rng.one_in(8) {
        let sign = *rng.pick(&["-", "+", " "]);
        s.push_str(sign);
    }
    s += &number(rng);
    if rng.one_in(3) {
        s.push('.');
        s += &number(rng);
    }
    if rng.one_in(4) {
        s.push(' ');
    }
    let unit = *rng.pick(&UNITS);
    s.push_str(unit);
    if rng.one_in(3) {
        mutate_str(rng, &s)
    } else {
        s
    }
}

/// The exact value of a plain `DIGITS[.DIGITS]UNIT` size (at most 18 fraction digits, the
/// parser's documented precision), when `s` is one; `None` for anything else.
fn expected_size(s: &str) -> Option<Option<u64>> {
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(num_end);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int = int.trim_start_matches('0');
    if int.len() > 20 || frac.len() > 18 || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    if !(int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let i: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let total = (i << shift) + (f << shift) / 10u128.pow(frac.len() as u32);
    Some(u64::try_from(total).ok().filter(|&v| v > 0))
}

/// `parse_size` and `parse_size_or_zero`: one-line errors, a few KiB at most, the exact value
/// for plain spellings, and the two agreeing except on zero.
pub fn check_size(s: &String, probe: &mut Probe) {
    let bound = 4 * s.len() as u64 + 2 * KIB;
    let a = probe.call("parse_size", bound, None, || parse_size(s));
    let b = probe.call("parse_size_or_zero", bound, None, || parse_size_or_zero(s));
    if let (Some(a), Some(b)) = (&a, &b) {
        let agree = match (a, b) {
            (Ok(x), Ok(y)) => x == y,
            (Err(e), Ok(0)) => e.contains("zero"),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !agree {
            probe.fail(format!("parse_size {a:?} vs parse_size_or_zero {b:?}"));
        }
    }
    if let (Some(want), Some(got)) = (expected_size(s), &a) {
        if want != got.as_ref().ok().copied() {
            probe.fail(format!("parse_size({s:?}) = {got:?}, expected {want:?}"));
        }
    }
}

/// A shape `CxHxW`, right or nearly.
pub fn gen_shape(rng: &mut Rng) -> String {
    let parts = *rng.pick(&[3usize, 3, 3, 2, 4, 1, 0]);
    let mut s = String::new();
    for i in 0..parts {
        if i > 0 {
            let sep = *rng.pick(&["x", "X", "*", " x ", "xx"]);
            s.push_str(sep);
        }
        s += &number(rng);
    }
    if rng.one_in(2) {
        mutate_str(rng, &s)
    } else {
        s
    }
}

/// `parse_shape`: a one-line error, or a shape within the documented limits.
pub fn check_shape(s: &String, probe: &mut Probe) {
    let bound = 4 * s.len() as u64 + 2 * KIB;
    if let Some(Ok(shape)) = probe.call("parse_shape", bound, None, || parse_shape(s)) {
        let ok = (1..=nf_host::plan_args::MAX_INPUT_CHANNELS).contains(&shape.c)
            && (1..=nf_host::plan_args::MAX_INPUT_SIDE).contains(&shape.h)
            && (1..=nf_host::plan_args::MAX_INPUT_SIDE).contains(&shape.w);
        if !ok {
            probe.fail(format!(
                "parse_shape({s:?}) = {shape:?}, outside the limits"
            ));
        }
    }
}

/// A `synthetic:CxHxW:N` argument and a limit (at most 256 KiB, so that generating what is
/// accepted stays quick).
pub fn gen_synthetic(rng: &mut Rng) -> (String, u64) {
    let dims = |rng: &mut Rng| match rng.below(6) {
        0 => number(rng),
        // At and just over the limits of `--input`.
        1 => rng.pick(&["4096", "4097", "8192", "8193", "1"]).to_string(),
        _ => rng.range(0, 40).to_string(),
    };
    if rng.one_in(4) {
        // A huge set whose bytes still count in u64 (the largest counts, then some less).
        let (c, h, w) = (dims(rng), dims(rng), dims(rng));
        let len = [&c, &h, &w]
            .iter()
            .map(|d| d.parse::<u128>().unwrap_or(u128::MAX).max(1))
            .fold(1u128, u128::saturating_mul);
        let most = (u64::MAX as u128 / len.saturating_add(2)) * 5 / 6;
        let n = most >> rng.below(40);
        let limit = *rng.pick(&[0, KIB, 256 * KIB]);
        return (format!("synthetic:{c}x{h}x{w}:{n}"), limit);
    }
    let mut s = format!(
        "{}{}x{}x{}:{}",
        rng.pick(&[
            "synthetic:",
            "synthetic:",
            "synthetic:",
            "synthetic:",
            "Synthetic:"
        ]),
        rng.range(0, 4),
        dims(rng),
        dims(rng),
        dims(rng)
    );
    if rng.one_in(2) {
        s = mutate_str(rng, &s);
    }
    if !s.starts_with("synthetic:") && !s.starts_with("Synthetic:") {
        // Never a path to something real: keep it under a name no directory has.
        s = format!("synthetic:{s}");
    }
    let limit = *rng.pick(&[0, 1, KIB, 16 * KIB, 64 * KIB, 256 * KIB]);
    (s, limit)
}

/// Values for a flag: its possible values, sizes, shapes, numbers of every kind, paths.
fn value(rng: &mut Rng, possible: &[String]) -> String {
    match rng.below(10) {
        0 | 1 if !possible.is_empty() => rng.pick(possible).clone(),
        2 => gen_size(rng),
        3 => gen_shape(rng),
        4 => rng
            .pick(&[
                "-1",
                "0",
                "-0",
                "1e309",
                "NaN",
                "inf",
                "-inf",
                "0.5",
                "1e-45",
                "",
                " ",
                "--",
                "-",
                "257",
                "65537",
                "4294967296",
            ])
            .to_string(),
        5 => {
            let (s, _) = gen_synthetic(rng);
            s
        }
        6 => rng
            .pick(&["/nonexistent/nf-fuzz", "", ".", "/dev/null", "fixtures"])
            .to_string(),
        7 => {
            let n = number(rng);
            mutate_str(rng, &n)
        }
        _ => number(rng),
    }
}

/// A command line: a subcommand (or a misspelt one), then flags of that subcommand (and
/// some of the others') with values, in `--flag value` or `--flag=value` form, some
/// repeated, missing their value, or followed by a stray argument.
pub fn gen_argv(rng: &mut Rng) -> Vec<String> {
    let cmd = Cli::command();
    let subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
    let all_flags: Vec<(String, Vec<String>)> = subs
        .iter()
        .flat_map(|s| s.get_arguments())
        .filter_map(|a| {
            let possible = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            Some((format!("--{}", a.get_long()?), possible))
        })
        .collect();
    let mut argv = vec!["nf".to_string()];
    let sub = rng.pick(&subs);
    match rng.below(12) {
        0 => {}
        1 => argv.push(mutate_str(rng, sub.get_name())),
        _ => argv.push(sub.get_name().to_string()),
    }
    let flags: Vec<(String, Vec<String>)> = sub
        .get_arguments()
        .filter_map(|a| {
            let possible = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            Some((format!("--{}", a.get_long()?), possible))
        })
        .collect();
    for _ in 0..rng.range(0, 8) {
        let (flag, possible) = if rng.one_in(8) || flags.is_empty() {
            rng.pick(&all_flags).clone()
        } else {
            rng.pick(&flags).clone()
        };
        let flag = if rng.one_in(16) {
            mutate_str(rng, &flag)
        } else {
            flag
        };
        let v = value(rng, &possible);
        match rng.below(8) {
            0 => argv.push(format!("{flag}={v}")),
            1 => argv.push(flag),
            2 => argv.push(v),
            _ => argv.extend([flag, v]),
        }
    }
    argv
}

/// Most bytes `plan_command` may allocate: the plan and its report (a few KiB), the zoo's
/// descriptions, and a data set's description when `--data` is given (`DESCRIBE_BOUND`).
pub const PLAN_BOUND: u64 = MIB;

/// `Cli::try_parse_from`: never a panic; a bad flag value is one line (`value_error_line`),
/// the other errors (help, version, unknown or missing flags) are clap's usage text; a
/// command line that parses as `nf plan` then plans, ending in `Ok` or a one-line error.
pub fn check_argv(argv: &Vec<String>, probe: &mut Probe) {
    let bound = 256 * KIB + 4 * argv.iter().map(|a| a.len() as u64).sum::<u64>();
    let parsed = probe.call("Cli::try_parse_from", bound, None, || {
        Cli::try_parse_from(argv).map_err(Wrapped)
    });
    match parsed {
        Some(Err(Wrapped(e))) => {
            // Rendered as `nf` prints it: the usage text, or the one line of a value error.
            let line = probe.call("clap error rendering", bound, None, || {
                let _ = e.render().to_string();
                Ok::<_, String>(value_error_line(&e))
            });
            if let Some(Ok(Some(line))) = line {
                if !line.starts_with("error: ") || line.contains(['\n', '\r']) {
                    probe.fail(format!("value error is not one line: {line:?}"));
                }
            }
        }
        Some(Ok(cli)) => {
            // A fuzzed `--svg` path would write a file wherever the test runs: those command
            // lines are parsed, not run.
            if let Command::Plan(args) = &cli.cmd {
                if args.svg.is_none() {
                    probe.call("plan_command", PLAN_BOUND, None, || plan_command(args));
                }
            }
        }
        None => {}
    }
}

/// A clap error whose `Display` is the first line only (clap's usage text is several lines
/// by design; `check_argv` checks the value errors' one line itself).
struct Wrapped(clap::Error);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.0.kind();
        write!(f, "clap error {kind:?}")
    }
}
