//! The lcores an EAL argument list enables (`-l`, `-c`, `--lcores`) and its main lcore
//! (`--main-lcore`), read the way EAL reads them.
//!
//! The configuration needs them before EAL starts, to refuse a worker lcore that EAL would
//! not run or that is the main lcore; so this parser must agree with EAL on every form it
//! accepts, and refuse (never guess at) a form it cannot read. It reads only the arguments
//! that name lcores and leaves every other one alone.

use std::collections::BTreeSet;

use super::errors::{ConfigError, ConfigProblem};
use super::sections::EalConfig;
use super::MAX_LCORE_ID;
use crate::model::KeyPath;

/// The lcores an EAL argument list enables, and its main lcore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalLcores {
    /// The lcores `-l`, `-c` or `--lcores` enable; `None` when the arguments name none
    /// (EAL then enables every core of the machine).
    pub enabled: Option<BTreeSet<u32>>,
    /// `--main-lcore`, else the lowest enabled lcore (0 when none are named), as EAL picks.
    pub main: u32,
}

impl EalConfig {
    /// Reads the lcore set and main lcore from the arguments (`-l 0,1`, `-l0-3`,
    /// `-c 0x3`, `--lcores=(0-1)@0,2@1`, `--main-lcore N`; the last of each wins).
    pub fn lcores(&self) -> Result<EalLcores, ConfigError> {
        parse_eal_lcores(&self.args).map_err(|(i, problem)| ConfigError::Invalid {
            file: None,
            at: KeyPath::new().key("eal").key("args").index(i),
            problem,
        })
    }
}

#[derive(Clone, Copy)]
enum LcoreOption {
    /// `-l 0,2-3`
    List,
    /// `-c 0x5`
    Mask,
    /// `--lcores '(0-1)@0,2@1'`
    Map,
    /// `--main-lcore 0`
    Main,
}

const LCORE_OPTIONS: [(&str, LcoreOption); 5] = [
    ("-l", LcoreOption::List),
    ("-c", LcoreOption::Mask),
    ("--lcores", LcoreOption::Map),
    ("--main-lcore", LcoreOption::Main),
    ("--master-lcore", LcoreOption::Main),
];

pub(super) fn parse_eal_lcores(args: &[String]) -> Result<EalLcores, (usize, ConfigProblem)> {
    let mut enabled: Option<BTreeSet<u32>> = None;
    let mut main: Option<(usize, u32)> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let found = LCORE_OPTIONS.iter().find_map(|&(name, option)| {
            if arg == name {
                Some((option, None))
            } else if name.starts_with("--") {
                arg.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(|v| (option, Some(v)))
            } else if !arg.starts_with("--") {
                arg.strip_prefix(name)
                    .filter(|v| !v.is_empty())
                    .map(|v| (option, Some(v)))
            } else {
                None
            }
        });
        let Some((option, inline)) = found else {
            i += 1;
            continue;
        };
        let (value, at) = match inline {
            Some(v) => (v, i),
            None => match args.get(i + 1) {
                Some(v) => (v.as_str(), i + 1),
                None => return Err((i, eal_problem(arg, "the value is missing"))),
            },
        };
        match option {
            LcoreOption::List => {
                let set = parse_lcore_list(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore list")))?;
                enabled = Some(set);
            }
            LcoreOption::Mask => {
                let set = parse_core_mask(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this core mask")))?;
                enabled = Some(set);
            }
            LcoreOption::Map => {
                let set = parse_lcore_map(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore map")))?;
                enabled = Some(set);
            }
            LcoreOption::Main => {
                let n = parse_lcore_id(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore id")))?;
                main = Some((at, n));
            }
        }
        i = at + 1;
    }
    let main = match (main, &enabled) {
        (Some((at, n)), Some(set)) if !set.contains(&n) => {
            return Err((
                at,
                eal_problem(&n.to_string(), "the main lcore is not an enabled lcore"),
            ))
        }
        (Some((_, n)), _) => n,
        (None, Some(set)) => set.first().copied().unwrap_or(0),
        (None, None) => 0,
    };
    Ok(EalLcores { enabled, main })
}

fn eal_problem(arg: &str, reason: &'static str) -> ConfigProblem {
    ConfigProblem::EalArg {
        arg: arg.to_owned(),
        reason,
    }
}

fn parse_lcore_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_LCORE_ID)
}

/// `N` or `N-M` into `set`.
fn add_lcore_range(set: &mut BTreeSet<u32>, s: &str) -> Option<()> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_lcore_id(a)?, parse_lcore_id(b)?),
        None => {
            let n = parse_lcore_id(s)?;
            (n, n)
        }
    };
    if a > b {
        return None;
    }
    set.extend(a..=b);
    Some(())
}

