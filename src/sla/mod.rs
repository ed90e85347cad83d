//! SLA clocks (issue 7, docs/ALERTS.md "SLA"): policies, the clocks they start on a
//! conversation, and business hours — when a response is due if the clock only runs during a
//! contact centre's opening hours, in its own time zone, across weekends and daylight saving
//! changes. Pure: instants are Unix milliseconds, the time zone database is bundled (jiff's
//! `tzdb-bundle-always`), so the answer is the same on every machine. The watcher that turns
//! clocks into `sla.warning` and `sla.breached` events is [`watch`].
//!
//! Opening hours are given per weekday as local wall-clock intervals (`"09:00-17:00"`,
//! `"08:00-12:00,13:00-18:00"`, `"00:00-24:00"`). On the day clocks go forward an interval
//! that spans the gap is shorter; on the day they go back it is longer: the clock counts real
//! time inside the local interval, as a person at the desk would.

pub mod watch;

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};

/// Opening hours as declared: a time zone and, per weekday (`mon` … `sun`), the open intervals.
/// A day left out is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    /// An IANA time zone (`Europe/Berlin`, `America/New_York`, `UTC`).
    pub time_zone: String,
    /// `{"mon": "09:00-17:00", "sat": "10:00-14:00"}`.
    pub week: BTreeMap<String, String>,
}

/// One field of an [`HoursSpec`] that is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoursError {
    /// Relative to the spec: `time_zone`, `week.mon`, `week`.
    pub field: String,
    pub message: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Opening hours, checked.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    tz: TimeZone,
    /// Per weekday, Monday first: open intervals in minutes after local midnight, sorted and
    /// not overlapping; an end of 1440 is the next midnight.
    week: [Vec<(u16, u16)>; 7],
}

/// A day's worth of searching is enough for any week with an open minute; this bounds the walk
/// for budgets of years.
const MAX_DAYS: usize = 4000;

