//! `privlinkctl`: the command line of the management protocol.
//!
//! `privlinkctl [--socket PATH] [--json] <operation> [--flag value ...]`
//!
//! This module owns the translation from a command line to a request (one generic mapping
//! shared by every operation, driven by the [`OPERATIONS`] table, plus three shorthands), the
//! rendering of a response as text, and the exit codes: 0 success, 1 an error response or
//! a connection failure, 2 a usage error. It knows nothing of what operations mean; the
//! daemon validates every argument again.
//!
//! Mapping: `--vpc-id vpc-1` becomes `"VpcId": "vpc-1"` (each dash-separated word
//! capitalised). A flag's kind in the table decides its JSON form: a string, a list (always
//! an array; several values may follow one flag, the flag may repeat, and a JSON array is
//! spliced in), JSON (parsed; `file://PATH` reads the file), a number, or a boolean
//! (`--flag`, `--flag true|false`, `--no-flag`). Any other flag given twice becomes an array.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::protocol::{Request, Response};

/// The socket used when neither `--socket` nor `PRIVLINK_SOCKET` names one.
pub const DEFAULT_SOCKET: &str = "/run/privlink/privlink.sock";

/// The environment variable naming the socket.
pub const SOCKET_ENV: &str = "PRIVLINK_SOCKET";

/// How long to wait for the daemon's answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a flag's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string, whatever it looks like (ids, names).
    Str,
    /// Always an array of strings (or of the elements of a JSON array value).
    List,
    /// A JSON value; `file://PATH` reads it from a file.
    Json,
    /// A JSON object or array if the value parses as one (or `file://PATH`), else a string.
    JsonOrStr,
    /// `--flag` / `--flag true|false` / `--no-flag`.
    Bool,
    /// A JSON number.
    Num,
    /// Not an argument itself: folded into another one by the operation's shorthand
    /// (`--target`, `--protocol/--port/--cidr`, `--connection-limit`).
    Shorthand,
}

/// One operation privlinkctl knows.
#[derive(Debug)]
pub struct Operation {
    /// The protocol's op name, e.g. `create-vpc-endpoint`.
    pub name: &'static str,
    /// Its flags, without the leading dashes, and their kinds.
    pub flags: &'static [(&'static str, Kind)],
    /// One line saying what it does.
    pub help: &'static str,
    /// An example command line (after `privlinkctl`).
    pub example: &'static str,
}

use Kind::{Bool, Json, JsonOrStr, List, Num, Shorthand, Str};

const TARGET_FLAGS: &[(&str, Kind)] = &[
    ("service-id", Str),
    ("protocol", Str),
    ("port", Num),
    ("targets", Json),
    ("target", Shorthand),
];

const INGRESS_FLAGS: &[(&str, Kind)] = &[
    ("group-id", Str),
    ("ip-permissions", Json),
    ("protocol", Shorthand),
    ("port", Shorthand),
    ("cidr", Shorthand),
];

