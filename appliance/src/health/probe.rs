//! One health probe: the smallest TCP client that can tell a listening target from a dead
//! one, and read an HTTP status line.
//!
//! `tcp`: SYN; a SYN-ACK that acknowledges it is success (the handshake completed on the
//! target's side), answered with a RST so the target keeps no connection; a RST is a
//! refusal. `http`: after the SYN-ACK, one segment carries the ACK and a `GET` with
//! `Connection: close`; the target's first bytes in sequence must be a status line, whose
//! code decides; then a RST. The probe never acknowledges data (it only needs the first
//! bytes, and the RST ends the target's retransmissions), and it resends its last segment
//! with a doubling timeout until the check's own timeout ends it.

use std::net::IpAddr;

use crate::wire::tcp::{TcpFlags, TcpRepr};

use super::link::{ProbeReply, ProbeSegment};

/// First retransmission timeout (RFC 6298 §2.1's initial RTO).
const FIRST_RTO_MS: u64 = 1000;
/// The window a probe offers: enough for any status line; it reads no more.
const WINDOW: u16 = 8192;
/// Bytes of a response the probe looks at for a status line.
pub const STATUS_BYTES: usize = 64;

/// What a check asks of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    /// The request's bytes, and the status codes that pass.
    Http {
        request: Vec<u8>,
        matcher: mgmt::model::Matcher,
    },
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// No answer (or no complete answer) within the timeout.
    Timeout,
    /// The target refused or reset the connection, or closed it before a status line.
    Failed(&'static str),
    /// An HTTP status outside the matcher.
    Mismatch(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    SynSent,
    /// The request went out; `next` is the target's next sequence number, `got` the
    /// response bytes so far, in order.
    Requested {
        next: u32,
        got: Vec<u8>,
    },
}

/// One probe in flight.
#[derive(Debug, Clone)]
pub struct Probe {
    attachment: u16,
    src: IpAddr,
    dst: IpAddr,
    local_port: u16,
    dst_port: u16,
    isn: u32,
    kind: Kind,
    phase: Phase,
    deadline_ms: u64,
    resend_ms: u64,
    rto_ms: u64,
    last: ProbeSegment,
}

impl Probe {
    /// Starts a probe from `src:local_port` on `attachment` to `dst:dst_port`, with initial
    /// sequence number `isn`; returns it and its SYN.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        attachment: u16,
        src: IpAddr,
        local_port: u16,
        dst: IpAddr,
        dst_port: u16,
        isn: u32,
        kind: Kind,
        now_ms: u64,
        timeout_ms: u64,
    ) -> (Probe, ProbeSegment) {
        let syn = ProbeSegment {
            attachment,
            src,
            dst,
            tcp: TcpRepr {
                src_port: local_port,
                dst_port,
                seq_number: isn,
                ack_number: 0,
                flags: TcpFlags::SYN,
                window_len: WINDOW,
                urgent_at: 0,
            },
            payload: Vec::new(),
        };
        let probe = Probe {
            attachment,
            src,
            dst,
            local_port,
            dst_port,
            isn,
            kind,
            phase: Phase::SynSent,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            resend_ms: now_ms + FIRST_RTO_MS,
            rto_ms: FIRST_RTO_MS,
            last: syn.clone(),
        };
        (probe, syn)
    }

    /// The local port (the checker's key for replies).
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Time passing: the timeout ends the probe; a due retransmission is returned.
    pub fn on_timer(&mut self, now_ms: u64) -> Result<Option<ProbeSegment>, Outcome> {
        if now_ms >= self.deadline_ms {
            return Err(Outcome::Timeout);
        }
        if now_ms < self.resend_ms {
            return Ok(None);
        }
        self.rto_ms = self.rto_ms.saturating_mul(2);
        self.resend_ms = now_ms.saturating_add(self.rto_ms);
        Ok(Some(self.last.clone()))
    }

    /// A segment for this probe's port. Returns segments to send (a reply to a SYN-ACK,
    /// the closing RST) and, when the probe is decided, its outcome.
    pub fn on_reply(&mut self, r: &ProbeReply) -> (Option<ProbeSegment>, Option<Outcome>) {
        if r.src != self.dst
            || r.dst != self.src
            || r.tcp.src_port != self.dst_port
            || r.tcp.dst_port != self.local_port
        {
            return (None, None);
        }
        let f = r.tcp.flags;
        let sent_end = self.isn.wrapping_add(1).wrapping_add(self.request_len());
        if f.contains(TcpFlags::RST) {
            // RFC 9293 §3.10.7.3: in SYN-SENT a RST counts only if it acknowledges the SYN;
            // later, only if its sequence number is the one expected.
            let counts = match &self.phase {
                Phase::SynSent => {
                    f.contains(TcpFlags::ACK) && r.tcp.ack_number == self.isn.wrapping_add(1)
                }
                Phase::Requested { next, .. } => r.tcp.seq_number == *next,
            };
            return if counts {
                (None, Some(Outcome::Failed(self.refusal())))
            } else {
                (None, None)
            };
        }
        match &mut self.phase {
            Phase::SynSent => {
                if !f.contains(TcpFlags::SYN | TcpFlags::ACK)
                    || r.tcp.ack_number != self.isn.wrapping_add(1)
                {
                    return (None, None);
                }
                let next = r.tcp.seq_number.wrapping_add(1);
                match &self.kind {
                    Kind::Tcp => (
                        Some(self.rst(self.isn.wrapping_add(1))),
                        Some(Outcome::Success),
                    ),
                    Kind::Http { request, .. } => {
                        let seg = self.segment(
                            self.isn.wrapping_add(1),
                            next,
                            TcpFlags::ACK | TcpFlags::PSH,
                            request.clone(),
                        );
                        self.phase = Phase::Requested {
                            next,
                            got: Vec::with_capacity(STATUS_BYTES),
                        };
                        self.last = seg.clone();
                        self.rto_ms = FIRST_RTO_MS;
                        (Some(seg), None)
                    }
                }
            }
            Phase::Requested { next, got } => {
                // The SYN-ACK again: our request (with its ACK) was lost.
                if f.contains(TcpFlags::SYN) {
                    return (Some(self.last.clone()), None);
                }
                if r.tcp.seq_number == *next && r.payload_len > 0 {
                    let room = STATUS_BYTES.saturating_sub(got.len());
                    let head = r.head();
                    got.extend_from_slice(&head[..head.len().min(room)]);
                    *next = next.wrapping_add(u32::from(r.payload_len));
                    // Only what was kept can be read on: a reply longer than the kept
                    // head leaves a gap, so decide now.
                    let partial = usize::from(r.payload_len) > head.len();
                    if let Some(outcome) = self.status(partial) {
                        return (Some(self.rst(sent_end)), Some(outcome));
                    }
                }
                if f.contains(TcpFlags::FIN) && r.tcp.seq_number == self.next_expected() {
                    return (
                        Some(self.rst(sent_end)),
                        Some(Outcome::Failed(
                            "the target closed the connection before an HTTP status line",
                        )),
                    );
                }
                (None, None)
            }
        }
    }

    /// The RST that ends the probe when it is dropped undecided (a timeout, a target
    /// that went away), so the target does not keep a half-open connection.
    pub fn abort(&self) -> ProbeSegment {
        let seq = match self.phase {
            Phase::SynSent => self.isn.wrapping_add(1),
            Phase::Requested { .. } => self.isn.wrapping_add(1).wrapping_add(self.request_len()),
        };
        self.rst(seq)
    }

    /// Whether the probe got past the handshake (an aborted one needs a RST).
    pub fn connected(&self) -> bool {
        matches!(self.phase, Phase::Requested { .. })
    }

    fn refusal(&self) -> &'static str {
        match self.phase {
            Phase::SynSent => "the target refused the connection",
            Phase::Requested { .. } => "the target reset the connection before an HTTP status line",
        }
    }

    fn next_expected(&self) -> u32 {
        match &self.phase {
            Phase::Requested { next, .. } => *next,
            Phase::SynSent => 0,
        }
    }

    fn request_len(&self) -> u32 {
        match &self.kind {
            Kind::Http { request, .. } => u32::try_from(request.len()).unwrap_or(u32::MAX),
            Kind::Tcp => 0,
        }
    }

    /// The outcome the response so far decides, if any. `partial`: no more bytes will
    /// be read.
    fn status(&self, partial: bool) -> Option<Outcome> {
        let (Phase::Requested { got, .. }, Kind::Http { matcher, .. }) = (&self.phase, &self.kind)
        else {
            return None;
        };
        match parse_status(got) {
            Status::Code(code) if matcher.matches(code) => Some(Outcome::Success),
            Status::Code(code) => Some(Outcome::Mismatch(code)),
            Status::Invalid => Some(Outcome::Failed(
                "the target's answer is not an HTTP response",
            )),
            Status::NeedMore if partial || got.len() >= STATUS_BYTES => Some(Outcome::Failed(
                "the target's answer is not an HTTP response",
            )),
            Status::NeedMore => None,
        }
    }

    fn rst(&self, seq: u32) -> ProbeSegment {
        self.segment(seq, 0, TcpFlags::RST, Vec::new())
    }

    fn segment(&self, seq: u32, ack: u32, flags: TcpFlags, payload: Vec<u8>) -> ProbeSegment {
        ProbeSegment {
            attachment: self.attachment,
            src: self.src,
            dst: self.dst,
            tcp: TcpRepr {
                src_port: self.local_port,
                dst_port: self.dst_port,
                seq_number: seq,
                ack_number: ack,
                flags,
                window_len: if flags.contains(TcpFlags::RST) {
                    0
                } else {
                    WINDOW
                },
                urgent_at: 0,
            },
            payload,
        }
    }
}

