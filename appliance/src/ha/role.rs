//! Which node of the pair is active.
//!
//! [`Election`] owns one node's view of the pair: its own role, what the peer last said in
//! a heartbeat, when the peer was last heard on the sync link or seen on a data port. It
//! is pure: the sync thread feeds it heartbeats and data-path claims, calls
//! [`Election::tick`] after each input and on a timer, and carries out the
//! [`Transition`]s it returns (announce or withdraw the addresses, tell the workers). It
//! never sends, sleeps or reads a clock: time is `now_ms`, any monotonic milliseconds.
//!
//! # Precedence
//!
//! Of two nodes, the one with the higher `priority` has precedence; on equal priorities
//! the lower `index` (its place in the configured node list) does. Both nodes know both
//! precedences from the configuration, so in every rule below they reach opposite
//! decisions without having to agree over the link. (The configuration must give the two
//! nodes different indices; with equal ones neither outranks the other and the rules that
//! break ties never fire.)
//!
//! # Rules
//!
//! `dead` is `dead_after × heartbeat_ms`. A heartbeat is *fresh* if it came less than
//! `dead` ago, a data-path claim likewise. The peer is *silent* when neither is fresh and,
//! at start, one more heartbeat interval has passed (the grace a peer's first heartbeat
//! needs to arrive).
//!
//! | role    | what this node knows                                         | becomes | why ([`why`]) |
//! |---------|--------------------------------------------------------------|---------|---------------|
//! | start   | —                                                            | standby | a node that returns never takes over by surprise |
//! | standby | peer silent                                                  | active  | [`why::PEER_SILENT`] |
//! | standby | fresh heartbeat says standby, we outrank the peer            | active  | [`why::BOTH_STANDBY`] |
//! | standby | fresh heartbeat says active, we outrank it, `preempt`, in sync | active | [`why::PREEMPT`] |
//! | standby | anything else (peer active, or only a data-path claim)       | standby | — |
//! | active  | fresh heartbeat says active, the peer outranks us            | standby | [`why::BOTH_ACTIVE`] |
//! | active  | no fresh heartbeat, fresh data-path claim, the peer outranks us | standby | [`why::DATA_PATH_CLAIM`] |
//! | active  | anything else (peer standby, silent, or outranked)           | active  | — |
//!
//! Consequences worth stating:
//! - the active node dies: the standby takes over `dead` after its last heartbeat, so
//!   within `dead_after + 1` intervals of the death, whatever the tick phase;
//! - the sync link is cut while both still reach the data networks: the standby goes
//!   active only if it sees no claim; if both went active, each sees the other's claims
//!   and the lower-precedence node steps down, no heartbeat needed;
//! - the link returns after a partition with both active: the lower-precedence node
//!   steps down on the first heartbeat;
//! - a node restarts: it comes back standby and stays so while the peer is active, unless
//!   `preempt` (and it outranks the peer and holds a complete copy of its flows, see
//!   [`Election::set_in_sync`]: taking over without the copy would reset every flow).
//!
//! # Replays
//!
//! Datagrams are authenticated, not fresh: a recorded heartbeat could be sent again. One
//! whose counter is not greater than the last of the same boot is ignored, and so is one
//! of a boot the peer has left behind ([`PeerBoot`]). A recording made before this node
//! started cannot be told from a live peer without a challenge, which the protocol does
//! not have: the sync link is a private wire between the two nodes.

use super::reliable::{BootSeen, PeerBoot};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Answers on the data networks and owns the flows.
    Active,
    /// Holds a copy of the active node's flows, ready to take over.
    Standby,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// One node of the pair, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its place in the configured node list (the `node` of its datagrams).
    pub index: u8,
    /// Higher wins.
    pub priority: u8,
    pub name: String,
}

impl Node {
    /// Whether `self` has precedence over `other`: higher priority, then lower index.
    pub fn outranks(&self, other: &Node) -> bool {
        (self.priority, core::cmp::Reverse(self.index))
            > (other.priority, core::cmp::Reverse(other.index))
    }
}