/// Every operation, in the order `--help` lists them.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "create-vpc-endpoint-service-configuration",
        flags: &[
            ("vpc-id", Str),
            ("listeners", Json),
            ("snat-addresses", List),
            ("acceptance-required", Bool),
            ("allowed-principals", List),
            ("auto-accept-principals", List),
            ("connection-limits", Json),
            ("connection-limit", Shorthand),
            ("supported-ip-address-types", List),
            ("client-token", Str),
        ],
        help: "offer a service in a provider VPC (listener health checks: the Listeners items' HealthCheck… keys; --connection-limit ACCOUNT|*=N, repeatable; --supported-ip-address-types ipv4,ipv6: the endpoints it accepts, default ipv4)",
        example: r#"create-vpc-endpoint-service-configuration --vpc-id vpc-0b0000000000000b1 --listeners '[{"Protocol":"tcp","Port":80,"HealthCheckProtocol":"http","HealthCheckPath":"/healthz"}]' --snat-addresses 10.2.0.5 --auto-accept-principals 111111111111 --connection-limit 111111111111=5"#,
    },
    Operation {
        name: "describe-vpc-endpoint-service-configurations",
        flags: &[("service-ids", List)],
        help: "list services (all of yours, or those named)",
        example: "describe-vpc-endpoint-service-configurations --service-ids vpce-svc-0123456789abcdef0",
    },
    Operation {
        name: "modify-vpc-endpoint-service-configuration",
        flags: &[
            ("service-id", Str),
            ("acceptance-required", Bool),
            ("add-snat-addresses", List),
            ("remove-snat-addresses", List),
            ("add-listeners", Json),
            ("remove-listeners", Json),
            ("modify-listeners", Json),
            ("add-auto-accept-principals", List),
            ("remove-auto-accept-principals", List),
            ("add-connection-limits", Json),
            ("connection-limit", Shorthand),
            ("remove-connection-limits", List),
            ("add-supported-ip-address-types", List),
            ("remove-supported-ip-address-types", List),
        ],
        help: "change a service's listeners and their health checks, SNAT addresses, acceptance, auto-accept principals, connection limits or supported IP address types (--connection-limit ACCOUNT|*=N sets one, repeatable)",
        example: r#"modify-vpc-endpoint-service-configuration --service-id vpce-svc-0123456789abcdef0 --modify-listeners '[{"Protocol":"tcp","Port":80,"HealthCheckIntervalSeconds":10,"HealthCheckTimeoutSeconds":5}]' --connection-limit '*=10'"#,
    },
    Operation {
        name: "delete-vpc-endpoint-service-configurations",
        flags: &[("service-ids", List)],
        help: "delete services",
        example: "delete-vpc-endpoint-service-configurations --service-ids vpce-svc-0123456789abcdef0",
    },
    Operation {
        name: "modify-vpc-endpoint-service-permissions",
        flags: &[
            ("service-id", Str),
            ("add-allowed-principals", List),
            ("remove-allowed-principals", List),
        ],
        help: "allow or disallow accounts to connect to a service",
        example: "modify-vpc-endpoint-service-permissions --service-id vpce-svc-0123456789abcdef0 --add-allowed-principals 111111111111",
    },
    Operation {
        name: "describe-vpc-endpoint-service-permissions",
        flags: &[("service-id", Str)],
        help: "list the accounts allowed to connect to a service",
        example: "describe-vpc-endpoint-service-permissions --service-id vpce-svc-0123456789abcdef0",
    },
    Operation {
        name: "register-targets",
        flags: TARGET_FLAGS,
        help: "add backends to a listener (--target IP:PORT[:WEIGHT] or [IPV6]:PORT[:WEIGHT], repeatable)",
        example: "register-targets --service-id vpce-svc-0123456789abcdef0 --protocol tcp --port 80 --target 10.2.0.13:8080 --target 10.2.0.14:8080:2",
    },
    Operation {
        name: "deregister-targets",
        flags: TARGET_FLAGS,
        help: "remove backends from a listener (--target IP:PORT, repeatable)",
        example: "deregister-targets --service-id vpce-svc-0123456789abcdef0 --protocol tcp --port 80 --target 10.2.0.13:8080",
    },
    Operation {
        name: "describe-target-health",
        flags: &[("service-id", Str)],
        help: "show each target of a service and its state",
        example: "describe-target-health --service-id vpce-svc-0123456789abcdef0",
    },
    Operation {
        name: "create-vpc-endpoint",
        flags: &[
            ("vpc-id", Str),
            ("service-name", Str),
            ("ip-address", Str),
            ("ip-address-type", Str),
            ("ipv6-address", Str),
            ("security-group-ids", List),
            ("policy-document", JsonOrStr),
            ("client-token", Str),
        ],
        help: "connect a consumer VPC to a service (--ip-address-type dualstack gives it an IPv6 address too, ipv6 only an IPv6 address: --ipv6-address or allocated from the VPC's IPv6 prefix)",
        example: "create-vpc-endpoint --vpc-id vpc-0c0000000000000c1 --service-name com.privlink.vpce.local.vpce-svc-0123456789abcdef0 --ip-address 10.1.0.100",
    },
    Operation {
        name: "describe-vpc-endpoints",
        flags: &[("vpc-endpoint-ids", List), ("filters", Json)],
        help: "list endpoints (all of yours, or those named)",
        example: "describe-vpc-endpoints --vpc-endpoint-ids vpce-0123456789abcdef0",
    },
    Operation {
        name: "modify-vpc-endpoint",
        flags: &[
            ("vpc-endpoint-id", Str),
            ("add-security-group-ids", List),
            ("remove-security-group-ids", List),
            ("policy-document", JsonOrStr),
            ("reset-policy", Bool),
        ],
        help: "change an endpoint's security groups or policy",
        example: "modify-vpc-endpoint --vpc-endpoint-id vpce-0123456789abcdef0 --add-security-group-ids sg-0123456789abcdef0",
    },
    Operation {
        name: "delete-vpc-endpoints",
        flags: &[("vpc-endpoint-ids", List)],
        help: "delete endpoints",
        example: "delete-vpc-endpoints --vpc-endpoint-ids vpce-0123456789abcdef0",
    },
    Operation {
        name: "describe-vpc-endpoint-connections",
        flags: &[("service-id", Str)],
        help: "list the endpoints connected to your services",
        example: "describe-vpc-endpoint-connections --service-id vpce-svc-0123456789abcdef0",
    },
    Operation {
        name: "accept-vpc-endpoint-connections",
        flags: &[("service-id", Str), ("vpc-endpoint-ids", List)],
        help: "accept pending endpoints of a service",
        example: "accept-vpc-endpoint-connections --service-id vpce-svc-0123456789abcdef0 --vpc-endpoint-ids vpce-0123456789abcdef0",
    },
    Operation {
        name: "reject-vpc-endpoint-connections",
        flags: &[("service-id", Str), ("vpc-endpoint-ids", List)],
        help: "reject endpoints of a service",
        example: "reject-vpc-endpoint-connections --service-id vpce-svc-0123456789abcdef0 --vpc-endpoint-ids vpce-0123456789abcdef0",
    },
    Operation {
        name: "create-security-group",
        flags: &[
            ("vpc-id", Str),
            ("group-name", Str),
            ("description", Str),
            ("client-token", Str),
        ],
        help: "create a security group in a consumer VPC",
        example: "create-security-group --vpc-id vpc-0c0000000000000c1 --group-name web --description 'web clients'",
    },
    Operation {
        name: "authorize-security-group-ingress",
        flags: INGRESS_FLAGS,
        help: "allow traffic into endpoints (--protocol P --port N[-M] --cidr C, or --ip-permissions JSON)",
        example: "authorize-security-group-ingress --group-id sg-0123456789abcdef0 --protocol tcp --port 80 --cidr 10.1.0.0/24",
    },
    Operation {
        name: "revoke-security-group-ingress",
        flags: INGRESS_FLAGS,
        help: "remove an ingress rule (same forms as authorize)",
        example: "revoke-security-group-ingress --group-id sg-0123456789abcdef0 --protocol tcp --port 80 --cidr 10.1.0.0/24",
    },
    Operation {
        name: "delete-security-group",
        flags: &[("group-id", Str)],
        help: "delete a security group no endpoint uses",
        example: "delete-security-group --group-id sg-0123456789abcdef0",
    },
    Operation {
        name: "describe-security-groups",
        flags: &[("group-ids", List)],
        help: "list security groups",
        example: "describe-security-groups",
    },
    Operation {
        name: "stats",
        flags: &[("watch", Num), ("count", Num)],
        help: "show the data plane's counters: totals with units, drops by reason (most first), endpoints, services and targets by bytes; --watch SECONDS (at least 0.1) refreshes in place with rates per second, --count N stops after N refreshes",
        example: "stats --watch 1",
    },
    Operation {
        name: "flows",
        flags: &[("vpc-endpoint-id", Str), ("max-results", Num)],
        help: "list active flows",
        example: "flows --vpc-endpoint-id vpce-0123456789abcdef0 --max-results 20",
    },
    Operation {
        name: "subscribe-events",
        flags: &[("count", Num)],
        help: "print connection events (endpoint Connect, Accept, Reject, Delete), target health and HA role changes as they happen, until Ctrl-C (or --count events); each account sees its own",
        example: "subscribe-events --count 10",
    },
    Operation {
        name: "version",
        flags: &[],
        help: "show the daemon's version",
        example: "version",
    },
];

