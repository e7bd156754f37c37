//! Connection events for `subscribe-events`: the management side publishes what happened
//! (an endpoint's `Connect`, `Accept`, `Reject`, `Delete`, as the cloud's connection
//! notifications name them; a target's health change; an HA role change), and every
//! subscriber whose account may see it gets a copy.
//!
//! Publishing never blocks: each subscriber has a bounded queue ([`QUEUE`] events), and
//! an event that finds it full is dropped for that subscriber and counted; the subscriber
//! is told how many it missed before its next event ([`Subscription::next`]). A subscriber
//! that went away is forgotten at the next publication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{json, Value};

use crate::ids::AccountId;
use crate::server::Caller;

/// Events one subscriber may have waiting.
pub const QUEUE: usize = 1024;

/// One event: its JSON body, and who may see it (an admin sees everything).
#[derive(Debug, Clone)]
pub struct Event {
    pub body: Value,
    /// The accounts the event is about (an endpoint's owner and its service's owner);
    /// empty: the administrator's only (HA roles).
    pub audience: Vec<AccountId>,
}

struct Subscriber {
    admin: bool,
    account: Option<AccountId>,
    tx: Sender<Value>,
    dropped: Arc<AtomicU64>,
}

/// Where events are published.
#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl EventBus {
    /// A subscription for `caller`: its events from now on.
    pub fn subscribe(&self, caller: &Caller) -> Subscription {
        let (tx, rx) = bounded(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        self.lock().push(Subscriber {
            admin: caller.admin,
            account: caller.account,
            tx,
            dropped: Arc::clone(&dropped),
        });
        Subscription {
            rx,
            dropped,
            reported: 0,
        }
    }

    /// Whether anyone listens (publishers skip the work of making events otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.subscriber_count() > 0
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock().len()
    }

    /// Gives `event` to every subscriber allowed to see it; never waits.
    pub fn publish(&self, event: &Event) {
        let mut subs = self.lock();
        subs.retain(|s| {
            let sees = s.admin || s.account.is_some_and(|a| event.audience.contains(&a));
            if !sees {
                return !s.is_gone();
            }
            match s.tx.try_send(event.body.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Subscriber {
    /// Its [`Subscription`] was dropped (crossbeam's sender tells only when sending; the
    /// drop counter is shared with the subscription, so its count says).
    fn is_gone(&self) -> bool {
        Arc::strong_count(&self.dropped) == 1
    }
}

/// What [`Subscription::next`] has for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// An event (or an `EventsDropped` notice) to send.
    Event(Value),
    /// Nothing within the wait.
    Nothing,
    /// The bus is gone (the daemon is stopping).
    Closed,
}

/// One subscriber's end.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<Value>,
    dropped: Arc<AtomicU64>,
    /// Drops already reported to the client.
    reported: u64,
}

impl Subscription {
    /// The next thing to tell the client, waiting at most `wait`: an `EventsDropped`
    /// notice first when events were dropped since the last one, else the next event.
    pub fn next(&mut self, wait: Duration) -> Next {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported {
            let n = dropped - self.reported;
            self.reported = dropped;
            return Next::Event(json!({"Type": "EventsDropped", "Count": n}));
        }
        match self.rx.recv_timeout(wait) {
            Ok(v) => Next::Event(v),
            Err(RecvTimeoutError::Timeout) => Next::Nothing,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(account: Option<u64>, admin: bool) -> Caller {
        Caller {
            uid: 1000,
            account: account.map(|a| AccountId::new(a).unwrap()),
            admin,
        }
    }

    fn event_of(n: Next) -> Value {
        match n {
            Next::Event(v) => v,
            other => panic!("no event: {other:?}"),
        }
    }

    fn event(n: u64, audience: &[u64]) -> Event {
        Event {
            body: json!({"Type": "Connect", "N": n}),
            audience: audience
                .iter()
                .map(|a| AccountId::new(*a).unwrap())
                .collect(),
        }
    }

    #[test]
    fn each_account_sees_its_own_events_and_admin_all() {
        let bus = EventBus::default();
        let mut consumer = bus.subscribe(&caller(Some(111_111_111_111), false));
        let mut other = bus.subscribe(&caller(Some(333_333_333_333), false));
        let mut admin = bus.subscribe(&caller(None, true));
        bus.publish(&event(1, &[111_111_111_111, 222_222_222_222]));
        bus.publish(&Event {
            body: json!({"Type": "HaRole"}),
            audience: Vec::new(),
        });
        let w = Duration::from_millis(10);
        assert_eq!(event_of(consumer.next(w))["N"], 1);
        assert_eq!(consumer.next(w), Next::Nothing, "not the HA role");
        assert_eq!(other.next(w), Next::Nothing);
        assert_eq!(event_of(admin.next(w))["N"], 1);
        assert_eq!(event_of(admin.next(w))["Type"], "HaRole");
    }

    #[test]
    fn a_slow_subscriber_loses_events_counted_and_never_blocks_the_publisher() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe(&caller(Some(111_111_111_111), false));
        let started = std::time::Instant::now();
        for n in 0..QUEUE as u64 + 10 {
            bus.publish(&event(n, &[111_111_111_111]));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let w = Duration::from_millis(10);
        let first = event_of(slow.next(w));
        assert_eq!(first, json!({"Type": "EventsDropped", "Count": 10}));
        assert_eq!(event_of(slow.next(w))["N"], 0);
    }

    #[test]
    fn a_subscriber_that_went_away_is_forgotten() {
        let bus = EventBus::default();
        let s = bus.subscribe(&caller(Some(111_111_111_111), false));
        let t = bus.subscribe(&caller(Some(222_222_222_222), false));
        assert_eq!(bus.subscriber_count(), 2);
        drop(s);
        drop(t);
        bus.publish(&event(1, &[111_111_111_111]));
        assert_eq!(bus.subscriber_count(), 0);
    }
}
