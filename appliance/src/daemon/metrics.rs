//! Prometheus metrics: `[metrics] listen` serves `GET /metrics` in the Prometheus text
//! format (through `prometheus-client`) from a thread of its own. A scrape reads what is
//! already published: each worker's counters (a sequence lock), the workers' usage reports
//! (the same ones `stats` merges), the current snapshot, the health board, and what the
//! management side and the main loop record here ([`Telemetry`]: requests, snapshot
//! publications, port statistics). Nothing here touches a worker: the workers' only part
//! is the usage sweep they already run, a budget per poll, when a report is wanted.
//!
//! Label cardinality is bounded by the configuration, never by traffic: per worker (and
//! per drop reason), per endpoint and service (their ids, VPC and account), per target,
//! per SNAT address and port; management requests by operation and result (an unknown
//! operation is counted as `unknown`). Per-endpoint and per-service drops name only the
//! reasons that happened. See the README for every metric.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::graph::counters::{Counters, DropReason};

/// Upper bounds (seconds) of the latency histograms: 100 µs to 10 s.
const LATENCY_BOUNDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// A latency histogram: counts per bucket (not cumulative), their sum and count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; LATENCY_BOUNDS.len()],
    /// Observations above the last bound.
    over: u64,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        match LATENCY_BOUNDS.iter().position(|&b| seconds <= b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// The cumulative buckets Prometheus wants.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        LATENCY_BOUNDS
            .iter()
            .zip(self.counts)
            .map(|(&b, n)| {
                acc += n;
                (b, acc)
            })
            .collect()
    }
}

/// Port statistics as the main loop last read them (once a second).
#[derive(Debug, Clone, Default)]
pub struct PortSample {
    pub name: String,
    pub stats: dpdk_bindings::PortStats,
}

/// What the management side and the main loop record for the metrics.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Management requests by (operation, result): count and latency.
    requests: Mutex<BTreeMap<(String, String), (u64, Histogram)>>,
    /// Snapshot build and publish times.
    publish: Mutex<Histogram>,
    ports: Mutex<Vec<PortSample>>,
}

impl Telemetry {
    pub fn request(&self, op: &str, result: &str, took: Duration) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let e = r.entry((op.to_owned(), result.to_owned())).or_default();
        e.0 += 1;
        e.1.observe(took.as_secs_f64());
    }

    pub fn published(&self, took: Duration) {
        let mut h = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        h.observe(took.as_secs_f64());
    }

    pub fn set_ports(&self, ports: Vec<PortSample>) {
        *self.ports.lock().unwrap_or_else(|e| e.into_inner()) = ports;
    }
}

/// One endpoint's figures, with its labels.
#[derive(Debug, Clone, Default)]
pub struct EndpointFigures {
    pub endpoint: String,
    pub service: String,
    pub vpc: String,
    pub account: String,
    pub packets: u64,
    pub bytes: u64,
    pub active_flows: u64,
    pub new_flows: u64,
    pub drops: Vec<(&'static str, u64)>,
}

/// One target's figures.
#[derive(Debug, Clone, Default)]
pub struct TargetFigures {
    pub service: String,
    /// `ip:port`.
    pub target: String,
    pub active_flows: u64,
    /// Its health state (`healthy`, …), when the health board has one.
    pub health: Option<&'static str>,
}

/// Everything one scrape shows, gathered by [`Source::gather`].
#[derive(Debug, Clone, Default)]
pub struct View {
    pub workers: Vec<Counters>,
    pub flow_capacity: u64,
    pub endpoints: Vec<EndpointFigures>,
    pub targets: Vec<TargetFigures>,
    /// Flows holding a port, per SNAT address.
    pub snat: Vec<(String, u64)>,
    pub generation: u64,
}

/// Where a scrape's figures come from (the management side; a stand-in in tests).
pub trait Source: Send + Sync {
    fn gather(&self) -> View;
}

/// The metrics of `view` and `tel` in the Prometheus text format.
pub fn render(view: View, tel: &Telemetry) -> String {
    let requests = tel
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let publish = tel
        .publish
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ports = tel.ports.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        view,
        requests,
        publish,
        ports,
    }));
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

#[derive(Debug)]
struct Scrape {
    view: View,
    requests: BTreeMap<(String, String), (u64, Histogram)>,
    publish: Histogram,
    ports: Vec<PortSample>,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: name (without `_total`, which the encoder adds to counters), help,
/// and its series.
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, &Histogram)],
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        m.encode_family(labels)?
            .encode_histogram::<Labels>(h.sum, h.count, &h.buckets(), None)?;
    }
    Ok(())
}

