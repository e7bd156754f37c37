//! Why a configuration could not be loaded: [`ConfigError`] names the file and the key path,
//! [`ConfigProblem`] what is wrong there.
//!
//! The messages are what an operator reads when `privlinkd` refuses to start, so each names
//! the value and the rule it broke; the tests pin them word for word.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{MAX_SOCKET_PATH, MAX_TIMEOUT};
use crate::model::{AccountId, KeyPath, ModelError, ParseError, ServiceId, ServiceName};
use crate::quota;

/// What is wrong with a value of a valid-looking configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    /// The model's rules; prints the [`ModelError`].
    Model(Box<ModelError>),
    /// A value with a string form that is malformed; prints the [`ParseError`].
    Parse(ParseError),
    /// `"<arg>": <reason>`: an EAL argument that names lcores cannot be read.
    EalArg {
        /// The argument (or its value).
        arg: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `at least one worker lcore is required`
    NoWorkers,
    /// `lcore 1 is listed twice`
    DuplicateLcore(u32),
    /// `lcore 0 is the EAL main lcore; workers run on the other EAL lcores`
    MainLcore(u32),
    /// `lcore 3 is not among the EAL lcores 0,1`
    LcoreNotInEal {
        /// The lcore listed.
        lcore: u32,
        /// The lcores EAL enables.
        enabled: Vec<u32>,
    },
    /// `600 is outside 1..=512`
    OutOfRange {
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// `1000 is not a power of two`
    NotPowerOfTwo(u64),
    /// `65536 is not prime`
    NotPrime(u64),
    /// `must not be empty`
    Empty,
    /// `port net_tap0 is declared twice (first at ports[0])`
    DuplicatePort {
        /// The name.
        name: String,
        /// Index of its first declaration.
        first: usize,
    },
    /// `no [[ports]] entry is named net_tap9`
    UnknownPort(String),
    /// `account 333333333333 is not declared in [[accounts]]`
    UnknownAccount(AccountId),
    /// `account 111111111111 is declared twice (first at accounts[0])`
    DuplicateAccount {
        /// The id.
        id: AccountId,
        /// Index of its first declaration.
        first: usize,
    },
    /// `uid 1001 already acts as account 111111111111`
    DuplicateUid {
        /// The uid.
        uid: u32,
        /// The account it was given to first.
        account: AccountId,
    },
    /// `the path is 130 bytes; a Unix socket path holds at most 107`
    SocketPathTooLong(usize),
    /// `an HA pair has exactly two nodes, not 3`
    HaNodeCount(usize),
    /// `"A" is not a node name (1 to 32 of a-z, 0-9, '-'), or is listed twice`
    HaNodeName(String),
    /// `both nodes have the same sync address`
    HaSameSync,
    /// `"c" is not one of ha.nodes`
    HaUnknownNode(String),
    /// The key's problem.
    HaKey(String),
    /// `exactly one of key and key_file is required`
    HaKeyChoice,
    /// What is wrong with an etcd URL.
    ClusterUrl(String),
    /// `"privlink" is not a key prefix (it starts and ends with '/', printable ASCII)`
    ClusterPrefix(String),
    /// `"" is not a node name (1 to 64 printable ASCII characters)`
    ClusterNode(String),
    /// `0 s is outside (0, 604800] seconds`
    TimeoutOutOfRange(Duration),
    /// `0.001 s is outside [0.01, 60] seconds`
    DurationOutOfRange {
        value: Duration,
        min: Duration,
        max: Duration,
    },
    /// `5000 is above limits.flows_per_client (4096)`
    AboveLimit {
        /// The value given.
        value: u64,
        /// The key of the limit it must stay within.
        limit: &'static str,
        /// That limit's value.
        max: u64,
    },
    /// `an endpoint needs service_id or service_name`
    NoService,
    /// `service_id vpce-svc-… and service_name com.privlink.vpce.… name different services`
    ServiceMismatch {
        /// The id given.
        id: ServiceId,
        /// The name given.
        name: ServiceName,
    },
    /// `service name com.privlink.vpce.us-east-1.… is for region us-east-1; this appliance
    /// serves region local (mgmt.region)`
    WrongRegion {
        /// The name given.
        name: ServiceName,
        /// `mgmt.region`.
        region: String,
    },
    /// The declared objects go beyond a quota; prints the [`quota::QuotaError`].
    Quota(Box<quota::QuotaError>),
    /// `invalid policy document: <reason>` for a declared endpoint's policy.
    Policy(String),
    /// `100 ms is not more than workers.idle_sleep_us (200000 µs): an idle worker would
    /// look stalled`
    StallNotAboveIdleSleep {
        /// `workers.stall_timeout_ms`.
        stall_ms: u32,
        /// `workers.idle_sleep_us`.
        idle_sleep_us: u32,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => e.fmt(f),
            Self::Parse(e) => e.fmt(f),
            Self::EalArg { arg, reason } => write!(f, "{arg:?}: {reason}"),
            Self::NoWorkers => f.write_str("at least one worker lcore is required"),
            Self::DuplicateLcore(n) => write!(f, "lcore {n} is listed twice"),
            Self::MainLcore(n) => write!(
                f,
                "lcore {n} is the EAL main lcore; workers run on the other EAL lcores"
            ),
            Self::LcoreNotInEal { lcore, enabled } => {
                write!(f, "lcore {lcore} is not among the EAL lcores ")?;
                for (i, n) in enabled.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}")?;
                }
                Ok(())
            }
            Self::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
            Self::NotPowerOfTwo(n) => write!(f, "{n} is not a power of two"),
            Self::NotPrime(n) => write!(f, "{n} is not prime"),
            Self::Empty => f.write_str("must not be empty"),
            Self::DuplicatePort { name, first } => {
                write!(f, "port {name} is declared twice (first at ports[{first}])")
            }
            Self::UnknownPort(name) => write!(f, "no [[ports]] entry is named {name}"),
            Self::UnknownAccount(id) => {
                write!(f, "account {id} is not declared in [[accounts]]")
            }
            Self::DuplicateAccount { id, first } => write!(
                f,
                "account {id} is declared twice (first at accounts[{first}])"
            ),
            Self::DuplicateUid { uid, account } => {
                write!(f, "uid {uid} already acts as account {account}")
            }
            Self::HaNodeCount(n) => write!(f, "an HA pair has exactly two nodes, not {n}"),
            Self::HaNodeName(n) => write!(
                f,
                "{n:?} is not a node name (1 to 32 of a-z, 0-9, '-'), or is listed twice"
            ),
            Self::HaSameSync => write!(f, "both nodes have the same sync address"),
            Self::HaUnknownNode(n) => write!(
                f,
                "{n:?} is not one of ha.nodes (set ha.node, or privlinkd --ha-node, to this node's name)"
            ),
            Self::HaKey(e) => f.write_str(e),
            Self::HaKeyChoice => write!(f, "exactly one of key and key_file is required"),
            Self::ClusterUrl(e) => f.write_str(e),
            Self::ClusterPrefix(p) => write!(
                f,
                "{p:?} is not a key prefix (it starts and ends with '/', printable ASCII, no '//')"
            ),
            Self::ClusterNode(n) => write!(
                f,
                "{n:?} is not a node name (1 to 64 printable ASCII characters)"
            ),
            Self::SocketPathTooLong(n) => write!(
                f,
                "the path is {n} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}"
            ),
            Self::DurationOutOfRange { value, min, max } => write!(
                f,
                "{} s is outside [{}, {}] seconds",
                value.as_secs_f64(),
                min.as_secs_f64(),
                max.as_secs_f64()
            ),
            Self::TimeoutOutOfRange(d) => write!(
                f,
                "{} s is outside (0, {}] seconds",
                d.as_secs_f64(),
                MAX_TIMEOUT.as_secs()
            ),
            Self::AboveLimit { value, limit, max } => {
                write!(f, "{value} is above {limit} ({max})")
            }
            Self::NoService => f.write_str("an endpoint needs service_id or service_name"),
            Self::ServiceMismatch { id, name } => write!(
                f,
                "service_id {id} and service_name {name} name different services"
            ),
            Self::WrongRegion { name, region } => write!(
                f,
                "service name {name} is for region {}; this appliance serves region \
                 {region} (mgmt.region)",
                name.region()
            ),
            Self::Quota(e) => e.fmt(f),
            Self::Policy(reason) => write!(f, "invalid policy document: {reason}"),
            Self::StallNotAboveIdleSleep {
                stall_ms,
                idle_sleep_us,
            } => write!(
                f,
                "{stall_ms} ms is not more than workers.idle_sleep_us ({idle_sleep_us} µs): an idle worker would look stalled"
            ),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// `<file>: cannot read: <io error>`
    Read {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `<file>: <toml's message, with line, column and an excerpt>`: not TOML, a wrong
    /// type, an unknown key, a missing required key or a malformed id.
    Syntax {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// What toml said.
        source: Box<toml::de::Error>,
    },
    /// `<file>: <key path>: <problem>`: well-formed but not valid.
    Invalid {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// Where, e.g. `vpcs[1].address`.
        at: KeyPath,
        /// What.
        problem: ConfigProblem,
    },
}

impl ConfigError {
    /// The file the error is in, if known.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Read { file, .. } => Some(file),
            Self::Syntax { file, .. } | Self::Invalid { file, .. } => file.as_deref(),
        }
    }

    /// The key path of a validation error.
    pub fn path(&self) -> Option<&KeyPath> {
        match self {
            Self::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The problem of a validation error.
    pub fn problem(&self) -> Option<&ConfigProblem> {
        match self {
            Self::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The error, as one of the file at `path`.
    pub fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Self::Read { .. } => {}
            Self::Syntax { file, .. } | Self::Invalid { file, .. } => {
                *file = Some(path.to_owned());
            }
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.file() {
            write!(f, "{}: ", file.display())?;
        }
        match self {
            Self::Read { source, .. } => write!(f, "cannot read: {source}"),
            Self::Syntax { source, .. } => write!(f, "{}", source.to_string().trim_end()),
            Self::Invalid { at, problem, .. } => write!(f, "{at}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Syntax { source, .. } => Some(source.as_ref()),
            Self::Invalid {
                problem: ConfigProblem::Model(e),
                ..
            } => Some(e.as_ref()),
            Self::Invalid { .. } => None,
        }
    }
}
