//! TCP connection tracking for translated flows: a conntrack-lite state machine.
//!
//! It is *liberal*: it follows the SYN/ACK/FIN/RST flags seen in each direction and checks
//! no sequence number of data segments (the endpoints do that; a NAT that drops "out of
//! window" segments breaks more connections than it protects). Its jobs are to choose the
//! idle timeout of a flow (short while half-open or closing, long when established) and to
//! tell the worker when a SYN may start a fresh connection on an old 5-tuple. The one
//! sequence check is the RST's ([`super::Flow::rst_in_window`], RFC 5961 §3): a blind RST
//! must not end a flow the endpoints would keep.
//!
//! "Consumer" is the side that opened the connection (the flow's forward direction);
//! "provider" is the target answering through the SNAT address.

use super::Timeouts;

/// The TCP flags that drive [`TcpState::advance`]: SYN, ACK, FIN and RST of the header's
/// flags byte, in their header bits (PSH, URG, ECE and CWR do not matter and are cleared).
/// One byte, not four bools: a copy of four bools is four byte stores that a later word
/// load cannot be forwarded from, a stall on every packet the flow nodes see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// FIN bit of the TCP header's flags byte (offset 13).
    pub const FIN_BIT: u8 = 0x01;
    /// SYN bit of the flags byte.
    pub const SYN_BIT: u8 = 0x02;
    /// RST bit of the flags byte.
    pub const RST_BIT: u8 = 0x04;
    /// ACK bit of the flags byte.
    pub const ACK_BIT: u8 = 0x10;

    /// A bare SYN (connection request).
    pub const SYN: TcpFlags = TcpFlags::from_bits(Self::SYN_BIT);
    /// SYN+ACK (the answer to a SYN).
    pub const SYN_ACK: TcpFlags = TcpFlags::from_bits(Self::SYN_BIT | Self::ACK_BIT);
    /// A bare ACK (data or pure acknowledgement).
    pub const ACK: TcpFlags = TcpFlags::from_bits(Self::ACK_BIT);
    /// FIN+ACK (the usual FIN).
    pub const FIN_ACK: TcpFlags = TcpFlags::from_bits(Self::FIN_BIT | Self::ACK_BIT);
    /// A bare RST.
    pub const RST: TcpFlags = TcpFlags::from_bits(Self::RST_BIT);

    /// The flags of a TCP header's flags byte (byte 13 of the header).
    #[inline]
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits & (Self::SYN_BIT | Self::ACK_BIT | Self::FIN_BIT | Self::RST_BIT))
    }

    /// SYN: opens a connection.
    #[inline]
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN_BIT != 0
    }

    /// ACK: acknowledges the peer (set on every segment after the first SYN).
    #[inline]
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK_BIT != 0
    }

    /// FIN: the sender has no more data.
    #[inline]
    pub const fn fin(self) -> bool {
        self.0 & Self::FIN_BIT != 0
    }

    /// RST: aborts the connection.
    #[inline]
    pub const fn rst(self) -> bool {
        self.0 & Self::RST_BIT != 0
    }

    /// A connection request: SYN without ACK, FIN or RST. The only segment that may create
    /// a TCP flow (anything else for an unknown flow is answered with RST) or, with
    /// [`TcpState::allows_reopen`], replace a finished one.
    #[inline]
    pub const fn is_connection_request(&self) -> bool {
        self.0 == Self::SYN_BIT
    }
}

/// Where a tracked TCP connection stands. One byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The consumer sent a SYN; no answer yet. The state of every new TCP flow.
    SynSent,
    /// The provider answered SYN+ACK (or SYN, for a simultaneous open); waiting for the
    /// consumer's ACK that completes the handshake.
    SynReceived,
    /// Handshake complete.
    Established,
    /// The consumer sent a FIN; the provider may still send data (half-close).
    FinWaitConsumer,
    /// The provider sent a FIN; the consumer may still send data.
    FinWaitProvider,
    /// Both sides sent a FIN, the consumer first; waiting for the last ACK.
    ClosingConsumer,
    /// Both sides sent a FIN, the provider first.
    ClosingProvider,
    /// Both FINs sent and an ACK seen after them, the consumer's FIN first: the connection
    /// is over (the consumer holds it in TIME_WAIT, the target nothing); the flow lingers
    /// briefly for retransmitted FINs and ACKs.
    TimeWaitConsumer,
    /// As [`TimeWaitConsumer`](Self::TimeWaitConsumer), the provider's FIN first: the
    /// target holds the connection in TIME_WAIT.
    TimeWaitProvider,
    /// Aborted by an RST from either side; lingers briefly for in-flight segments.
    Closed,
}