/// The reasons of [`Transition`]s, for logs and the management API.
pub mod why {
    pub const PEER_SILENT: &str = "peer silent: no heartbeat and no data-path claim";
    pub const BOTH_STANDBY: &str = "peer is standby and we have precedence";
    pub const PREEMPT: &str = "preempting a peer of lower precedence";
    pub const BOTH_ACTIVE: &str = "peer is active too and has precedence";
    pub const DATA_PATH_CLAIM: &str =
        "sync link silent, peer claims our addresses on a data port and has precedence";
}

/// A change of role that [`Election::tick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: Role,
    /// One of [`why`].
    pub why: &'static str,
}

/// What the management API shows of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    /// What the peer's last accepted heartbeat said (however old).
    pub peer_role: Option<Role>,
    pub peer_alive: bool,
    /// How long ago the last heartbeat was accepted.
    pub heartbeat_age_ms: Option<u64>,
    /// How long ago a worker last saw the peer claim our addresses on a data port.
    pub claim_age_ms: Option<u64>,
    /// The last transition and how long ago it was.
    pub last_transition: Option<Transition>,
    pub transition_age_ms: Option<u64>,
    /// Transitions since start.
    pub transitions: u64,
    /// Heartbeats ignored as replays (an old counter or an old boot).
    pub replays: u64,
}

/// One node's election state. See the module doc for the rules.
#[derive(Debug, Clone)]
pub struct Election {
    me: Node,
    peer: Node,
    preempt: bool,
    heartbeat_ms: u64,
    dead_ms: u64,
    started_ms: u64,
    role: Role,
    in_sync: bool,
    boots: PeerBoot,
    /// The counter of the last accepted heartbeat of the current boot.
    counter: u64,
    peer_role: Option<Role>,
    heartbeat_at: Option<u64>,
    claim_at: Option<u64>,
    last: Option<(Transition, u64)>,
    transitions: u64,
    replays: u64,
}

impl Election {
    /// Missed heartbeats after which a silent peer is taken for dead, unless configured.
    pub const DEFAULT_DEAD_AFTER: u32 = 3;

    /// Starts as standby. `heartbeat_ms` and `dead_after` of 0 are taken as 1.
    pub fn new(
        me: Node,
        peer: Node,
        preempt: bool,
        heartbeat_ms: u64,
        dead_after: u32,
        now_ms: u64,
    ) -> Election {
        let heartbeat_ms = heartbeat_ms.max(1);
        Election {
            me,
            peer,
            preempt,
            heartbeat_ms,
            dead_ms: heartbeat_ms.saturating_mul(u64::from(dead_after.max(1))),
            started_ms: now_ms,
            role: Role::Standby,
            in_sync: false,
            boots: PeerBoot::new(),
            counter: 0,
            peer_role: None,
            heartbeat_at: None,
            claim_at: None,
            last: None,
            transitions: 0,
            replays: 0,
        }
    }

    /// A heartbeat from the peer (authenticated, from the peer's index). Returns whether it
    /// was accepted; a replay (an old boot, or a counter not above the last of this boot)
    /// is not.
    pub fn on_heartbeat(&mut self, boot: u64, counter: u64, peer_role: Role, now_ms: u64) -> bool {
        let fresh = match self.boots.observe(boot) {
            BootSeen::First | BootSeen::Restarted => true,
            BootSeen::Current => counter > self.counter,
            BootSeen::Retired => false,
        };
        if !fresh {
            self.replays = self.replays.saturating_add(1);
            return false;
        }
        self.counter = counter;
        self.peer_role = Some(peer_role);
        self.heartbeat_at = Some(now_ms);
        true
    }

    /// A worker saw another MAC announce one of our addresses on a data port: the peer is
    /// alive and active there, even if the sync link is down.
    pub fn on_data_path_claim(&mut self, now_ms: u64) {
        self.claim_at = Some(now_ms);
    }