/// The operation called `name`.
pub fn operation(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.name == name)
}

/// A command line that cannot be run; printed to stderr, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print this help text and exit 0.
    Help(String),
    /// Send a request.
    Run(Invocation),
}

/// A request to send, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Print the `ok` value as JSON rather than tables (`--json`, `--output json`).
    pub json: bool,
    /// How to print the `ok` value.
    pub output: Output,
    /// The operation.
    pub op: &'static str,
    /// Its arguments, an object.
    pub args: Value,
}

/// `--output`, as the aws CLI has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The daemon's answer, pretty-printed (`--json` too).
    Json,
    /// Tables for people (the default).
    Table,
    /// Tab-separated rows, for scripts.
    Text,
}

/// Parses the command line (without the program name). `env_socket` is `$PRIVLINK_SOCKET`.
pub fn parse_args(argv: &[String], env_socket: Option<&str>) -> Result<Command, UsageError> {
    let mut socket: Option<PathBuf> = None;
    let mut json_out = false;
    let mut output = Output::Table;
    let mut op: Option<&'static Operation> = None;
    // (flag, values) in first-seen order.
    let mut given: Vec<(&'static str, Kind, Vec<String>)> = Vec::new();
    // The last flag, when it is a list that may take more values.
    let mut open_list: Option<usize> = None;

    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        i += 1;
        let (name, inline) = match arg.strip_prefix("--") {
            Some(rest) => match rest.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (rest, None),
            },
            None if arg == "-h" => ("help", None),
            None => {
                match (op, open_list) {
                    (None, _) => {
                        op = Some(operation(arg).ok_or_else(|| {
                            UsageError(format!(
                                "unknown operation {arg:?}\n\n{}",
                                operations_list()
                            ))
                        })?);
                    }
                    (Some(_), Some(at)) => given[at].2.push(arg.to_owned()),
                    (Some(o), None) => {
                        return Err(UsageError(format!(
                            "unexpected argument {arg:?} for {}\n\n{}",
                            o.name,
                            flags_list(o)
                        )));
                    }
                }
                continue;
            }
        };
        open_list = None;
        match name {
            "help" => {
                return Ok(Command::Help(match op {
                    Some(o) => operation_help(o),
                    None => top_help(),
                }))
            }
            "json" => {
                json_out = true;
                continue;
            }
            "output" => {
                let v = value_for(argv, &mut i, inline, "output")?;
                output = match v.as_str() {
                    "json" => Output::Json,
                    "table" => Output::Table,
                    "text" => Output::Text,
                    other => {
                        return Err(UsageError(format!(
                            "--output {other:?}: one of json, table, text"
                        )))
                    }
                };
                continue;
            }
            "socket" => {
                let v = value_for(argv, &mut i, inline, "socket")?;
                socket = Some(PathBuf::from(v));
                continue;
            }
            _ => {}
        }
        let Some(o) = op else {
            return Err(UsageError(format!(
                "unknown option --{name} (flags go after the operation)\n\n{}",
                top_usage()
            )));
        };
        // `--no-flag` for a boolean flag.
        let negated = name
            .strip_prefix("no-")
            .and_then(|n| o.flags.iter().find(|(f, k)| *f == n && *k == Bool));
        let (flag, kind, value) = if let Some(&(flag, kind)) = negated {
            if inline.is_some() {
                return Err(UsageError(format!("--{name} takes no value")));
            }
            (flag, kind, "false".to_owned())
        } else {
            let Some(&(flag, kind)) = o.flags.iter().find(|(f, _)| *f == name) else {
                return Err(UsageError(format!(
                    "unknown flag --{name} for {}\n\n{}",
                    o.name,
                    flags_list(o)
                )));
            };
            let value = if kind == Bool {
                match inline {
                    Some(v) => v,
                    None if matches!(argv.get(i).map(String::as_str), Some("true" | "false")) => {
                        i += 1;
                        argv[i - 1].clone()
                    }
                    None => "true".to_owned(),
                }
            } else {
                value_for(argv, &mut i, inline, flag)?
            };
            (flag, kind, value)
        };
        let at = match given.iter().position(|(f, _, _)| *f == flag) {
            Some(at) => at,
            None => {
                given.push((flag, kind, Vec::new()));
                given.len() - 1
            }
        };
        given[at].2.push(value);
        if kind == List {
            open_list = Some(at);
        }
    }

    let Some(o) = op else {
        return Err(UsageError(format!("no operation given\n\n{}", top_usage())));
    };
    let args = build_args(o, &given)?;
    let socket = socket
        .or_else(|| env_socket.filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    if json_out {
        output = Output::Json;
    }
    Ok(Command::Run(Invocation {
        socket,
        json: output == Output::Json,
        output,
        op: o.name,
        args,
    }))
}