impl TcpState {
    /// Every state, in declaration order (a state's index is its place here).
    pub const ALL: [TcpState; 10] = [
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::FinWaitConsumer,
        TcpState::FinWaitProvider,
        TcpState::ClosingConsumer,
        TcpState::ClosingProvider,
        TcpState::TimeWaitConsumer,
        TcpState::TimeWaitProvider,
        TcpState::Closed,
    ];

    /// The state's number, for the sync link.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The state with number `i`.
    pub fn from_index(i: u8) -> Option<TcpState> {
        Self::ALL.get(usize::from(i)).copied()
    }

    /// The state after a segment with `flags`, sent by the consumer (`from_consumer`) or
    /// by the provider. Never fails: segments that make no sense in a state leave it as is.
    ///
    /// | state | segment | next |
    /// |---|---|---|
    /// | any | RST from either side | `Closed` |
    /// | `SynSent` | SYN (+ACK or not) from provider | `SynReceived` |
    /// | `SynReceived` | ACK without SYN from consumer | `Established` (`FinWait` if FIN) |
    /// | `SynReceived`, `Established` | FIN from X | `FinWaitX` |
    /// | `FinWaitX` | FIN from the other side | `ClosingX` |
    /// | `ClosingX` | ACK without FIN from either side | `TimeWaitX` |
    /// | `TimeWait`, `Closed` | connection request from consumer | `SynSent` (reopen) |
    /// | otherwise | | unchanged |
    #[must_use]
    pub fn advance(self, from_consumer: bool, flags: TcpFlags) -> TcpState {
        if flags.rst() {
            return TcpState::Closed;
        }
        match self {
            TcpState::SynSent => {
                // The provider's SYN+ACK, or a bare SYN in a simultaneous open. Anything
                // else (a retransmitted SYN, a stray ACK) waits for the answer.
                if !from_consumer && flags.syn() {
                    TcpState::SynReceived
                } else {
                    self
                }
            }
            TcpState::SynReceived => {
                if from_consumer && flags.ack() && !flags.syn() {
                    // The handshake's final ACK, possibly already carrying a FIN.
                    if flags.fin() {
                        TcpState::FinWaitConsumer
                    } else {
                        TcpState::Established
                    }
                } else if !from_consumer && flags.fin() {
                    // The provider gave up before the handshake finished.
                    TcpState::FinWaitProvider
                } else {
                    // Retransmitted SYN or SYN+ACK.
                    self
                }
            }
            TcpState::Established => {
                if !flags.fin() {
                    self
                } else if from_consumer {
                    TcpState::FinWaitConsumer
                } else {
                    TcpState::FinWaitProvider
                }
            }
            TcpState::FinWaitConsumer | TcpState::FinWaitProvider => {
                let by_consumer = self == TcpState::FinWaitConsumer;
                if flags.fin() && from_consumer != by_consumer {
                    if by_consumer {
                        TcpState::ClosingConsumer
                    } else {
                        TcpState::ClosingProvider
                    }
                } else {
                    // Data of a half-closed connection, ACKs, or a retransmitted FIN.
                    self
                }
            }
            TcpState::ClosingConsumer | TcpState::ClosingProvider => {
                // Without sequence numbers an ACK cannot be matched to the last FIN; the
                // first FIN-less ACK after both FINs is taken as the last one. If it was
                // not, a retransmitted FIN still finds the flow during TimeWait.
                if !(flags.ack() && !flags.fin() && !flags.syn()) {
                    self
                } else if self == TcpState::ClosingConsumer {
                    TcpState::TimeWaitConsumer
                } else {
                    TcpState::TimeWaitProvider
                }
            }
            TcpState::TimeWaitConsumer | TcpState::TimeWaitProvider | TcpState::Closed => {
                if from_consumer && flags.is_connection_request() {
                    TcpState::SynSent
                } else {
                    self
                }
            }
        }
    }