fn minutes(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

impl BusinessHours {
    /// Round the clock in UTC: every minute counts.
    pub fn always() -> Self {
        BusinessHours {
            tz: TimeZone::UTC,
            week: std::array::from_fn(|_| vec![(0, 1440)]),
        }
    }

    pub fn parse(spec: &HoursSpec) -> Result<Self, HoursError> {
        let err = |field: String, message: &str| HoursError {
            field,
            message: message.to_owned(),
        };
        let tz = TimeZone::get(&spec.time_zone).map_err(|_| {
            err(
                "time_zone".to_owned(),
                "is not a known IANA time zone (such as Europe/Berlin)",
            )
        })?;
        let mut week: [Vec<(u16, u16)>; 7] = Default::default();
        for (day, hours) in &spec.week {
            let field = format!("week.{day}");
            let i = DAYS.iter().position(|d| d == day).ok_or_else(|| {
                err(
                    field.clone(),
                    "is not a weekday (mon, tue, wed, thu, fri, sat, sun)",
                )
            })?;
            let mut intervals = Vec::new();
            for part in hours.split(',').filter(|p| !p.trim().is_empty()) {
                let (from, to) = part
                    .split_once('-')
                    .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
                    .filter(|(a, b)| a < b)
                    .ok_or_else(|| {
                        err(
                            field.clone(),
                            "must be intervals like 09:00-17:00, separated by commas",
                        )
                    })?;
                intervals.push((from, to));
            }
            intervals.sort_unstable();
            if intervals.windows(2).any(|w| w[0].1 > w[1].0) {
                return Err(err(field, "has overlapping intervals"));
            }
            week[i] = intervals;
        }
        if week.iter().all(Vec::is_empty) {
            return Err(err("week".to_owned(), "must open at least once a week"));
        }
        Ok(BusinessHours { tz, week })
    }

    /// The open intervals of local `date`, as instants (ms).
    fn open_on(&self, date: Date) -> Vec<(i64, i64)> {
        let day = usize::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0);
        let at = |minute: u16| -> Option<i64> {
            let (date, minute) = if minute == 1440 {
                (date.tomorrow().ok()?, 0)
            } else {
                (date, minute)
            };
            let h = i8::try_from(minute / 60).ok()?;
            let m = i8::try_from(minute % 60).ok()?;
            let zoned: ZonedDateTime = date
                .at(h, m, 0, 0)
                .to_zoned_datetime(self.tz.clone())
                .ok()?;
            Some(zoned.timestamp().as_millisecond())
        };
        self.week[day]
            .iter()
            .filter_map(|&(from, to)| Some((at(from)?, at(to)?)))
            .filter(|(a, b)| a < b)
            .collect()
    }

    fn local_date(&self, ms: i64) -> Option<Date> {
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned_datetime(self.tz.clone())
                .date(),
        )
    }

    /// The instant at which `budget_ms` of business time after `start_ms` has passed. A start
    /// outside opening hours waits for the next opening. `None` past the searchable range.
    pub fn deadline(&self, start_ms: i64, budget_ms: i64) -> Option<i64> {
        let mut left = budget_ms.max(0);
        // The previous day too: its interval may run past midnight (an end of 24:00).
        let mut date = self.local_date(start_ms)?.yesterday().ok()?;
        for _ in 0..MAX_DAYS {
            for (open, close) in self.open_on(date) {
                let from = open.max(start_ms);
                if from >= close {
                    continue;
                }
                if left <= close - from {
                    return Some(from + left);
                }
                left -= close - from;
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// Business time between two instants, in ms (0 when `end_ms` is not after `start_ms`).
    pub fn elapsed(&self, start_ms: i64, end_ms: i64) -> i64 {
        if end_ms <= start_ms {
            return 0;
        }
        let (Some(first), Some(last)) = (self.local_date(start_ms), self.local_date(end_ms)) else {
            return 0;
        };
        let mut total = 0;
        let Ok(mut date) = first.yesterday() else {
            return 0;
        };
        for _ in 0..MAX_DAYS {
            for (open, close) in self.open_on(date) {
                total += (close.min(end_ms) - open.max(start_ms)).max(0);
            }
            if date >= last {
                break;
            }
            let Ok(next) = date.tomorrow() else { break };
            date = next;
        }
        total
    }
}

/// An SLA policy as stored and as given over REST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// `sla_…`
    pub id: String,
    pub name: String,
    /// The inbox whose conversations it covers; or
    pub inbox_id: Option<String>,
    /// the team whose conversations it covers (an inbox policy wins over a team policy).
    pub team_id: Option<String>,
    /// From the customer's first message to the first reply.
    pub first_response_secs: i64,
    /// From a customer's message after a reply to the next reply.
    pub next_response_secs: Option<i64>,
    /// From the conversation's start to its resolution.
    pub resolution_secs: Option<i64>,
    /// How long before a deadline the warning comes (business time).
    pub warning_secs: i64,
    /// Opening hours; `null` is round the clock.
    pub business_hours: Option<HoursSpec>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a clock measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FirstResponse => "first_response",
            Metric::NextResponse => "next_response",
            Metric::Resolution => "resolution",
        }
    }
}

/// The moments of a conversation its clocks read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moments {
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub first_inbound_at: Option<i64>,
    pub first_outbound_at: Option<i64>,
    pub last_outbound_at: Option<i64>,
    /// The first customer message after the last reply (unanswered since).
    pub inbound_after_last_reply_at: Option<i64>,
}

/// One clock of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Clock {
    /// `first_response`, `next_response` or `resolution`.
    #[schema(value_type = String)]
    pub metric: Metric,
    pub started_at_ms: i64,
    pub warn_at_ms: i64,
    pub due_at_ms: i64,
    /// When it stopped (the reply, the resolution); `null` while running.
    pub stopped_at_ms: Option<i64>,
    /// `running`, `warning` (past the warning, not yet due), `breached` (past due, or stopped
    /// after it), or `met` (stopped in time).
    pub state: &'static str,
}