/// The value of a flag: after `=`, else the next argument (which must not be a flag).
fn value_for(
    argv: &[String],
    i: &mut usize,
    inline: Option<String>,
    flag: &str,
) -> Result<String, UsageError> {
    if let Some(v) = inline {
        return Ok(v);
    }
    match argv.get(*i) {
        Some(v) if !v.starts_with("--") => {
            *i += 1;
            Ok(v.clone())
        }
        _ => Err(UsageError(format!("--{flag} needs a value"))),
    }
}

/// `vpc-endpoint-ids` → `VpcEndpointIds`.
pub fn pascal_case(flag: &str) -> String {
    flag.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Turns the given flags into the request's `args` object.
fn build_args(o: &Operation, given: &[(&str, Kind, Vec<String>)]) -> Result<Value, UsageError> {
    let mut args = Map::new();
    let mut shorthand: Vec<(&str, &[String])> = Vec::new();
    for (flag, kind, values) in given {
        let bad = |what: &str, v: &str| UsageError(format!("--{flag}: {what}: {v:?}"));
        let one = |v: &String| -> Result<Value, UsageError> {
            Ok(match kind {
                Str | List | Shorthand => Value::String(v.clone()),
                Json => parse_json(v).map_err(|e| bad(&e, v))?,
                JsonOrStr => match parse_json(v) {
                    Ok(j @ (Value::Object(_) | Value::Array(_))) => j,
                    _ if v.starts_with("file://") => parse_json(v).map_err(|e| bad(&e, v))?,
                    _ => Value::String(v.clone()),
                },
                Num => match serde_json::from_str::<Value>(v) {
                    Ok(n @ Value::Number(_)) => n,
                    _ => return Err(bad("not a number", v)),
                },
                Bool => match v.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => return Err(bad("not true or false", v)),
                },
            })
        };
        let value = match kind {
            Shorthand => {
                shorthand.push((flag, values));
                continue;
            }
            List => {
                let mut items = Vec::new();
                for v in values {
                    match serde_json::from_str::<Value>(v) {
                        Ok(Value::Array(a)) => items.extend(a),
                        _ => items.push(Value::String(v.clone())),
                    }
                }
                Value::Array(items)
            }
            _ => {
                let mut vs = values.iter().map(one).collect::<Result<Vec<_>, _>>()?;
                if vs.len() == 1 {
                    vs.remove(0)
                } else {
                    Value::Array(vs)
                }
            }
        };
        args.insert(pascal_case(flag), value);
    }
    if !shorthand.is_empty() {
        if o.name.ends_with("-targets") {
            targets_shorthand(&mut args, &shorthand)?;
        } else if o.name.ends_with("-security-group-ingress") {
            ingress_shorthand(&mut args, &shorthand)?;
        } else {
            limits_shorthand(&mut args, &shorthand, &connection_limits_key(o))?;
        }
    }
    Ok(Value::Object(args))
}