    /// True when a connection request from the consumer on this flow starts a *new*
    /// connection (the old one is over): the worker should end the flow and create a new
    /// one (new target pick, new SNAT port) rather than reuse the old translation.
    #[inline]
    pub fn allows_reopen(&self) -> bool {
        matches!(
            self,
            TcpState::TimeWaitConsumer | TcpState::TimeWaitProvider | TcpState::Closed
        )
    }

    /// Whether the target may still hold this connection's 4-tuple after the flow ends
    /// (in TIME_WAIT, or not closed at all), so its SNAT port must not be reused towards
    /// it for a while: every state but a connection never answered, one reset, and one the
    /// consumer closed first and both finished closing (then the target, the side that
    /// closed second, keeps nothing).
    #[inline]
    pub fn target_may_linger(&self) -> bool {
        !matches!(
            self,
            TcpState::SynSent | TcpState::Closed | TcpState::TimeWaitConsumer
        )
    }

    /// True before the handshake completed (`SynSent`, `SynReceived`).
    #[inline]
    pub fn is_half_open(&self) -> bool {
        matches!(self, TcpState::SynSent | TcpState::SynReceived)
    }

    /// True once the handshake completed and before any FIN or RST.
    #[inline]
    pub fn is_established(&self) -> bool {
        matches!(self, TcpState::Established)
    }

