//! Fuzz seeds from captures of real traffic (`scripts/fuzz-seeds.sh` makes the captures
//! while an end-to-end test runs): the frames the consumer's client and the provider's
//! targets sent to the appliance become inputs for `process_frame` (one frame each) and
//! for `process_structured` (the exchanges in order, as scenario events, plus the
//! hand-written scenarios of `appliance::scenario::seeds::scripted` and `scripted6`).
//!
//! `cargo run -p appliance --example fuzz_seeds -- --out DIR [--max-events N]
//! consumer.pcap provider.pcap [consumer2.pcap provider2.pcap ...]`: pcap files in pairs
//! (the consumer namespace's, then the provider namespace's, of the same run). Writes
//! `DIR/process_frame/` and `DIR/process_structured/`, one file per input, and prints
//! how many.

use std::path::{Path, PathBuf};

use appliance::scenario::seeds::{self, Captured};
use appliance::scenario::{CONSUMER_PORT, PROVIDER_PORT};

fn main() {
    if let Err(e) = run() {
        eprintln!("fuzz_seeds: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut max_events = 96usize;
    let mut pcaps = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from),
            "--max-events" => {
                max_events = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--max-events takes a number")?;
            }
            _ => pcaps.push(PathBuf::from(a)),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    if pcaps.is_empty() || pcaps.len() % 2 != 0 {
        return Err("give pcap files in pairs: consumer.pcap provider.pcap ...".into());
    }
    let (mut raw, mut structured) = (Vec::new(), Vec::new());
    for pair in pcaps.chunks(2) {
        let mut frames: Vec<Captured> = Vec::new();
        for (path, port) in pair.iter().zip([CONSUMER_PORT, PROVIDER_PORT]) {
            let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let read = seeds::read_pcap(&data).map_err(|e| format!("{}: {e}", path.display()))?;
            frames.extend(seeds::towards_appliance(&read, port));
        }
        raw.extend(seeds::raw_inputs(&frames));
        structured.extend(seeds::structured_inputs(&frames, max_events));
    }
    raw.sort();
    raw.dedup();
    // What the end-to-end tests seldom do (ICMP errors both ways, expiry, a change that
    // ends a flow, a flood), as hand-written scenarios.
    structured.extend([1, 2].map(seeds::scripted));
    structured.extend([1, 2].map(seeds::scripted6));
    structured.extend([1, 2].map(seeds::scripted66));
    let raw_n = write_all(&out.join("process_frame"), &raw)?;
    let structured_n = write_all(&out.join("process_structured"), &structured)?;
    println!(
        "fuzz_seeds: {raw_n} process_frame inputs, {structured_n} process_structured inputs in {}",
        out.display()
    );
    Ok(())
}

/// Writes each input to a file named after its content (so reruns do not duplicate).
fn write_all(dir: &Path, inputs: &[Vec<u8>]) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for input in inputs {
        let name = format!("seed-{:016x}", fnv1a(input));
        std::fs::write(dir.join(name), input).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(inputs.len())
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