/// `-l`: `0,2-3`.
fn parse_lcore_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for part in s.split(',') {
        add_lcore_range(&mut set, part)?;
    }
    Some(set)
}

/// `-c`: a hex mask, `0x` optional.
fn parse_core_mask(s: &str) -> Option<BTreeSet<u32>> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let max_digits = usize::try_from(MAX_LCORE_ID / 4 + 1).ok()?;
    if hex.is_empty() || hex.len() > max_digits {
        return None;
    }
    let mut set = BTreeSet::new();
    for (position, c) in (0u32..).zip(hex.chars().rev()) {
        let digit = c.to_digit(16)?;
        for bit in 0..4 {
            if digit & (1 << bit) != 0 {
                set.insert(position * 4 + bit);
            }
        }
    }
    let set: BTreeSet<u32> = set.into_iter().filter(|&n| n <= MAX_LCORE_ID).collect();
    (!set.is_empty()).then_some(set)
}

/// `--lcores`: comma-separated `LCORES[@CPUS]`, where `LCORES` is `N`, `N-M` or a
/// parenthesised list of those; only the lcore side matters here.
fn parse_lcore_map(s: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    let mut depth = 0u32;
    let mut start = 0;
    let mut elements = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                elements.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    elements.push(&s[start..]);
    for element in elements {
        let lcores = element.split_once('@').map_or(element, |(l, _)| l);
        match lcores.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
            Some(list) => set.extend(parse_lcore_list(list)?),
            None => add_lcore_range(&mut set, lcores)?,
        }
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eal(args: &[&str]) -> Result<EalLcores, ConfigError> {
        EalConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            no_huge_fallback: true,
        }
        .lcores()
    }

    fn enabled(args: &[&str]) -> (Vec<u32>, u32) {
        let l = eal(args).unwrap();
        (l.enabled.unwrap().into_iter().collect(), l.main)
    }

    #[test]
    fn eal_lcore_arguments() {
        assert_eq!(
            eal(&["--no-pci"]).unwrap(),
            EalLcores {
                enabled: None,
                main: 0
            }
        );
        assert_eq!(enabled(&["-l", "0,1"]), (vec![0, 1], 0));
        assert_eq!(enabled(&["-l2-4,7"]), (vec![2, 3, 4, 7], 2));
        assert_eq!(enabled(&["-c", "0x6"]), (vec![1, 2], 1));
        assert_eq!(enabled(&["-c", "f0"]), (vec![4, 5, 6, 7], 4));
        assert_eq!(
            enabled(&["--lcores=(0-1)@0,2@(1,2),5"]),
            (vec![0, 1, 2, 5], 0)
        );
        assert_eq!(enabled(&["--lcores", "3@1,4@2"]), (vec![3, 4], 3));
        assert_eq!(
            enabled(&["-l", "0-3", "--main-lcore", "2"]),
            (vec![0, 1, 2, 3], 2)
        );
        assert_eq!(
            enabled(&["-l", "0-3", "--main-lcore=3"]),
            (vec![0, 1, 2, 3], 3)
        );
        assert_eq!(eal(&["--main-lcore", "5"]).unwrap().main, 5);
        // Other options, with or without values, are left alone.
        let other = [
            "--vdev=net_tap0,iface=x",
            "-n",
            "4",
            "--log-level",
            "lib.eal:debug",
        ];
        assert_eq!(
            eal(&other).unwrap(),
            EalLcores {
                enabled: None,
                main: 0
            }
        );
    }

    #[test]
    fn eal_lcore_argument_errors() {
        let cases: [(&[&str], &str, &str); 7] = [
            (&["-l"], "eal.args[0]", "\"-l\": the value is missing"),
            (
                &["--no-pci", "-l", "0,x"],
                "eal.args[2]",
                "\"0,x\": cannot read this lcore list",
            ),
            (
                &["-l", "3-1"],
                "eal.args[1]",
                "\"3-1\": cannot read this lcore list",
            ),
            (
                &["-l", "0-5000"],
                "eal.args[1]",
                "\"0-5000\": cannot read this lcore list",
            ),
            (
                &["-c", "0xg"],
                "eal.args[1]",
                "\"0xg\": cannot read this core mask",
            ),
            (
                &["--lcores=(0-1@0"],
                "eal.args[0]",
                "\"(0-1@0\": cannot read this lcore map",
            ),
            (
                &["-l", "0,1", "--main-lcore", "4"],
                "eal.args[3]",
                "\"4\": the main lcore is not an enabled lcore",
            ),
        ];
        for (args, path, problem) in cases {
            let e = eal(args).unwrap_err();
            assert_eq!(e.to_string(), format!("{path}: {problem}"), "{args:?}");
        }
    }
}
