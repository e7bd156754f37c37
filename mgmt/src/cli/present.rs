//! `stats` and `flows` for people: units, rates, sorted rows, and the `text` output
//! (tab-separated rows for scripts) of any answer.

use serde_json::Value;

/// `1234567` as `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes with a binary unit and one decimal (`512 B`, `1.5 KiB`, `3.2 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A rate with a decimal SI prefix (`12.3 k`, `4.5 M`), for pps and bit/s.
pub fn rate(per_s: f64, unit: &str) -> String {
    let (v, p) = if per_s >= 1e9 {
        (per_s / 1e9, "G")
    } else if per_s >= 1e6 {
        (per_s / 1e6, "M")
    } else if per_s >= 1e3 {
        (per_s / 1e3, "k")
    } else {
        (per_s, "")
    };
    format!("{v:.1} {p}{unit}")
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Drops by reason, non-zero, most first (then by name).
fn drops_sorted(drops: &Value) -> Vec<(String, u64)> {
    let mut d: Vec<(String, u64)> = drops
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default();
    d.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    d
}

/// Aligned columns; the first row is the header.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `stats` answer `cur` as tables; with `prev` (the answer `secs` seconds earlier:
/// `stats --watch`) also rates per second.
pub fn stats(cur: &Value, prev: Option<(&Value, f64)>) -> String {
    let mut out = String::new();
    let per_s = |now: u64, before: Option<u64>| -> Option<f64> {
        let (_, secs) = prev?;
        (secs > 0.0).then(|| now.saturating_sub(before.unwrap_or(now)) as f64 / secs)
    };
    if let Some(t) = cur.get("Totals") {
        let pt = prev.and_then(|(p, _)| p.get("Totals"));
        let before = |k: &str| pt.map(|p| u(p, k));
        out.push_str(&format!(
            "Totals ({} worker(s))\n",
            cur.get("Workers").and_then(Value::as_u64).unwrap_or(0)
        ));
        let mut rows = vec![vec![
            String::new(),
            "packets".into(),
            "bytes".into(),
            "rate".into(),
            "throughput".into(),
        ]];
        for (name, p, b) in [
            ("rx", "rx_packets", "rx_bytes"),
            ("tx", "tx_packets", "tx_bytes"),
        ] {
            let pps = per_s(u(t, p), before(p));
            let bps = per_s(u(t, b), before(b)).map(|x| x * 8.0);
            rows.push(vec![
                name.into(),
                count(u(t, p)),
                bytes(u(t, b)),
                pps.map_or_else(|| "-".into(), |x| rate(x, "pps")),
                bps.map_or_else(|| "-".into(), |x| rate(x, "bit/s")),
            ]);
        }
        out.push_str(&table(&rows));
        let new = per_s(u(t, "new_flows"), before("new_flows"));
        out.push_str(&format!(
            "  flows: {} active, {} new{}, {} expired\n",
            count(u(t, "active_flows")),
            count(u(t, "new_flows")),
            new.map_or_else(String::new, |x| format!(" ({x:.1}/s)")),
            count(u(t, "expired_flows")),
        ));
        let drops = drops_sorted(t.get("drops").unwrap_or(&Value::Null));
        let total: u64 = drops.iter().map(|d| d.1).sum();
        out.push_str(&format!("  drops: {}\n", count(total)));
        if !drops.is_empty() {
            let pd = pt.and_then(|p| p.get("drops"));
            let mut rows = Vec::new();
            for (reason, n) in &drops {
                let r = per_s(*n, pd.map(|p| u(p, reason)));
                rows.push(vec![
                    format!("  {reason}"),
                    count(*n),
                    r.map_or_else(String::new, |x| format!("{x:.1}/s")),
                ]);
            }
            out.push_str(&table(&rows));
        }
    }
    let listed = |key: &str| -> Vec<Value> {
        let mut v: Vec<Value> = cur
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        v.sort_by(|a, b| {
            u(b, "Bytes")
                .cmp(&u(a, "Bytes"))
                .then_with(|| u(b, "ActiveFlows").cmp(&u(a, "ActiveFlows")))
        });
        v
    };
    let previous = |key: &str, id_key: &str, id: &str| -> Option<u64> {
        let (p, _) = prev?;
        p.get(key)?
            .as_array()?
            .iter()
            .find(|x| x.get(id_key).and_then(Value::as_str) == Some(id))
            .map(|x| u(x, "Bytes"))
    };
    for (key, id_key, title) in [
        ("Endpoints", "VpcEndpointId", "Endpoints (by bytes)"),
        ("Services", "ServiceId", "Services (by bytes)"),
    ] {
        let items = listed(key);
        if items.is_empty() {
            continue;
        }
        out.push_str(&format!("{title}\n"));
        let mut head = vec![id_key.to_owned()];
        if key == "Endpoints" {
            head.push("ServiceId".into());
        }
        head.extend(
            [
                "ActiveFlows",
                "NewFlows",
                "Packets",
                "Bytes",
                "Throughput",
                "Drops",
            ]
            .map(String::from),
        );
        let mut rows = vec![head];
        for e in &items {
            let id = e.get(id_key).and_then(Value::as_str).unwrap_or("-");
            let mut row = vec![id.to_owned()];
            if key == "Endpoints" {
                row.push(
                    e.get("ServiceId")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .into(),
                );
            }
            let thr = per_s(u(e, "Bytes"), previous(key, id_key, id)).map(|x| x * 8.0);
            let drops = drops_sorted(e.get("Drops").unwrap_or(&Value::Null));
            row.extend([
                count(u(e, "ActiveFlows")),
                count(u(e, "NewFlows")),
                count(u(e, "Packets")),
                bytes(u(e, "Bytes")),
                thr.map_or_else(|| "-".into(), |x| rate(x, "bit/s")),
                if drops.is_empty() {
                    "0".into()
                } else {
                    drops
                        .iter()
                        .map(|(r, n)| format!("{r}={n}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]);
            rows.push(row);
        }
        out.push_str(&table(&rows));
    }
    let targets = listed("Targets");
    if !targets.is_empty() {
        out.push_str("Targets\n");
        let mut rows = vec![vec![
            "ServiceId".into(),
            "Target".into(),
            "ActiveFlows".into(),
        ]];
        let mut targets = targets;
        targets.sort_by_key(|t| std::cmp::Reverse(u(t, "ActiveFlows")));
        for t in &targets {
            rows.push(vec![
                t.get("ServiceId")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .into(),
                t.get("Target")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .into(),
                count(u(t, "ActiveFlows")),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// The `flows` answer as a table, most bytes first.
pub fn flows(v: &Value) -> String {
    let mut items: Vec<Value> = v
        .get("Flows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        return "no flows\n".to_owned();
    }
    items.sort_by_key(|f| std::cmp::Reverse(u(f, "Bytes")));
    let cols = [
        "VpcEndpointId",
        "Protocol",
        "Consumer",
        "Endpoint",
        "Snat",
        "Target",
        "State",
    ];
    let mut head: Vec<String> = cols.iter().map(|c| (*c).to_owned()).collect();
    head.extend(["Packets", "Bytes", "Age", "Idle"].map(String::from));
    let mut rows = vec![head];
    for f in &items {
        let mut row: Vec<String> = cols
            .iter()
            .map(|c| f.get(*c).and_then(Value::as_str).unwrap_or("-").to_owned())
            .collect();
        row.extend([
            count(u(f, "Packets")),
            bytes(u(f, "Bytes")),
            format!("{:.1} s", u(f, "AgeMs") as f64 / 1000.0),
            format!("{:.1} s", u(f, "IdleMs") as f64 / 1000.0),
        ]);
        rows.push(row);
    }
    format!(
        "Flows ({}, most bytes first)\n{}",
        items.len(),
        table(&rows)
    )
}

/// Any answer as tab-separated text: each array of objects as a header line and one line
/// per object (columns: the union of their keys, sorted), other values as `key<TAB>value`.
pub fn text(v: &Value) -> String {
    let mut out = String::new();
    let Value::Object(m) = v else {
        return format!("{}\n", scalar(v));
    };
    for (k, x) in m {
        match x {
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_object) => {
                let mut cols: Vec<&String> = a
                    .iter()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.keys())
                    .collect();
                cols.sort();
                cols.dedup();
                out.push_str(&format!(
                    "{k}\t{}\n",
                    cols.iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join("\t")
                ));
                for o in a {
                    let cells: Vec<String> = cols.iter().map(|c| scalar(&o[c.as_str()])).collect();
                    out.push_str(&format!("{k}\t{}\n", cells.join("\t")));
                }
            }
            Value::Object(inner) => {
                for (ik, iv) in inner {
                    out.push_str(&format!("{k}.{ik}\t{}\n", scalar(iv)));
                }
            }
            other => out.push_str(&format!("{k}\t{}\n", scalar(other))),
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.replace(['\t', '\n'], " "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(rx: u64, bytes_ep: u64) -> Value {
        json!({
            "Workers": 2,
            "Totals": {"rx_packets": rx, "rx_bytes": rx * 100, "tx_packets": rx, "tx_bytes": rx * 100,
                       "active_flows": 3, "new_flows": 10, "expired_flows": 1,
                       "drops": {"no_listener": 2, "security_group": 9, "malformed": 0}},
            "Endpoints": [
                {"VpcEndpointId": "vpce-small", "ServiceId": "vpce-svc-1", "ActiveFlows": 1, "NewFlows": 1,
                 "Packets": 5, "Bytes": 10, "Drops": {}},
                {"VpcEndpointId": "vpce-big", "ServiceId": "vpce-svc-1", "ActiveFlows": 2, "NewFlows": 9,
                 "Packets": 50, "Bytes": bytes_ep, "Drops": {"policy": 4}}
            ],
            "Services": [{"ServiceId": "vpce-svc-1", "ActiveFlows": 3, "NewFlows": 10, "Packets": 55,
                          "Bytes": bytes_ep + 10, "Drops": {}}],
            "Targets": [{"ServiceId": "vpce-svc-1", "Target": "10.2.0.11:8080", "ActiveFlows": 3}]
        })
    }

    #[test]
    fn units_and_counts() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(rate(12_300.0, "pps"), "12.3 kpps");
        assert_eq!(rate(4_500_000_000.0, "bit/s"), "4.5 Gbit/s");
    }

    #[test]
    fn stats_sorts_rows_and_drops_and_shows_units() {
        let s = stats(&answer(2_000_000, 5 << 20), None);
        assert!(s.contains("Totals (2 worker(s))"), "{s}");
        assert!(s.contains("2,000,000"), "{s}");
        assert!(s.contains("190.7 MiB"), "{s}");
        // Drops: most first, zeros left out.
        let sg = s.find("security_group").unwrap();
        let nl = s.find("no_listener").unwrap();
        assert!(sg < nl && !s.contains("malformed"), "{s}");
        // Endpoints by bytes.
        assert!(
            s.find("vpce-big").unwrap() < s.find("vpce-small").unwrap(),
            "{s}"
        );
        assert!(s.contains("5.0 MiB") && s.contains("policy=4"), "{s}");
        assert!(s.contains("10.2.0.11:8080"), "{s}");
        assert!(
            !s.contains("kpps"),
            "no rates without a previous answer: {s}"
        );
    }

    #[test]
    fn watching_gives_rates_from_two_answers() {
        let before = answer(1_000_000, 1 << 20);
        let now = answer(1_100_000, 2 << 20);
        let s = stats(&now, Some((&before, 2.0)));
        assert!(s.contains("50.0 kpps"), "100k packets in 2 s: {s}");
        // 100 bytes a packet: 40 Mbit/s.
        assert!(s.contains("40.0 Mbit/s"), "{s}");
        // The endpoint grew by 1 MiB in 2 s: 4.2 Mbit/s.
        assert!(s.contains("4.2 Mbit/s"), "{s}");
    }

    #[test]
    fn flows_most_bytes_first_and_text_is_tab_separated() {
        let v = json!({"Flows": [
            {"VpcEndpointId": "vpce-a", "Protocol": "tcp", "State": "established", "Packets": 2, "Bytes": 100, "AgeMs": 1500, "IdleMs": 10},
            {"VpcEndpointId": "vpce-b", "Protocol": "udp", "State": "-", "Packets": 9, "Bytes": 9000, "AgeMs": 1, "IdleMs": 1}
        ]});
        let s = flows(&v);
        assert!(s.find("vpce-b").unwrap() < s.find("vpce-a").unwrap(), "{s}");
        assert!(s.contains("8.8 KiB") && s.contains("1.5 s"), "{s}");
        assert_eq!(flows(&json!({"Flows": []})), "no flows\n");
        let t = text(&v);
        let first = t.lines().next().unwrap();
        assert_eq!(
            first,
            "Flows\tAgeMs\tBytes\tIdleMs\tPackets\tProtocol\tState\tVpcEndpointId"
        );
        assert!(
            t.lines().nth(1).unwrap().starts_with("Flows\t1500\t100\t"),
            "{t}"
        );
        assert_eq!(text(&json!({"Return": true})), "Return\ttrue\n");
    }
}