/// JSON text, or `file://PATH` holding JSON.
fn parse_json(v: &str) -> Result<Value, String> {
    match v.strip_prefix("file://") {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{path} is not valid JSON: {e}"))
        }
        None => serde_json::from_str(v).map_err(|e| format!("not valid JSON ({e})")),
    }
}

/// Appends `items` to the array `args[key]` (creating it).
fn append(args: &mut Map<String, Value>, key: &str, items: Vec<Value>) -> Result<(), UsageError> {
    match args.entry(key.to_owned()).or_insert_with(|| json!([])) {
        Value::Array(a) => {
            a.extend(items);
            Ok(())
        }
        _ => Err(UsageError(format!(
            "--{}: must be a JSON array to combine with the shorthand",
            kebab(key)
        ))),
    }
}

fn kebab(pascal: &str) -> String {
    let mut out = String::new();
    for (i, c) in pascal.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// `--target IP:PORT[:WEIGHT]` → `Targets: [{"Id": IP, "Port": PORT, "Weight": WEIGHT}]`;
/// an IPv6 address in brackets, as in a URL (`[fd00:b1::21]:8443`).
fn targets_shorthand(
    args: &mut Map<String, Value>,
    shorthand: &[(&str, &[String])],
) -> Result<(), UsageError> {
    let mut targets = Vec::new();
    for (_, values) in shorthand {
        for v in values.iter() {
            let bad = || {
                UsageError(format!(
                    "--target: expected IP:PORT[:WEIGHT] ([IPV6]:PORT[:WEIGHT]), got {v:?}"
                ))
            };
            let (ip, rest) = match v.strip_prefix('[') {
                Some(v6) => {
                    let (ip, rest) = v6.split_once(']').ok_or_else(bad)?;
                    ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                    (ip, rest.strip_prefix(':').ok_or_else(bad)?)
                }
                None => v.split_once(':').ok_or_else(bad)?,
            };
            if ip.is_empty() {
                return Err(bad());
            }
            let mut parts = rest.split(':');
            let port: u16 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let mut target = json!({"Id": ip, "Port": port});
            if let Some(w) = parts.next() {
                let weight: u32 = w.parse().map_err(|_| bad())?;
                target["Weight"] = json!(weight);
            }
            if parts.next().is_some() {
                return Err(bad());
            }
            targets.push(target);
        }
    }
    append(args, "Targets", targets)
}

/// The argument `--connection-limit` adds to: `AddConnectionLimits` where the operation
/// has it (modify), else `ConnectionLimits` (create).
fn connection_limits_key(o: &Operation) -> String {
    let key = if o.flags.iter().any(|(f, _)| *f == "add-connection-limits") {
        "add-connection-limits"
    } else {
        "connection-limits"
    };
    pascal_case(key)
}

/// `--connection-limit ACCOUNT=N` → `{"Principal": ACCOUNT, "Limit": N}` in `key`.
fn limits_shorthand(
    args: &mut Map<String, Value>,
    shorthand: &[(&str, &[String])],
    key: &str,
) -> Result<(), UsageError> {
    let mut limits = Vec::new();
    for (_, values) in shorthand {
        for v in values.iter() {
            let bad = || {
                UsageError(format!(
                    "--connection-limit: expected ACCOUNT=N (or *=N), got {v:?}"
                ))
            };
            let (principal, limit) = v.split_once('=').ok_or_else(bad)?;
            let limit: u32 = limit.parse().map_err(|_| bad())?;
            if principal.is_empty() {
                return Err(bad());
            }
            limits.push(json!({"Principal": principal, "Limit": limit}));
        }
    }
    append(args, key, limits)
}

/// `--protocol P --port N[-M] --cidr C ...` → one entry of `IpPermissions`.
fn ingress_shorthand(
    args: &mut Map<String, Value>,
    shorthand: &[(&str, &[String])],
) -> Result<(), UsageError> {
    let get = |flag: &str| {
        shorthand
            .iter()
            .find(|(f, _)| *f == flag)
            .map_or(&[][..], |(_, v)| *v)
    };
    let (protocol, port, cidrs) = (get("protocol"), get("port"), get("cidr"));
    let [protocol] = protocol else {
        return Err(UsageError(
            "--protocol: give it exactly once with --port and --cidr (or use --ip-permissions)"
                .to_owned(),
        ));
    };
    if cidrs.is_empty() {
        return Err(UsageError(
            "--cidr: give at least one source CIDR".to_owned(),
        ));
    }
    let mut perm = json!({"IpProtocol": protocol});
    match port {
        [] => {}
        [p] => {
            let bad = || UsageError(format!("--port: expected N or N-M, got {p:?}"));
            let (from, to) = p.split_once('-').unwrap_or((p, p));
            let from: u16 = from.parse().map_err(|_| bad())?;
            let to: u16 = to.parse().map_err(|_| bad())?;
            perm["FromPort"] = json!(from);
            perm["ToPort"] = json!(to);
        }
        _ => return Err(UsageError("--port: give it at most once".to_owned())),
    }
    // An IPv6 prefix goes in Ipv6Ranges, as the cloud's API has it.
    let (v6, v4): (Vec<&String>, Vec<&String>) = cidrs.iter().partition(|c| c.contains(':'));
    if !v4.is_empty() {
        perm["IpRanges"] = v4.iter().map(|c| json!({"CidrIp": c})).collect();
    }
    if !v6.is_empty() {
        perm["Ipv6Ranges"] = v6.iter().map(|c| json!({"CidrIpv6": c})).collect();
    }
    append(args, "IpPermissions", vec![perm])
}

fn top_usage() -> String {
    "usage: privlinkctl [--socket PATH] [--json | --output json|table|text] <operation> [--flag value ...]\n       privlinkctl --help | <operation> --help".to_owned()
}

fn operations_list() -> String {
    let width = OPERATIONS.iter().map(|o| o.name.len()).max().unwrap_or(0);
    let mut s = String::from("operations:\n");
    for o in OPERATIONS {
        s.push_str(&format!("  {:width$}  {}\n", o.name, o.help));
    }
    s
}

/// `privlinkctl --help`.
pub fn top_help() -> String {
    format!(
        "{}\n\nTalks to privlinkd over its management socket: --socket, else ${SOCKET_ENV}, else {DEFAULT_SOCKET}.\nPrints tables (--output table, the default), tab-separated rows for scripts (--output text), or the raw answer (--output json, or --json).\n\n{}",
        top_usage(),
        operations_list()
    )
}

fn flags_list(o: &Operation) -> String {
    if o.flags.is_empty() {
        return format!("{} takes no flags\n", o.name);
    }
    let mut rows: Vec<(String, &str)> = Vec::new();
    for &(flag, kind) in o.flags {
        let (syntax, what) = match kind {
            Str => (format!("--{flag} VALUE"), "string"),
            List => (format!("--{flag} VALUE..."), "list, repeatable"),
            Json => (format!("--{flag} JSON"), "JSON or file://PATH"),
            JsonOrStr => (format!("--{flag} JSON|TEXT"), "JSON, file://PATH or text"),
            Bool => (format!("--[no-]{flag}"), "boolean"),
            Num => (format!("--{flag} N"), "number"),
            Shorthand => match flag {
                "target" => (
                    format!("--{flag} IP:PORT[:WEIGHT]"),
                    "repeatable, into Targets",
                ),
                "port" => (format!("--{flag} N[-M]"), "into IpPermissions"),
                "connection-limit" => (
                    format!("--{flag} ACCOUNT|*=N"),
                    if connection_limits_key(o) == "AddConnectionLimits" {
                        "repeatable, into AddConnectionLimits"
                    } else {
                        "repeatable, into ConnectionLimits"
                    },
                ),
                _ => (format!("--{flag} VALUE"), "into IpPermissions"),
            },
        };
        rows.push((syntax, what));
    }
    let width = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    let mut s = format!("flags of {}:\n", o.name);
    for (syntax, what) in rows {
        s.push_str(&format!("  {syntax:width$}  {what}\n"));
    }
    s
}

/// `privlinkctl <op> --help`.
pub fn operation_help(o: &Operation) -> String {
    format!(
        "usage: privlinkctl [--socket PATH] [--json | --output json|table|text] {} [flags]\n\n{}\n\n{}\nexample:\n  privlinkctl {}\n",
        o.name,
        o.help,
        flags_list(o),
        o.example
    )
}

// ---------------------------------------------------------------------------------------
// Talking to the daemon

/// Why a request got no answer.
#[derive(Debug)]
pub enum CallError {
    /// "cannot connect to privlinkd at PATH: …"
    Connect(PathBuf, io::Error),
    /// "talking to privlinkd at PATH: …"
    Io(PathBuf, io::Error),
    /// "privlinkd at PATH closed the connection without answering"
    Closed(PathBuf),
    /// "privlinkd at PATH sent a malformed answer: …"
    BadResponse(PathBuf, String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(p, e) => {
                write!(f, "cannot connect to privlinkd at {}: {e}", p.display())?;
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) {
                    write!(f, " (is privlinkd running? set --socket or ${SOCKET_ENV})")?;
                }
                Ok(())
            }
            Self::Io(p, e) => write!(f, "talking to privlinkd at {}: {e}", p.display()),
            Self::Closed(p) => write!(
                f,
                "privlinkd at {} closed the connection without answering",
                p.display()
            ),
            Self::BadResponse(p, e) => {
                write!(
                    f,
                    "privlinkd at {} sent a malformed answer: {e}",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Sends one request and reads its response.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, CallError> {
    let io_err = |e| CallError::Io(socket.to_owned(), e);
    let mut stream =
        UnixStream::connect(socket).map_err(|e| CallError::Connect(socket.to_owned(), e))?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = req.to_line();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io_err)?;
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    if reader.read_line(&mut answer).map_err(io_err)? == 0 {
        return Err(CallError::Closed(socket.to_owned()));
    }
    let response =
        Response::parse_line(&answer).map_err(|e| CallError::BadResponse(socket.to_owned(), e))?;
    // A server-side refusal (TooManyClients, RequestTooLarge) carries a null id.
    if response.id != req.id && !(response.id.is_null() && response.result.is_err()) {
        return Err(CallError::BadResponse(
            socket.to_owned(),
            format!("answer is for id {}, not {}", response.id, req.id),
        ));
    }
    Ok(response)
}

/// The whole program: parses `argv`, calls the daemon, prints; returns the exit status.
pub fn run(
    argv: &[String],
    env_socket: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let inv = match parse_args(argv, env_socket) {
        Ok(Command::Help(text)) => {
            let _ = out.write_all(text.as_bytes());
            return 0;
        }
        Ok(Command::Run(inv)) => inv,
        Err(e) => {
            let _ = writeln!(err, "privlinkctl: {e}");
            return 2;
        }
    };
    if inv.op == crate::protocol::SUBSCRIBE_EVENTS {
        return subscribe(&inv, out, err);
    }
    if inv.op == "stats" && inv.args.get("Watch").is_some() {
        return watch_stats(&inv, out, err);
    }
    if inv.op == "stats" && inv.args.get("Count").is_some() {
        let _ = writeln!(err, "privlinkctl: --count goes with --watch");
        return 2;
    }
    let req = Request::new(1, inv.op, inv.args.clone());
    match call(&inv.socket, &req, RESPONSE_TIMEOUT) {
        Ok(Response { result: Ok(v), .. }) => {
            let text = render(&inv, &v, None);
            let _ = writeln!(out, "{}", text.trim_end());
            0
        }
        Ok(Response { result: Err(e), .. }) => {
            let _ = writeln!(err, "error: {}: {}", e.code, e.message);
            1
        }
        Err(e) => {
            let _ = writeln!(err, "privlinkctl: {e}");
            1
        }
    }
}

/// An answer as `--output` asks; `prev` is the previous `stats` answer and the seconds
/// since (`--watch`).
fn render(inv: &Invocation, v: &Value, prev: Option<(&Value, f64)>) -> String {
    match (inv.output, inv.op) {
        (Output::Json, _) => serde_json::to_string_pretty(v).unwrap_or_default(),
        (Output::Text, _) => present::text(v),
        (Output::Table, "stats") => present::stats(v, prev),
        (Output::Table, "flows") => present::flows(v),
        (Output::Table, _) => render_human(v),
    }
}

/// `stats --watch SECONDS [--count N]`: the stats again every SECONDS, with rates from
/// the previous answer; in place on a terminal (the screen is cleared), else one block per
/// refresh. Stops after N refreshes, or at the first error (exit 1).
fn watch_stats(inv: &Invocation, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use std::io::IsTerminal;
    let every = inv.args.get("Watch").and_then(Value::as_f64).unwrap_or(0.0);
    if !every.is_finite() || every < 0.1 {
        let _ = writeln!(err, "privlinkctl: --watch takes seconds, at least 0.1");
        return 2;
    }
    let count = inv.args.get("Count").and_then(Value::as_u64);
    let req = Request::new(1, inv.op, serde_json::json!({}));
    let terminal = std::io::stdout().is_terminal();
    let mut prev: Option<(Value, std::time::Instant)> = None;
    let mut shown = 0u64;
    while count.is_none_or(|c| shown < c) {
        let v = match call(&inv.socket, &req, RESPONSE_TIMEOUT) {
            Ok(Response { result: Ok(v), .. }) => v,
            Ok(Response { result: Err(e), .. }) => {
                let _ = writeln!(err, "error: {}: {}", e.code, e.message);
                return 1;
            }
            Err(e) => {
                let _ = writeln!(err, "privlinkctl: {e}");
                return 1;
            }
        };
        let now = std::time::Instant::now();
        let before = prev
            .as_ref()
            .map(|(p, at)| (p, now.duration_since(*at).as_secs_f64()));
        let text = render(inv, &v, before);
        let block = if terminal {
            format!("\x1b[H\x1b[2J{}\n", text.trim_end())
        } else if shown > 0 {
            format!("\n{}\n", text.trim_end())
        } else {
            format!("{}\n", text.trim_end())
        };
        if out
            .write_all(block.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return 0;
        }
        shown += 1;
        prev = Some((v, now));
        if count.is_none_or(|c| shown < c) {
            std::thread::sleep(Duration::from_secs_f64(every));
        }
    }
    0
}

/// `subscribe-events`: the acknowledgement, then one line per event until the daemon
/// closes the connection or `--count` events were printed (`--count` is this program's:
/// the daemon is not told). JSON lines with `--json`, else `TIME TYPE key=value…`.
fn subscribe(inv: &Invocation, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let count = inv.args.get("Count").and_then(Value::as_u64);
    let req = Request::new(1, inv.op, serde_json::json!({}));
    let fail = |err: &mut dyn Write, e: CallError| {
        let _ = writeln!(err, "privlinkctl: {e}");
        1
    };
    let io_err = |e| CallError::Io(inv.socket.clone(), e);
    let stream = match UnixStream::connect(&inv.socket) {
        Ok(s) => s,
        Err(e) => return fail(err, CallError::Connect(inv.socket.clone(), e)),
    };
    let mut line = req.to_line();
    line.push('\n');
    if let Err(e) = (&stream).write_all(line.as_bytes()) {
        return fail(err, io_err(e));
    }
    let mut reader = BufReader::new(&stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => return fail(err, CallError::Closed(inv.socket.clone())),
        Ok(_) => {}
        Err(e) => return fail(err, io_err(e)),
    }
    match Response::parse_line(&answer) {
        Ok(Response { result: Ok(_), .. }) => {}
        Ok(Response { result: Err(e), .. }) => {
            let _ = writeln!(err, "error: {}: {}", e.code, e.message);
            return 1;
        }
        Err(e) => return fail(err, CallError::BadResponse(inv.socket.clone(), e)),
    }
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        answer.clear();
        match reader.read_line(&mut answer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return fail(err, io_err(e)),
        }
        let Ok(v) = serde_json::from_str::<Value>(&answer) else {
            continue;
        };
        let event = &v["Event"];
        let text = if inv.json {
            event.to_string()
        } else {
            event_line(event)
        };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
        printed += 1;
    }
    0
}

/// One event as `TIME TYPE key=value…` (the time as unix seconds).
pub fn event_line(event: &Value) -> String {
    let mut s = format!(
        "{} {}",
        event["Time"].as_u64().unwrap_or(0),
        event["Type"].as_str().unwrap_or("?")
    );
    if let Value::Object(m) = event {
        for (k, v) in m {
            if k != "Time" && k != "Type" && !v.is_null() {
                s.push_str(&format!(
                    " {k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                ));
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// Rendering

/// A response's `ok` value as text: `ok` for `{"Return": true}` and `{}`; an aligned table
/// for each array of objects; `Key: value` lines for everything else, nested values
/// compact.
pub fn render_human(value: &Value) -> String {
    let Value::Object(obj) = value else {
        return format!("{}\n", compact(value));
    };
    if obj.is_empty() || (obj.len() == 1 && obj.get("Return") == Some(&Value::Bool(true))) {
        return "ok\n".to_owned();
    }
    // A single wrapped object ({"VpcEndpoint": {...}}): show its fields.
    if obj.len() == 1 {
        if let Some(inner @ Value::Object(_)) = obj.values().next() {
            return render_human(inner);
        }
    }
    let is_table =
        |v: &Value| matches!(v, Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_object));
    let mut out = String::new();
    let scalars: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| !is_table(v)).collect();
    let tables: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| is_table(v)).collect();
    let width = scalars
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &scalars {
        let shown = match v {
            Value::Array(a) if a.is_empty() => "(none)".to_owned(),
            _ => compact(v),
        };
        out.push_str(&format!(
            "{:width$}  {shown}\n",
            format!("{k}:"),
            width = width + 1
        ));
    }
    for (k, v) in tables {
        if !out.is_empty() {
            out.push('\n');
        }
        if !(scalars.is_empty() && obj.len() == 1) {
            out.push_str(&format!("{k}:\n"));
        }
        if let Value::Array(rows) = v {
            out.push_str(&table(rows));
        }
    }
    out
}

/// A row's cells by column name: its keys, and a nested object's keys one level down as
/// `Key.Sub` (`{"TargetHealth": {"State": …}}` → `TargetHealth.State`), so that each
/// nested field gets a column of its own rather than one `{…}` blob per row.
fn row_cells(row: &Value) -> Vec<(String, &Value)> {
    let Value::Object(o) = row else {
        return Vec::new();
    };
    let mut cells = Vec::new();
    for (k, v) in o {
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                cells.extend(inner.iter().map(|(sub, v)| (format!("{k}.{sub}"), v)));
            }
            _ => cells.push((k.clone(), v)),
        }
    }
    cells
}

/// An aligned table: one column per key any row has (first-seen order; nested objects
/// flattened one level, see `row_cells`), one row per object. Identifiers come first,
/// free text (`Description`, `Message`) last, where its length pushes nothing aside.
pub fn table(rows: &[Value]) -> String {
    let rows: Vec<Vec<(String, &Value)>> = rows.iter().map(row_cells).collect();
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for (k, _) in row {
            if !columns.contains(&k.as_str()) {
                columns.push(k);
            }
        }
    }
    // serde_json orders keys alphabetically, which buries the identifiers.
    columns.sort_by_key(|c| {
        if c.ends_with("Id") || c.ends_with("Name") {
            0
        } else if c.ends_with("Description") || c.ends_with("Message") {
            2
        } else {
            1
        }
    });
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map_or_else(|| "-".to_owned(), |(_, v)| compact(v))
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in row.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            s.push_str(&" ".repeat(pad));
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(&mut columns.iter().copied());
    for r in &cells {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// One value on one line: strings bare, `-` for null or an empty array, arrays
/// comma-joined, objects as `{Key=value ...}`.
pub fn compact(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(a) if a.is_empty() => "-".to_owned(),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            let fields: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k}={}", compact(v)))
                .collect();
            format!("{{{}}}", fields.join(" "))
        }
    }
}

pub mod present;
#[cfg(test)]
mod tests;