    /// Whether this node holds a complete copy of the peer's flows (the sync receiver
    /// says so); preemption waits for it. Starts false.
    pub fn set_in_sync(&mut self, in_sync: bool) {
        self.in_sync = in_sync;
    }

    /// Applies the rules; returns the transition if the role changed.
    pub fn tick(&mut self, now_ms: u64) -> Option<Transition> {
        let t = self.decide(now_ms)?;
        self.role = t.to;
        self.last = Some((t, now_ms));
        self.transitions = self.transitions.saturating_add(1);
        Some(t)
    }

    fn decide(&self, now_ms: u64) -> Option<Transition> {
        let heard = self
            .peer_role
            .filter(|_| self.fresh(self.heartbeat_at, now_ms));
        let claimed = self.fresh(self.claim_at, now_ms);
        let we_outrank = self.me.outranks(&self.peer);
        let peer_outranks = self.peer.outranks(&self.me);
        let (to, why) = match (self.role, heard) {
            (Role::Standby, _) if self.peer_silent(now_ms) => (Role::Active, why::PEER_SILENT),
            (Role::Standby, Some(Role::Standby)) if we_outrank => (Role::Active, why::BOTH_STANDBY),
            (Role::Standby, Some(Role::Active)) if we_outrank && self.preempt && self.in_sync => {
                (Role::Active, why::PREEMPT)
            }
            (Role::Active, Some(Role::Active)) if peer_outranks => {
                (Role::Standby, why::BOTH_ACTIVE)
            }
            (Role::Active, None) if claimed && peer_outranks => {
                (Role::Standby, why::DATA_PATH_CLAIM)
            }
            _ => return None,
        };
        Some(Transition { to, why })
    }

    /// Whether `at` is less than `dead` ago.
    fn fresh(&self, at: Option<u64>, now_ms: u64) -> bool {
        at.is_some_and(|at| now_ms.saturating_sub(at) < self.dead_ms)
    }