    /// Idle time after which a flow in this state expires.
    #[inline]
    pub fn timeout_ms(&self, timeouts: &Timeouts) -> u64 {
        match self {
            TcpState::SynSent | TcpState::SynReceived => timeouts.tcp_syn_ms,
            TcpState::Established => timeouts.tcp_established_ms,
            TcpState::FinWaitConsumer
            | TcpState::FinWaitProvider
            | TcpState::ClosingConsumer
            | TcpState::ClosingProvider => timeouts.tcp_closing_ms,
            TcpState::TimeWaitConsumer | TcpState::TimeWaitProvider | TcpState::Closed => {
                timeouts.tcp_closed_ms
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TcpState::*;
    use super::*;

    const C: bool = true; // from consumer
    const P: bool = false; // from provider

    const FIN: TcpFlags = TcpFlags::from_bits(TcpFlags::FIN_BIT);
    const RST_ACK: TcpFlags = TcpFlags::from_bits(TcpFlags::RST_BIT | TcpFlags::ACK_BIT);
    const SYN_FIN: TcpFlags = TcpFlags::from_bits(TcpFlags::SYN_BIT | TcpFlags::FIN_BIT);
    const NONE: TcpFlags = TcpFlags::from_bits(0);

    const ALL_STATES: [TcpState; 10] = [
        SynSent,
        SynReceived,
        Established,
        FinWaitConsumer,
        FinWaitProvider,
        ClosingConsumer,
        ClosingProvider,
        TimeWaitConsumer,
        TimeWaitProvider,
        Closed,
    ];
    const CLOSING_C: TcpState = ClosingConsumer;
    const CLOSING_P: TcpState = ClosingProvider;
    const TIME_WAIT_C: TcpState = TimeWaitConsumer;
    const TIME_WAIT_P: TcpState = TimeWaitProvider;

    fn run(start: TcpState, steps: &[(bool, TcpFlags)]) -> TcpState {
        steps.iter().fold(start, |s, &(dir, f)| s.advance(dir, f))
    }

    #[test]
    fn state_numbers_round_trip() {
        for (i, s) in (0u8..).zip(TcpState::ALL) {
            assert_eq!(s.index(), i);
            assert_eq!(TcpState::from_index(i), Some(s));
        }
        assert_eq!(TcpState::from_index(10), None);
    }

    #[test]
    fn one_byte() {
        assert_eq!(std::mem::size_of::<TcpState>(), 1);
        assert_eq!(std::mem::size_of::<TcpFlags>(), 1);
    }

    #[test]
    fn flags_from_header_byte() {
        let f = TcpFlags::from_bits(0x12);
        assert!(f.syn() && f.ack() && !f.fin() && !f.rst());
        // PSH|ACK|FIN, with URG/ECE/CWR noise ignored.
        assert_eq!(TcpFlags::from_bits(0x19 | 0xe0), TcpFlags::FIN_ACK);
        assert!(TcpFlags::SYN.is_connection_request());
        for f in [TcpFlags::SYN_ACK, SYN_FIN, TcpFlags::ACK, NONE, RST_ACK] {
            assert!(!f.is_connection_request(), "{f:?}");
        }
        assert!(!TcpFlags::from_bits(TcpFlags::SYN_BIT | TcpFlags::RST_BIT).is_connection_request());
    }

    #[test]
    fn normal_open_and_close_consumer_first() {
        let mut s = SynSent;
        s = s.advance(C, TcpFlags::SYN);
        assert_eq!(s, SynSent, "retransmitted SYN");
        s = s.advance(P, TcpFlags::SYN_ACK);
        assert_eq!(s, SynReceived);
        s = s.advance(C, TcpFlags::ACK);
        assert_eq!(s, Established);
        s = run(s, &[(C, TcpFlags::ACK), (P, TcpFlags::ACK)]);
        assert_eq!(s, Established, "data");
        s = s.advance(C, TcpFlags::FIN_ACK);
        assert_eq!(s, FinWaitConsumer);
        s = s.advance(P, TcpFlags::ACK);
        assert_eq!(s, FinWaitConsumer, "ACK of the FIN, half-close");
        s = s.advance(P, TcpFlags::ACK);
        assert_eq!(s, FinWaitConsumer, "provider still sending");
        s = s.advance(C, TcpFlags::FIN_ACK);
        assert_eq!(s, FinWaitConsumer, "retransmitted FIN");
        s = s.advance(P, TcpFlags::FIN_ACK);
        assert_eq!(s, CLOSING_C);
        s = s.advance(P, TcpFlags::FIN_ACK);
        assert_eq!(s, CLOSING_C, "retransmitted FIN");
        s = s.advance(C, TcpFlags::ACK);
        assert_eq!(s, TIME_WAIT_C);
        assert!(s.allows_reopen());
        // The target closed second: it keeps nothing, its port may be reused at once.
        assert!(!s.target_may_linger());
    }

    #[test]
    fn normal_close_provider_first() {
        let s = run(
            SynSent,
            &[
                (P, TcpFlags::SYN_ACK),
                (C, TcpFlags::ACK),
                (P, TcpFlags::FIN_ACK),
            ],
        );
        assert_eq!(s, FinWaitProvider);
        let s = run(s, &[(C, TcpFlags::ACK), (C, TcpFlags::FIN_ACK)]);
        assert_eq!(s, CLOSING_P);
        let s = s.advance(P, TcpFlags::ACK);
        assert_eq!(s, TIME_WAIT_P);
        // The target closed first: it holds the connection in TIME_WAIT.
        assert!(s.target_may_linger());
    }

    #[test]
    fn simultaneous_close() {
        let s = run(
            Established,
            &[(C, TcpFlags::FIN_ACK), (P, TcpFlags::FIN_ACK)],
        );
        assert_eq!(s, CLOSING_C);
        let s = run(s, &[(C, TcpFlags::ACK), (P, TcpFlags::ACK)]);
        assert_eq!(s, TIME_WAIT_C);
        // Bare FINs (no ACK) count too.
        assert_eq!(run(Established, &[(P, FIN), (C, FIN)]), CLOSING_P);
    }

    #[test]
    fn simultaneous_open() {
        // Provider sends its own SYN instead of SYN+ACK.
        let s = SynSent.advance(P, TcpFlags::SYN);
        assert_eq!(s, SynReceived);
        assert_eq!(s.advance(C, TcpFlags::ACK), Established);
    }

    #[test]
    fn fin_with_final_handshake_ack() {
        assert_eq!(SynReceived.advance(C, TcpFlags::FIN_ACK), FinWaitConsumer);
        assert_eq!(SynReceived.advance(P, TcpFlags::FIN_ACK), FinWaitProvider);
    }

    #[test]
    fn half_open_stays_short_lived() {
        let t = Timeouts::default();
        // No answer: retransmitted SYNs and stray segments keep SynSent.
        for (dir, f) in [
            (C, TcpFlags::SYN),
            (C, TcpFlags::ACK),
            (P, TcpFlags::ACK),
            (C, TcpFlags::FIN_ACK),
            (P, FIN),
            (C, NONE),
        ] {
            assert_eq!(SynSent.advance(dir, f), SynSent, "{dir} {f:?}");
        }
        // SYN+ACK seen but the consumer never ACKs.
        for (dir, f) in [
            (C, TcpFlags::SYN),
            (P, TcpFlags::SYN_ACK),
            (P, TcpFlags::ACK),
            (C, TcpFlags::SYN_ACK),
            (C, NONE),
        ] {
            assert_eq!(SynReceived.advance(dir, f), SynReceived, "{dir} {f:?}");
        }
        assert!(SynSent.timeout_ms(&t) < Established.timeout_ms(&t));
        assert!(SynReceived.timeout_ms(&t) < Established.timeout_ms(&t));
    }

    #[test]
    fn rst_from_either_side_closes_every_state() {
        let t = Timeouts::default();
        for s in ALL_STATES {
            for dir in [C, P] {
                for f in [TcpFlags::RST, RST_ACK] {
                    let n = s.advance(dir, f);
                    assert_eq!(n, Closed, "{s:?} {dir} {f:?}");
                    assert!(n.allows_reopen());
                    assert_eq!(n.timeout_ms(&t), t.tcp_closed_ms);
                }
            }
        }
    }

    #[test]
    fn established_ignores_syn_and_acks() {
        for (dir, f) in [
            (C, TcpFlags::SYN),
            (P, TcpFlags::SYN_ACK),
            (C, TcpFlags::ACK),
            (P, TcpFlags::ACK),
            (C, NONE),
        ] {
            assert_eq!(Established.advance(dir, f), Established, "{dir} {f:?}");
        }
        assert_eq!(Established.advance(P, FIN), FinWaitProvider);
    }

    #[test]
    fn closing_needs_a_fin_less_ack() {
        for (dir, f) in [
            (C, FIN),
            (P, TcpFlags::FIN_ACK),
            (C, TcpFlags::SYN_ACK),
            (P, NONE),
        ] {
            assert_eq!(CLOSING_C.advance(dir, f), CLOSING_C, "{dir} {f:?}");
        }
        assert_eq!(CLOSING_C.advance(P, TcpFlags::ACK), TIME_WAIT_C);
        assert_eq!(CLOSING_P.advance(C, TcpFlags::ACK), TIME_WAIT_P);
    }

    #[test]
    fn reopen_after_time_wait_or_rst() {
        for s in [TIME_WAIT_C, TIME_WAIT_P, Closed] {
            assert!(s.allows_reopen());
            assert_eq!(s.advance(C, TcpFlags::SYN), SynSent);
            // Only the consumer's connection request reopens.
            for (dir, f) in [
                (P, TcpFlags::SYN),
                (P, TcpFlags::SYN_ACK),
                (C, TcpFlags::SYN_ACK),
                (C, SYN_FIN),
                (C, TcpFlags::ACK),
                (P, TcpFlags::FIN_ACK),
            ] {
                assert_eq!(s.advance(dir, f), s, "{s:?} {dir} {f:?}");
            }
        }
        for s in [
            SynSent,
            SynReceived,
            Established,
            FinWaitConsumer,
            CLOSING_C,
            CLOSING_P,
        ] {
            assert!(!s.allows_reopen(), "{s:?}");
        }
    }

    #[test]
    fn timeouts_per_state() {
        let t = Timeouts {
            tcp_syn_ms: 1,
            tcp_established_ms: 2,
            tcp_closing_ms: 3,
            tcp_closed_ms: 4,
            udp_ms: 5,
            icmp_ms: 6,
        };
        let got: Vec<u64> = ALL_STATES.iter().map(|s| s.timeout_ms(&t)).collect();
        assert_eq!(got, [1, 1, 2, 3, 3, 3, 3, 4, 4, 4]);
        assert!(Established.is_established());
        assert!(!SynReceived.is_established());
    }

    #[test]
    fn every_state_and_input_is_total() {
        // All 16 flag combinations, both directions, every state: no panic, and RST wins.
        for s in ALL_STATES {
            for dir in [C, P] {
                for bits in 0..=0xffu8 {
                    let f = TcpFlags::from_bits(bits);
                    let n = s.advance(dir, f);
                    if f.rst() {
                        assert_eq!(n, Closed);
                    }
                }
            }
        }
    }
}
