//! `privlinkd`: the privlink appliance daemon.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use appliance::daemon::{self, ConfigSource};

const USAGE: &str = "usage: privlinkd [--config FILE [--ha-node NAME]] [--check]\n\
       privlinkd --config FILE --import-state DIR\n\
\n\
  --config FILE   TOML configuration (default: the embedded demo configuration)\n\
  --ha-node NAME  this node's name in the file's [ha] nodes (instead of [ha] node)\n\
  --check         validate the configuration and exit\n\
  --import-state DIR  write the state saved in DIR (a single node's state_dir) into the\n\
                  etcd of FILE's [cluster], under a prefix no node has written to, and exit\n\
  --print-default print the embedded default configuration and exit\n\
  --version       print the version and exit\n\
\n\
Signals: SIGINT/SIGTERM stop cleanly, SIGHUP reloads services and endpoints from FILE.\n\
Logging: RUST_LOG=debug|info|warn (default info).";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let mut source = ConfigSource::Embedded;
    let mut check = false;
    let mut ha_node: Option<String> = None;
    let mut import: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => match args.next() {
                Some(p) => source = ConfigSource::File(PathBuf::from(p)),
                None => {
                    eprintln!("privlinkd: --config needs a file\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--ha-node" => match args.next() {
                Some(n) => ha_node = Some(n),
                None => {
                    eprintln!("privlinkd: --ha-node needs a name\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--check" => check = true,
            "--import-state" => match args.next() {
                Some(d) => import = Some(PathBuf::from(d)),
                None => {
                    eprintln!("privlinkd: --import-state needs a directory\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--print-default" => {
                print!("{}", mgmt::config::DEFAULT_TOML);
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("privlinkd {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("privlinkd: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(node) = ha_node {
        source = match source {
            ConfigSource::File(p) => ConfigSource::FileAsNode(p, node),
            _ => {
                eprintln!("privlinkd: --ha-node needs --config\n{USAGE}");
                return ExitCode::from(2);
            }
        };
    }
    if let Some(dir) = import {
        return match daemon::import_state(&source, &dir) {
            Ok(note) => {
                println!("{note}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("privlinkd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if check {
        return match source.load() {
            Ok(_) => {
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("privlinkd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match daemon::run(source) {
        Ok(totals) => {
            log::info!(
                "stopped: rx {} tx {} new flows {} drops {}",
                totals.total.rx_packets,
                totals.total.tx_packets,
                totals.total.new_flows,
                totals.total.total_drops()
            );
            println!("totals {}", daemon::counters_json(&totals.workers));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("privlinkd: {e}");
            ExitCode::FAILURE
        }
    }
}