/// The clocks `policy` (with its parsed `hours`) runs on a conversation, at `now`.
pub fn clocks(policy: &Policy, hours: &BusinessHours, m: &Moments, now: i64) -> Vec<Clock> {
    let s = |secs: i64| secs.saturating_mul(1000);
    let mut budgets = Vec::new();
    if let Some(start) = m.first_inbound_at {
        budgets.push((
            Metric::FirstResponse,
            start,
            m.first_outbound_at,
            policy.first_response_secs,
        ));
    }
    if let (Some(secs), Some(start), Some(_)) = (
        policy.next_response_secs,
        m.inbound_after_last_reply_at,
        m.last_outbound_at,
    ) {
        budgets.push((Metric::NextResponse, start, None, secs));
    }
    if let Some(secs) = policy.resolution_secs {
        budgets.push((Metric::Resolution, m.created_at, m.resolved_at, secs));
    }
    budgets
        .into_iter()
        .filter_map(|(metric, start, stopped, secs)| {
            let due = hours.deadline(start, s(secs))?;
            let warn = hours.deadline(start, s(secs - policy.warning_secs).max(0))?;
            let state = match stopped {
                Some(at) if at > due => "breached",
                Some(_) => "met",
                None if now >= due => "breached",
                None if now >= warn => "warning",
                None => "running",
            };
            Some(Clock {
                metric,
                started_at_ms: start,
                warn_at_ms: warn,
                due_at_ms: due,
                stopped_at_ms: stopped,
                state,
            })
        })
        .collect()
}