    /// Neither heartbeat nor claim for `dead`, counted from one interval after start at
    /// the earliest.
    fn peer_silent(&self, now_ms: u64) -> bool {
        let since = [self.heartbeat_at, self.claim_at]
            .into_iter()
            .flatten()
            .fold(self.started_ms.saturating_add(self.heartbeat_ms), u64::max);
        now_ms.saturating_sub(since) >= self.dead_ms
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// A fresh heartbeat or data-path claim.
    pub fn peer_alive(&self, now_ms: u64) -> bool {
        self.fresh(self.heartbeat_at, now_ms) || self.fresh(self.claim_at, now_ms)
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    pub fn peer(&self) -> &Node {
        &self.peer
    }

    pub fn status(&self, now_ms: u64) -> Status {
        let age = |at: u64| now_ms.saturating_sub(at);
        Status {
            role: self.role,
            peer_role: self.peer_role,
            peer_alive: self.peer_alive(now_ms),
            heartbeat_age_ms: self.heartbeat_at.map(age),
            claim_age_ms: self.claim_at.map(age),
            last_transition: self.last.map(|(t, _)| t),
            transition_age_ms: self.last.map(|(_, at)| age(at)),
            transitions: self.transitions,
            replays: self.replays,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: u64 = 100;
    const DEAD_AFTER: u32 = 3;

    fn node(index: u8, priority: u8) -> Node {
        Node {
            index,
            priority,
            name: format!("node{index}"),
        }
    }

    /// Node 0 has priority 200, node 1 priority 100: node 0 outranks.
    fn election(me: u8, preempt: bool, now_ms: u64) -> Election {
        let (a, b) = (node(0, 200), node(1, 100));
        let (me, peer) = if me == 0 { (a, b) } else { (b, a) };
        Election::new(me, peer, preempt, HB, DEAD_AFTER, now_ms)
    }

    /// One node of a simulated pair: its election, boot and heartbeat counter.
    struct Side {
        e: Election,
        boot: u64,
        counter: u64,
    }

    impl Side {
        fn new(me: u8, preempt: bool, boot: u64, now_ms: u64) -> Side {
            Side {
                e: election(me, preempt, now_ms),
                boot,
                counter: 0,
            }
        }

        /// Sends a heartbeat to `rx`, which gets it only if the link is up.
        fn beat(&mut self, rx: &mut Side, now_ms: u64, up: bool) {
            self.counter += 1;
            if up {
                rx.e.on_heartbeat(self.boot, self.counter, self.e.role(), now_ms);
            }
        }
    }

    /// Runs a pair on a fake clock from `from` to `to`, one tick per interval, heartbeats
    /// across the link only while `link(t)`; returns the transitions with their times.
    fn run(
        a: &mut Side,
        b: &mut Side,
        from: u64,
        to: u64,
        link: impl Fn(u64) -> bool,
    ) -> Vec<(u64, u8, Transition)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            a.beat(b, t, link(t));
            b.beat(a, t, link(t));
            if let Some(tr) = a.e.tick(t) {
                out.push((t, 0, tr));
            }
            if let Some(tr) = b.e.tick(t) {
                out.push((t, 1, tr));
            }
            t += HB;
        }
        out
    }

    #[test]
    fn precedence_is_priority_then_lower_index() {
        assert!(node(0, 200).outranks(&node(1, 100)));
        assert!(node(1, 200).outranks(&node(0, 100)));
        assert!(node(0, 100).outranks(&node(1, 100)));
        assert!(!node(1, 100).outranks(&node(0, 100)));
        assert!(!node(0, 100).outranks(&node(0, 100)));
    }

    #[test]
    fn a_lone_node_starts_standby_and_goes_active_after_dead_plus_grace() {
        let mut e = election(1, false, 1_000);
        assert_eq!(e.role(), Role::Standby);
        let takeover = 1_000 + HB + u64::from(DEAD_AFTER) * HB;
        for t in (1_000..takeover).step_by(10) {
            assert_eq!(e.tick(t), None, "at {t}");
        }
        assert_eq!(
            e.tick(takeover),
            Some(Transition {
                to: Role::Active,
                why: why::PEER_SILENT
            })
        );
        assert_eq!(e.role(), Role::Active);
        // Alone and active it stays so.
        assert_eq!(e.tick(takeover + 10_000), None);
    }

    #[test]
    fn a_data_path_claim_at_start_keeps_a_node_standby() {
        let mut e = election(0, false, 0);
        for t in (0..20).map(|i| i * HB) {
            e.on_data_path_claim(t);
            assert_eq!(e.tick(t), None, "at {t}");
        }
        assert!(e.peer_alive(2_000));
        // The claims stop: silent dead later.
        assert_eq!(e.tick(1_900 + u64::from(DEAD_AFTER) * HB - 1), None);
        assert_eq!(
            e.tick(1_900 + u64::from(DEAD_AFTER) * HB).unwrap().to,
            Role::Active
        );
    }

    #[test]
    fn two_nodes_starting_together_elect_the_higher_precedence() {
        let mut a = Side::new(0, false, 11, 0);
        let mut b = Side::new(1, false, 22, 0);
        let tr = run(&mut a, &mut b, 0, 2_000, |_| true);
        assert_eq!(
            tr,
            vec![(
                0,
                0,
                Transition {
                    to: Role::Active,
                    why: why::BOTH_STANDBY
                }
            )]
        );
        assert_eq!((a.e.role(), b.e.role()), (Role::Active, Role::Standby));
    }

    #[test]
    fn the_standby_takes_over_within_dead_after_plus_one_intervals_of_a_kill() {
        for phase in [0, 1, 37, 99] {
            let mut a = Side::new(0, false, 11, 0);
            let mut b = Side::new(1, false, 22, phase);
            run(&mut a, &mut b, 0, 1_000, |_| true);
            assert_eq!(a.e.role(), Role::Active);
            // a dies just after its heartbeat at 1_000; b ticks on its own phase.
            let killed = 1_001;
            let mut t = 1_000 + HB + phase;
            let takeover = loop {
                if let Some(tr) = b.e.tick(t) {
                    assert_eq!(tr.why, why::PEER_SILENT);
                    break t;
                }
                t += HB;
            };
            assert!(
                takeover - killed <= u64::from(DEAD_AFTER + 1) * HB,
                "phase {phase}: took over {} ms after the kill",
                takeover - killed
            );
            assert_eq!(b.e.role(), Role::Active);
        }
    }

    #[test]
    fn both_active_after_a_partition_exactly_one_steps_down() {
        let mut a = Side::new(0, false, 11, 0);
        let mut b = Side::new(1, false, 22, 0);
        // Link up, cut from 1_000 to 3_000, up again.
        let tr = run(&mut a, &mut b, 0, 5_000, |t| !(1_000..3_000).contains(&t));
        let ends: Vec<_> = tr.iter().map(|(_, n, t)| (*n, t.to, t.why)).collect();
        assert_eq!(
            ends,
            vec![
                (0, Role::Active, why::BOTH_STANDBY),
                (1, Role::Active, why::PEER_SILENT),
                (1, Role::Standby, why::BOTH_ACTIVE),
            ]
        );
        // The lower one stepped down on the first tick after the link returned.
        assert_eq!(tr[2].0, 3_000);
        assert_eq!((a.e.role(), b.e.role()), (Role::Active, Role::Standby));
    }

    #[test]
    fn with_the_link_cut_a_data_path_claim_makes_the_lower_step_down() {
        let mut hi = election(0, false, 0);
        let mut lo = election(1, false, 0);
        // Both alone: both active.
        assert_eq!(hi.tick(1_000).unwrap().to, Role::Active);
        assert_eq!(lo.tick(1_000).unwrap().to, Role::Active);
        // Each sees the other's gratuitous ARP on a data port.
        hi.on_data_path_claim(1_010);
        lo.on_data_path_claim(1_010);
        assert_eq!(hi.tick(1_020), None);
        assert_eq!(
            lo.tick(1_020),
            Some(Transition {
                to: Role::Standby,
                why: why::DATA_PATH_CLAIM
            })
        );
        // Standby, claims keep it from taking over again.
        for t in (11..50).map(|i| i * HB) {
            lo.on_data_path_claim(t);
            assert_eq!(lo.tick(t), None);
        }
    }

    #[test]
    fn a_data_path_claim_does_not_override_fresh_heartbeats() {
        let mut lo = election(1, false, 0);
        assert_eq!(lo.tick(1_000).unwrap().to, Role::Active);
        // The peer's heartbeat says standby: a stale claim (its last ARP) is ignored.
        lo.on_heartbeat(5, 1, Role::Standby, 1_010);
        lo.on_data_path_claim(1_010);
        assert_eq!(lo.tick(1_020), None);
        assert_eq!(lo.role(), Role::Active);
    }

    #[test]
    fn replayed_heartbeats_are_ignored() {
        let mut b = election(1, false, 0);
        assert!(b.on_heartbeat(7, 1, Role::Active, 10));
        assert!(b.on_heartbeat(7, 2, Role::Active, 100));
        // The same and an older counter of the same boot: replays.
        assert!(!b.on_heartbeat(7, 2, Role::Active, 250));
        assert!(!b.on_heartbeat(7, 1, Role::Active, 260));
        // The peer died at 100; a replayer keeps sending its old heartbeats: b still
        // takes over dead after the last real one.
        let mut t = 200;
        let takeover = loop {
            assert!(!b.on_heartbeat(7, 2, Role::Active, t));
            if b.tick(t).is_some() {
                break t;
            }
            t += HB;
        };
        assert_eq!(takeover, 100 + u64::from(DEAD_AFTER) * HB);
        // The peer restarts (new boot): accepted from counter 1; its old boot is retired.
        assert!(b.on_heartbeat(8, 1, Role::Standby, 1_000));
        assert!(!b.on_heartbeat(7, 3, Role::Active, 1_010));
        assert!(b.on_heartbeat(8, 2, Role::Standby, 1_100));
        // Two replays, three during the takeover, one of the old boot.
        assert_eq!(b.status(1_100).replays, 6);
    }

    /// Node `me` returns at 10_000 (a new boot) to find the other active since 1_000.
    fn returning(me: u8, preempt: bool) -> (Side, Side) {
        let back = Side::new(me, preempt, 33, 10_000);
        let mut active = Side::new(1 - me, false, 22, 0);
        assert_eq!(active.e.tick(1_000).unwrap().to, Role::Active);
        (back, active)
    }

    #[test]
    fn a_returning_high_priority_node_stays_standby_without_preempt() {
        let (mut a, mut b) = returning(0, false);
        a.e.set_in_sync(true);
        let tr = run(&mut a, &mut b, 10_000, 20_000, |_| true);
        assert_eq!(tr, vec![]);
        assert_eq!((a.e.role(), b.e.role()), (Role::Standby, Role::Active));
    }

    #[test]
    fn a_returning_high_priority_node_takes_over_with_preempt_once_in_sync() {
        let (mut a, mut b) = returning(0, true);
        // Not yet a copy of b's flows: it waits.
        assert_eq!(run(&mut a, &mut b, 10_000, 12_000, |_| true), vec![]);
        a.e.set_in_sync(true);
        let tr = run(&mut a, &mut b, 12_100, 14_000, |_| true);
        let ends: Vec<_> = tr
            .iter()
            .map(|(t, n, tr)| (*t, *n, tr.to, tr.why))
            .collect();
        assert_eq!(
            ends,
            vec![
                (12_100, 0, Role::Active, why::PREEMPT),
                (12_200, 1, Role::Standby, why::BOTH_ACTIVE),
            ]
        );
    }

    #[test]
    fn preempt_needs_precedence() {
        let (mut lo, mut hi) = returning(1, true);
        lo.e.set_in_sync(true);
        assert_eq!(run(&mut lo, &mut hi, 10_000, 12_000, |_| true), vec![]);
        assert_eq!(lo.e.role(), Role::Standby);
    }

    #[test]
    fn status_reports_role_peer_and_the_last_transition() {
        let mut e = election(1, false, 0);
        let s = e.status(0);
        assert_eq!(
            s,
            Status {
                role: Role::Standby,
                peer_role: None,
                peer_alive: false,
                heartbeat_age_ms: None,
                claim_age_ms: None,
                last_transition: None,
                transition_age_ms: None,
                transitions: 0,
                replays: 0,
            }
        );
        e.on_heartbeat(9, 1, Role::Standby, 50);
        assert_eq!(e.tick(50), None);
        let s = e.status(100);
        assert_eq!(s.peer_role, Some(Role::Standby));
        assert!(s.peer_alive);
        assert_eq!(s.heartbeat_age_ms, Some(50));
        // The peer falls silent: dead (300 ms) after the later of its heartbeat (50) and
        // the end of the start grace (100), we go active.
        assert_eq!(e.tick(399), None);
        assert!(e.tick(400).is_some());
        let s = e.status(450);
        assert_eq!(s.role, Role::Active);
        assert_eq!(s.peer_role, Some(Role::Standby));
        assert!(!s.peer_alive);
        assert_eq!(s.heartbeat_age_ms, Some(400));
        assert_eq!(s.last_transition.map(|t| t.why), Some(why::PEER_SILENT));
        assert_eq!(s.transition_age_ms, Some(50));
        assert_eq!(s.transitions, 1);
    }

    #[test]
    fn a_clock_that_goes_back_or_jumps_never_panics() {
        let mut e = Election::new(node(0, 1), node(1, 1), true, 0, 0, u64::MAX);
        e.on_heartbeat(1, u64::MAX, Role::Active, u64::MAX);
        e.on_data_path_claim(0);
        for t in [0, 1, u64::MAX / 2, u64::MAX] {
            let _ = e.tick(t);
            let _ = e.status(t);
            let _ = e.peer_alive(t);
        }
    }
}