/// A port statistic: its name, help and where it is read.
type PortCounter = (
    &'static str,
    &'static str,
    fn(&dpdk_bindings::PortStats) -> u64,
);

/// Per-worker scalar counters that are gauges, not counters.
const WORKER_GAUGES: [&str; 1] = ["active_flows"];

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = &self.view;
        let worker = |i: usize| vec![("worker", i.to_string())];
        // Every scalar counter of the workers, under its own name.
        let named: Vec<Vec<(&'static str, u64)>> = v.workers.iter().map(Counters::named).collect();
        if let Some(first) = named.first() {
            for (k, &(name, _)) in first.iter().enumerate() {
                let series = named
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (worker(i), c.get(k).map_or(0, |x| x.1)));
                if WORKER_GAUGES.contains(&name) {
                    family(
                        &mut e,
                        &format!("privlink_worker_{name}"),
                        &format!("the worker's {}", name.replace('_', " ")),
                        MetricType::Gauge,
                        series.map(|(l, x)| (l, gauge(x))),
                    )?;
                } else {
                    family(
                        &mut e,
                        &format!("privlink_worker_{name}"),
                        &format!("{} counted by the worker", name.replace('_', " ")),
                        MetricType::Counter,
                        series.map(|(l, x)| (l, counter(x))),
                    )?;
                }
            }
        }
        family(
            &mut e,
            "privlink_worker_drops",
            "packets the worker dropped, by reason",
            MetricType::Counter,
            v.workers.iter().enumerate().flat_map(|(i, c)| {
                DropReason::ALL.iter().map(move |r| {
                    (
                        vec![("worker", i.to_string()), ("reason", r.label().to_owned())],
                        counter(c.dropped(*r)),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "privlink_worker_flow_capacity",
            "flow slots of each worker's flow table",
            MetricType::Gauge,
            (0..v.workers.len()).map(|i| (worker(i), gauge(v.flow_capacity))),
        )?;

        let ep = |f: &EndpointFigures| {
            vec![
                ("endpoint", f.endpoint.clone()),
                ("service", f.service.clone()),
                ("vpc", f.vpc.clone()),
                ("account", f.account.clone()),
            ]
        };
        family(
            &mut e,
            "privlink_endpoint_packets",
            "packets of the endpoint's flows, both directions",
            MetricType::Counter,
            v.endpoints.iter().map(|f| (ep(f), counter(f.packets))),
        )?;
        family(
            &mut e,
            "privlink_endpoint_bytes",
            "bytes of the endpoint's flows, both directions",
            MetricType::Counter,
            v.endpoints.iter().map(|f| (ep(f), counter(f.bytes))),
        )?;
        family(
            &mut e,
            "privlink_endpoint_new_flows",
            "flows created through the endpoint",
            MetricType::Counter,
            v.endpoints.iter().map(|f| (ep(f), counter(f.new_flows))),
        )?;
        family(
            &mut e,
            "privlink_endpoint_active_flows",
            "live flows through the endpoint",
            MetricType::Gauge,
            v.endpoints.iter().map(|f| (ep(f), gauge(f.active_flows))),
        )?;
        family(
            &mut e,
            "privlink_endpoint_drops",
            "packets to the endpoint dropped, by reason (reasons that happened)",
            MetricType::Counter,
            v.endpoints.iter().flat_map(|f| {
                f.drops.iter().map(move |(r, n)| {
                    let mut l = ep(f);
                    l.push(("reason", (*r).to_owned()));
                    (l, counter(*n))
                })
            }),
        )?;

        // Services: their endpoints added up.
        let mut services: BTreeMap<&str, EndpointFigures> = BTreeMap::new();
        for f in &v.endpoints {
            let s = services.entry(f.service.as_str()).or_default();
            s.packets += f.packets;
            s.bytes += f.bytes;
            s.new_flows += f.new_flows;
            s.active_flows += f.active_flows;
            for (r, n) in &f.drops {
                match s.drops.iter_mut().find(|(x, _)| x == r) {
                    Some(d) => d.1 += n,
                    None => s.drops.push((r, *n)),
                }
            }
        }
        let svc = |id: &str| vec![("service", id.to_owned())];
        family(
            &mut e,
            "privlink_service_packets",
            "packets of the service's flows, all its endpoints",
            MetricType::Counter,
            services.iter().map(|(id, f)| (svc(id), counter(f.packets))),
        )?;
        family(
            &mut e,
            "privlink_service_bytes",
            "bytes of the service's flows, all its endpoints",
            MetricType::Counter,
            services.iter().map(|(id, f)| (svc(id), counter(f.bytes))),
        )?;
        family(
            &mut e,
            "privlink_service_new_flows",
            "flows created to the service",
            MetricType::Counter,
            services
                .iter()
                .map(|(id, f)| (svc(id), counter(f.new_flows))),
        )?;
        family(
            &mut e,
            "privlink_service_active_flows",
            "live flows to the service",
            MetricType::Gauge,
            services
                .iter()
                .map(|(id, f)| (svc(id), gauge(f.active_flows))),
        )?;
        family(
            &mut e,
            "privlink_service_drops",
            "packets to the service's endpoints dropped, by reason",
            MetricType::Counter,
            services.iter().flat_map(|(id, f)| {
                f.drops.iter().map(move |(r, n)| {
                    let mut l = svc(id);
                    l.push(("reason", (*r).to_owned()));
                    (l, counter(*n))
                })
            }),
        )?;

        let tgt =
            |t: &TargetFigures| vec![("service", t.service.clone()), ("target", t.target.clone())];
        family(
            &mut e,
            "privlink_target_active_flows",
            "live flows to the target",
            MetricType::Gauge,
            v.targets.iter().map(|t| (tgt(t), gauge(t.active_flows))),
        )?;
        family(
            &mut e,
            "privlink_target_health",
            "1 for the target's health state (initial, healthy, unhealthy, unused, draining, unavailable)",
            MetricType::Gauge,
            v.targets.iter().filter_map(|t| {
                let mut l = tgt(t);
                l.push(("state", t.health?.to_owned()));
                Some((l, gauge(1)))
            }),
        )?;
        family(
            &mut e,
            "privlink_snat_ports_in_use",
            "flows holding a port of the SNAT address",
            MetricType::Gauge,
            v.snat
                .iter()
                .map(|(a, n)| (vec![("address", a.clone())], gauge(*n))),
        )?;

        let port = |p: &PortSample| vec![("port", p.name.clone())];
        let port_counters: [PortCounter; 8] = [
            ("rx_packets", "packets the port received", |s| s.rx_packets),
            ("tx_packets", "packets the port sent", |s| s.tx_packets),
            ("rx_bytes", "bytes the port received", |s| s.rx_bytes),
            ("tx_bytes", "bytes the port sent", |s| s.tx_bytes),
            (
                "rx_missed",
                "packets the NIC dropped for want of an RX descriptor (imissed)",
                |s| s.rx_missed,
            ),
            ("rx_errors", "erroneous received packets", |s| s.rx_errors),
            ("tx_errors", "failed transmissions", |s| s.tx_errors),
            ("rx_nombuf", "RX failures for want of an mbuf", |s| {
                s.rx_no_mbuf
            }),
        ];
        for (name, help, get) in port_counters {
            family(
                &mut e,
                &format!("privlink_port_{name}"),
                help,
                MetricType::Counter,
                self.ports.iter().map(|p| (port(p), counter(get(&p.stats)))),
            )?;
        }

        family(
            &mut e,
            "privlink_snapshot_generation",
            "the generation of the snapshot the management side published last",
            MetricType::Gauge,
            [(Labels::new(), gauge(v.generation))],
        )?;
        histogram(
            &mut e,
            "privlink_snapshot_publish_seconds",
            "time to build and publish a snapshot",
            &[(Labels::new(), &self.publish)],
        )?;
        family(
            &mut e,
            "privlink_management_requests",
            "management requests by operation and result (ok or the error code)",
            MetricType::Counter,
            self.requests.iter().map(|((op, result), (n, _))| {
                (
                    vec![("op", op.clone()), ("result", result.clone())],
                    counter(*n),
                )
            }),
        )?;
        let mut by_op: BTreeMap<&str, Histogram> = BTreeMap::new();
        for ((op, _), (_, h)) in &self.requests {
            let t = by_op.entry(op.as_str()).or_default();
            for (a, b) in t.counts.iter_mut().zip(h.counts) {
                *a += b;
            }
            t.over += h.over;
            t.sum += h.sum;
            t.count += h.count;
        }
        let series: Vec<(Labels, &Histogram)> = by_op
            .iter()
            .map(|(op, h)| (vec![("op", (*op).to_owned())], h))
            .collect();
        histogram(
            &mut e,
            "privlink_management_request_duration_seconds",
            "time to answer a management request",
            &series,
        )?;
        Ok(())
    }
}

/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the metrics thread on `listen`. It stops when `stop` is set (within 100 ms).
pub fn spawn(
    listen: SocketAddr,
    source: Arc<dyn Source>,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| format!("metrics: cannot listen on {listen}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("metrics: {e}"))?;
    log::info!("metrics: http://{listen}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, source.as_ref(), &telemetry),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        log::warn!("metrics: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("metrics thread: {e}"))
}

/// Answers one connection: `GET /metrics` with the metrics, anything else with an error.
/// One request per connection (`Connection: close`), as Prometheus's scraper is happy with.
fn serve(conn: TcpStream, source: &dyn Source, tel: &Telemetry) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    // The request line, then headers up to the blank line (bounded).
    if reader.by_ref().take(8192).read_line(&mut line).is_err() {
        return;
    }
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        match reader.by_ref().take(8192).read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let started = Instant::now();
            let body = render(source.gather(), tel);
            log::debug!(
                "metrics: scrape of {} bytes in {:.1} ms",
                body.len(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "privlinkd serves /metrics only\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_owned(),
        ),
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.flush();
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    struct Fixed(View);

    impl Source for Fixed {
        fn gather(&self) -> View {
            self.0.clone()
        }
    }

    fn view() -> View {
        let mut w = Counters {
            rx_packets: 10,
            active_flows: 3,
            ..Counters::default()
        };
        w.drop(DropReason::NoListener);
        View {
            workers: vec![w, Counters::default()],
            flow_capacity: 1024,
            endpoints: vec![EndpointFigures {
                endpoint: "vpce-1".into(),
                service: "vpce-svc-1".into(),
                vpc: "vpc-c".into(),
                account: "111111111111".into(),
                packets: 7,
                bytes: 700,
                active_flows: 2,
                new_flows: 4,
                drops: vec![("security_group", 5)],
            }],
            targets: vec![TargetFigures {
                service: "vpce-svc-1".into(),
                target: "10.2.0.11:8080".into(),
                active_flows: 2,
                health: Some("healthy"),
            }],
            snat: vec![("10.2.0.100".into(), 2)],
            generation: 9,
        }
    }

    #[test]
    fn the_text_format_names_every_family_with_its_labels() {
        let tel = Telemetry::default();
        tel.request("create-vpc-endpoint", "ok", Duration::from_millis(3));
        tel.request(
            "create-vpc-endpoint",
            "InvalidParameter",
            Duration::from_millis(1),
        );
        tel.published(Duration::from_millis(20));
        tel.set_ports(vec![PortSample {
            name: "net_tap0".into(),
            stats: dpdk_bindings::PortStats {
                rx_missed: 6,
                ..Default::default()
            },
        }]);
        let text = render(view(), &tel);
        for want in [
            "# TYPE privlink_worker_rx_packets_total counter",
            "privlink_worker_rx_packets_total{worker=\"0\"} 10",
            "privlink_worker_active_flows{worker=\"0\"} 3",
            "privlink_worker_drops_total{worker=\"0\",reason=\"no_listener\"} 1",
            "privlink_worker_drops_total{worker=\"1\",reason=\"no_listener\"} 0",
            "privlink_worker_flow_capacity{worker=\"1\"} 1024",
            "privlink_endpoint_bytes_total{endpoint=\"vpce-1\",service=\"vpce-svc-1\",vpc=\"vpc-c\",account=\"111111111111\"} 700",
            "privlink_endpoint_drops_total{endpoint=\"vpce-1\",service=\"vpce-svc-1\",vpc=\"vpc-c\",account=\"111111111111\",reason=\"security_group\"} 5",
            "privlink_service_active_flows{service=\"vpce-svc-1\"} 2",
            "privlink_target_health{service=\"vpce-svc-1\",target=\"10.2.0.11:8080\",state=\"healthy\"} 1",
            "privlink_snat_ports_in_use{address=\"10.2.0.100\"} 2",
            "privlink_port_rx_missed_total{port=\"net_tap0\"} 6",
            "privlink_snapshot_generation 9",
            "privlink_snapshot_publish_seconds_bucket{le=\"0.025\"} 1",
            "privlink_snapshot_publish_seconds_count 1",
            "privlink_management_requests_total{op=\"create-vpc-endpoint\",result=\"ok\"} 1",
            "privlink_management_request_duration_seconds_count{op=\"create-vpc-endpoint\"} 2",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_thread_serves_metrics_and_refuses_the_rest() {
        // Port 0: the OS picks; read it back from a probe bind.
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let stop = Arc::new(AtomicBool::new(false));
        let t = spawn(
            addr,
            Arc::new(Fixed(view())),
            Arc::new(Telemetry::default()),
            Arc::clone(&stop),
        )
        .unwrap();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("privlink_snapshot_generation 9"), "{ok}");
        let missing = get(addr, "GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        // A client that sends nothing is given up on, and the next is served.
        let idle = TcpStream::connect(addr).unwrap();
        let ok = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        drop(idle);
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