/// What the start of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(u16),
    NeedMore,
    Invalid,
}

/// Reads `HTTP/1.x NNN` (RFC 9112 §4: `HTTP-version SP status-code SP`) from the start of
/// a response.
pub fn parse_status(got: &[u8]) -> Status {
    const PREFIX: &[u8] = b"HTTP/";
    let want = PREFIX.len() + 3 + 1 + 3; // "HTTP/" "1.1" " " "200"
    let n = got.len().min(PREFIX.len());
    if got[..n] != PREFIX[..n] {
        return Status::Invalid;
    }
    if got.len() < want {
        return Status::NeedMore;
    }
    let version = &got[5..8];
    if !(version[0].is_ascii_digit() && version[1] == b'.' && version[2].is_ascii_digit())
        || got[8] != b' '
    {
        return Status::Invalid;
    }
    let digits = &got[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Status::Invalid;
    }
    // A fourth digit would make it something else.
    if got.get(12).is_some_and(u8::is_ascii_digit) {
        return Status::Invalid;
    }
    Status::Code(
        digits
            .iter()
            .fold(0u16, |a, d| a * 10 + u16::from(d - b'0')),
    )
}

/// The bytes of the `GET` an `http` check sends to `host:port`.
pub fn http_request(path: &str, host: IpAddr, port: u16) -> Vec<u8> {
    // An IPv6 host in brackets (RFC 7230 §5.4, RFC 3986 §3.2.2).
    let host = std::net::SocketAddr::new(host, port);
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: privlink-HealthChecker/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::link::REPLY_PAYLOAD;

    const OWN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 1));
    const TARGET: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 11));

    fn reply(flags: TcpFlags, seq: u32, ack: u32, payload: &[u8]) -> ProbeReply {
        let mut head = [0u8; REPLY_PAYLOAD];
        let n = payload.len().min(REPLY_PAYLOAD);
        head[..n].copy_from_slice(&payload[..n]);
        ProbeReply {
            attachment: 1,
            src: TARGET,
            dst: OWN,
            tcp: TcpRepr {
                src_port: 8080,
                dst_port: 40000,
                seq_number: seq,
                ack_number: ack,
                flags,
                window_len: 1000,
                urgent_at: 0,
            },
            payload_len: u16::try_from(payload.len()).unwrap(),
            head,
        }
    }

    fn start(kind: Kind) -> (Probe, ProbeSegment) {
        Probe::start(1, OWN, 40000, TARGET, 8080, 1000, kind, 0, 2000)
    }

    fn http(matcher: &str) -> Kind {
        Kind::Http {
            request: http_request("/health", TARGET, 8080),
            matcher: mgmt::model::Matcher::parse(matcher).unwrap(),
        }
    }

    #[test]
    fn a_tcp_check_succeeds_on_the_syn_ack_and_resets() {
        let (mut p, syn) = start(Kind::Tcp);
        assert_eq!(syn.tcp.flags, TcpFlags::SYN);
        assert_eq!(syn.tcp.seq_number, 1000);
        let (seg, out) = p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        assert_eq!(out, Some(Outcome::Success));
        let rst = seg.unwrap();
        assert_eq!(rst.tcp.flags, TcpFlags::RST);
        assert_eq!(rst.tcp.seq_number, 1001);
    }

    #[test]
    fn a_refusal_counts_only_when_it_acknowledges_the_syn() {
        let (mut p, _) = start(Kind::Tcp);
        let (_, out) = p.on_reply(&reply(TcpFlags::RST | TcpFlags::ACK, 0, 77, b""));
        assert_eq!(out, None, "a RST for another SYN is ignored");
        let (_, out) = p.on_reply(&reply(TcpFlags::RST | TcpFlags::ACK, 0, 1001, b""));
        assert!(matches!(out, Some(Outcome::Failed(_))));
    }

    #[test]
    fn segments_of_other_connections_are_ignored() {
        let (mut p, _) = start(Kind::Tcp);
        let mut r = reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"");
        r.tcp.src_port = 9999;
        assert_eq!(p.on_reply(&r), (None, None));
        let mut r = reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"");
        r.src = IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 12));
        assert_eq!(p.on_reply(&r), (None, None));
        let r = reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 999, b"");
        assert_eq!(p.on_reply(&r), (None, None), "a SYN-ACK of another SYN");
    }

    #[test]
    fn an_http_check_reads_the_status_line() {
        let (mut p, _) = start(http("200-399"));
        let (seg, out) = p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        assert_eq!(out, None);
        let req = seg.unwrap();
        assert_eq!(req.tcp.flags, TcpFlags::ACK | TcpFlags::PSH);
        assert_eq!(req.tcp.ack_number, 5001);
        assert!(req
            .payload
            .starts_with(b"GET /health HTTP/1.1\r\nHost: 10.2.0.11:8080\r\n"));
        let len = u32::try_from(req.payload.len()).unwrap();
        // Split across two segments, and one out of order first (ignored).
        assert_eq!(
            p.on_reply(&reply(TcpFlags::ACK, 5010, 0, b"xx")),
            (None, None)
        );
        assert_eq!(
            p.on_reply(&reply(TcpFlags::ACK, 5001, 0, b"HTTP/1.")),
            (None, None)
        );
        let (seg, out) = p.on_reply(&reply(TcpFlags::ACK, 5008, 0, b"1 302 Found\r\n"));
        assert_eq!(out, Some(Outcome::Success));
        let rst = seg.unwrap();
        assert_eq!(rst.tcp.flags, TcpFlags::RST);
        assert_eq!(rst.tcp.seq_number, 1001 + len);
    }

    #[test]
    fn an_http_status_outside_the_matcher_is_a_mismatch() {
        let (mut p, _) = start(http("200"));
        p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        let (_, out) = p.on_reply(&reply(
            TcpFlags::ACK | TcpFlags::PSH,
            5001,
            0,
            b"HTTP/1.0 500 Internal Server Error\r\n\r\n",
        ));
        assert_eq!(out, Some(Outcome::Mismatch(500)));
    }

    #[test]
    fn garbage_or_a_close_before_the_status_fails() {
        let (mut p, _) = start(http("200"));
        p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        let (_, out) = p.on_reply(&reply(TcpFlags::ACK, 5001, 0, b"SSH-2.0-OpenSSH\r\n"));
        assert!(matches!(out, Some(Outcome::Failed(_))));

        let (mut p, _) = start(http("200"));
        p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        let (_, out) = p.on_reply(&reply(TcpFlags::FIN | TcpFlags::ACK, 5001, 0, b""));
        assert!(matches!(out, Some(Outcome::Failed(_))));
    }

    #[test]
    fn a_lost_request_is_sent_again_when_the_syn_ack_repeats() {
        let (mut p, _) = start(http("200"));
        let (first, _) = p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        let (again, out) = p.on_reply(&reply(TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""));
        assert_eq!(out, None);
        assert_eq!(first, again);
    }

    #[test]
    fn the_last_segment_is_resent_with_a_doubling_timeout_until_the_deadline() {
        let (mut p, syn) = Probe::start(1, OWN, 40000, TARGET, 8080, 1000, Kind::Tcp, 0, 5000);
        assert_eq!(p.on_timer(999), Ok(None));
        assert_eq!(p.on_timer(1000), Ok(Some(syn.clone())));
        assert_eq!(p.on_timer(2999), Ok(None));
        assert_eq!(p.on_timer(3000), Ok(Some(syn)));
        assert_eq!(p.on_timer(5000), Err(Outcome::Timeout));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Status::Code(200));
        assert_eq!(parse_status(b"HTTP/1.0 404"), Status::Code(404));
        assert_eq!(parse_status(b"HTTP/1.1 20"), Status::NeedMore);
        assert_eq!(parse_status(b"HTT"), Status::NeedMore);
        assert_eq!(parse_status(b""), Status::NeedMore);
        assert_eq!(parse_status(b"HTTX/1.1 200"), Status::Invalid);
        assert_eq!(parse_status(b"HTTP/1.1 2000"), Status::Invalid);
        assert_eq!(parse_status(b"HTTP/1.1 2x0"), Status::Invalid);
        assert_eq!(parse_status(b"HTTP/11 200 "), Status::Invalid);
    }
}