/// When a conversation waiting for an agent becomes urgent by its SLA: the warning time of its
/// earliest running response clock (first or next response). Resolution clocks do not make
/// a conversation urgent: an agent taking it sooner does not resolve it sooner.
pub fn urgent_from(policy: &Policy, hours: &BusinessHours, m: &Moments) -> Option<i64> {
    clocks(policy, hours, m, i64::MIN)
        .into_iter()
        .filter(|c| c.metric != Metric::Resolution && c.stopped_at_ms.is_none())
        .map(|c| c.warn_at_ms)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of an RFC 3339 instant.
    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn hours(tz: &str, week: &[(&str, &str)]) -> BusinessHours {
        BusinessHours::parse(&HoursSpec {
            time_zone: tz.to_owned(),
            week: week
                .iter()
                .map(|(d, h)| ((*d).to_owned(), (*h).to_owned()))
                .collect(),
        })
        .unwrap()
    }

    const H: i64 = 3_600_000;

    #[test]
    fn deadlines_follow_business_hours_and_time_zones() {
        let weekdays = [
            ("mon", "09:00-17:00"),
            ("tue", "09:00-17:00"),
            ("wed", "09:00-17:00"),
            ("thu", "09:00-17:00"),
            ("fri", "09:00-17:00"),
        ];
        let berlin = hours("Europe/Berlin", &weekdays);
        let split = hours("America/New_York", &[("mon", "08:00-12:00,13:00-18:00")]);
        // 2026-12-04 is a Friday; Berlin is UTC+1 in winter.
        let cases: [(&str, &BusinessHours, &str, i64, &str); 8] = [
            (
                "inside hours",
                &berlin,
                "2026-12-04T09:00:00Z",
                H,
                "2026-12-04T10:00:00Z",
            ),
            (
                "runs over the weekend",
                &berlin,
                "2026-12-04T15:00:00Z",
                2 * H,
                "2026-12-07T09:00:00Z",
            ),
            (
                "starts before opening",
                &berlin,
                "2026-12-04T05:00:00Z",
                30 * 60_000,
                "2026-12-04T08:30:00Z",
            ),
            (
                "starts on Saturday",
                &berlin,
                "2026-12-05T12:00:00Z",
                H,
                "2026-12-07T09:00:00Z",
            ),
            (
                "a zero budget is now, when open",
                &berlin,
                "2026-12-04T10:00:00Z",
                0,
                "2026-12-04T10:00:00Z",
            ),
            // Clocks go forward in Berlin on 2026-03-29 (a Sunday): Monday 09:00 is 07:00Z.
            (
                "after spring forward",
                &berlin,
                "2026-03-27T15:00:00Z",
                2 * H,
                "2026-03-30T08:00:00Z",
            ),
            // New York, lunch break: 11:00 local (16:00Z) plus 2 h ends at 14:00 local.
            (
                "skips the lunch break",
                &split,
                "2026-12-07T16:00:00Z",
                2 * H,
                "2026-12-07T19:00:00Z",
            ),
            (
                "round the clock",
                &BusinessHours::always(),
                "2026-12-05T23:30:00Z",
                H,
                "2026-12-06T00:30:00Z",
            ),
        ];
        for (name, hours, start, budget, due) in cases {
            assert_eq!(hours.deadline(at(start), budget), Some(at(due)), "{name}");
        }
    }

    #[test]
    fn elapsed_counts_only_open_time() {
        let berlin = hours(
            "Europe/Berlin",
            &[("mon", "09:00-17:00"), ("fri", "09:00-17:00")],
        );
        // Friday 15:00Z (16:00 local) to Monday 09:00Z (10:00 local): 1 h + 1 h.
        assert_eq!(
            berlin.elapsed(at("2026-12-04T15:00:00Z"), at("2026-12-07T09:00:00Z")),
            2 * H
        );
        assert_eq!(
            berlin.elapsed(at("2026-12-05T00:00:00Z"), at("2026-12-06T00:00:00Z")),
            0
        );
        assert_eq!(
            berlin.elapsed(at("2026-12-07T09:00:00Z"), at("2026-12-07T08:00:00Z")),
            0
        );
        // deadline and elapsed agree.
        let start = at("2026-12-03T13:17:00Z");
        for budget in [0, 1, H, 7 * H, 40 * H] {
            let due = berlin.deadline(start, budget).unwrap();
            assert_eq!(berlin.elapsed(start, due), budget, "budget {budget}");
        }
    }

    #[test]
    fn clocks_run_stop_and_breach() {
        let policy = Policy {
            id: "sla_1".into(),
            name: "p".into(),
            inbox_id: None,
            team_id: None,
            first_response_secs: 600,
            next_response_secs: Some(300),
            resolution_secs: Some(3600),
            warning_secs: 120,
            business_hours: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let always = BusinessHours::always();
        let m = Moments {
            created_at: 0,
            first_inbound_at: Some(0),
            ..Moments::default()
        };
        let states = |m: &Moments, now| -> Vec<(Metric, &str)> {
            clocks(&policy, &always, m, now)
                .iter()
                .map(|c| (c.metric, c.state))
                .collect()
        };
        use Metric::*;
        assert_eq!(
            states(&m, 1000),
            vec![(FirstResponse, "running"), (Resolution, "running")]
        );
        assert_eq!(
            states(&m, 480_000),
            vec![(FirstResponse, "warning"), (Resolution, "running")]
        );
        assert_eq!(
            states(&m, 600_000),
            vec![(FirstResponse, "breached"), (Resolution, "running")]
        );
        // Replied in time, then the customer wrote again: the next-response clock runs.
        let replied = Moments {
            first_outbound_at: Some(500_000),
            last_outbound_at: Some(500_000),
            inbound_after_last_reply_at: Some(700_000),
            ..m.clone()
        };
        assert_eq!(
            states(&replied, 1_000_001),
            vec![
                (FirstResponse, "met"),
                (NextResponse, "breached"),
                (Resolution, "running")
            ]
        );
        let c = &clocks(&policy, &always, &replied, 0)[1];
        assert_eq!((c.warn_at_ms, c.due_at_ms), (880_000, 1_000_000));
        // Resolved late.
        let late = Moments {
            resolved_at: Some(4_000_000),
            ..replied
        };
        assert_eq!(states(&late, 5_000_000)[2], (Resolution, "breached"));
    }

    #[test]
    fn bad_hours_name_their_field() {
        let bad = |tz: &str, week: &[(&str, &str)]| {
            BusinessHours::parse(&HoursSpec {
                time_zone: tz.to_owned(),
                week: week
                    .iter()
                    .map(|(d, h)| ((*d).to_owned(), (*h).to_owned()))
                    .collect(),
            })
            .unwrap_err()
            .field
        };
        assert_eq!(bad("Mars/Olympus", &[("mon", "09:00-17:00")]), "time_zone");
        assert_eq!(bad("UTC", &[("monday", "09:00-17:00")]), "week.monday");
        assert_eq!(bad("UTC", &[("mon", "17:00-09:00")]), "week.mon");
        assert_eq!(bad("UTC", &[("mon", "9-5")]), "week.mon");
        assert_eq!(
            bad("UTC", &[("mon", "09:00-13:00,12:00-17:00")]),
            "week.mon"
        );
        assert_eq!(bad("UTC", &[("sat", "")]), "week");
        let full = hours("UTC", &[("sun", "00:00-24:00")]);
        assert_eq!(
            full.deadline(at("2026-12-06T23:00:00Z"), 30 * 60_000),
            Some(at("2026-12-06T23:30:00Z"))
        );
    }
}
