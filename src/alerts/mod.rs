//! Alerting (issue 7), the parts every later piece stands on: what a rule says
//! ([`RuleSpec`], checked field by field so config and REST refuse the same things with the
//! same words), and how one alert lives ([`Phase`]: idle → pending → firing → resolved, with a
//! hold-down so a flapping signal pages once).
//!
//! A rule watches its account as a whole, or keeps one alert per [`Dimension`] value of its
//! signal (a provider, a team, an inbox): its *scope*, which names the alert in the history,
//! in Slack and in PagerDuty's `dedup_key`, so each scope fires and resolves on its own.
//!
//! The destinations' protocols are in `switchboard_connectors::alerts`; [`watch`] counts and
//! evaluates the live signals, [`notify`] delivers the notices.

pub mod notify;
pub mod watch;

use serde::{Deserialize, Serialize};
use switchboard_connectors::alerts::{Severity, Transition};

use crate::sla::{BusinessHours, HoursSpec};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Conversations waiting for an agent, per account (threshold: a count).
    QueueBacklog,
    /// Refused webhooks (bad signature, malformed) over all webhooks in the window, as a
    /// percentage (threshold: 0 to 100).
    WebhookErrorRatio,
    /// Outbound send attempts that failed (transient or permanent) over all attempts in the
    /// window, as a percentage.
    OutboundFailureRatio,
    /// SLA breaches recorded in the window (threshold: a count).
    SlaBreaches,
    /// Business time since an inbox's last customer message, per inbox (threshold: seconds).
    InboundSilence,
    /// Sends a provider refused for the inbox's credentials (an expired WhatsApp token, a bad
    /// Twilio auth token) in the window (threshold: a count, usually 0).
    CredentialsRejected,
    /// Outbound webhook endpoints disabled for failing deliveries in the window (threshold: a
    /// count, usually 0; docs/WEBHOOKS_OUT.md).
    WebhookEndpointsDisabled,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::QueueBacklog,
        Signal::WebhookErrorRatio,
        Signal::OutboundFailureRatio,
        Signal::SlaBreaches,
        Signal::InboundSilence,
        Signal::CredentialsRejected,
        Signal::WebhookEndpointsDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::QueueBacklog => "queue_backlog",
            Signal::WebhookErrorRatio => "webhook_error_ratio",
            Signal::OutboundFailureRatio => "outbound_failure_ratio",
            Signal::SlaBreaches => "sla_breaches",
            Signal::InboundSilence => "inbound_silence",
            Signal::CredentialsRejected => "credentials_rejected",
            Signal::WebhookEndpointsDisabled => "webhook_endpoints_disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Signal::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A ratio's threshold is a percentage.
    fn is_ratio(self) -> bool {
        matches!(
            self,
            Signal::WebhookErrorRatio | Signal::OutboundFailureRatio
        )
    }

    /// Whether the signal is measured over a window (`window_secs` required).
    fn windowed(self) -> bool {
        self.is_ratio()
            || matches!(
                self,
                Signal::SlaBreaches
                    | Signal::CredentialsRejected
                    | Signal::WebhookEndpointsDisabled
            )
    }

    /// What the signal can be kept per, besides the account as a whole.
    pub fn dimension(self) -> Option<Dimension> {
        match self {
            Signal::OutboundFailureRatio | Signal::CredentialsRejected => Some(Dimension::Provider),
            Signal::SlaBreaches => Some(Dimension::Team),
            Signal::InboundSilence => Some(Dimension::Inbox),
            _ => None,
        }
    }
}

/// What an alert's scope can be finer than the account by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// The provider a send went through: `whatsapp` or `twilio`.
    Provider,
    /// The conversation's team (`team_…`).
    Team,
    /// The inbox (`inb_…`).
    Inbox,
}

/// The providers sends go through, as scopes name them.
pub const PROVIDERS: [&str; 2] = ["whatsapp", "twilio"];

/// The scope of an account-wide alert, and of the account's total in every counter.
pub const ACCOUNT: &str = "account";

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Provider => "provider",
            Dimension::Team => "team",
            Dimension::Inbox => "inbox",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Dimension::Provider, Dimension::Team, Dimension::Inbox]
            .into_iter()
            .find(|d| d.as_str() == s)
    }

    /// The scope of one value: `provider:whatsapp`, `team:team_…`, `inbox:inb_…`.
    pub fn scope(self, value: &str) -> String {
        format!("{}:{value}", self.as_str())
    }

    /// The value a scope of this dimension names (`None` for another dimension's scope).
    pub fn value_of(self, scope: &str) -> Option<&str> {
        scope
            .strip_prefix(self.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
    }
}

/// An alert rule as declared in config or over REST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// 1 to 64 lowercase letters, digits, `-` and `_`; unique in its account.
    pub name: String,
    /// Config only: the account (slug) the rule watches; the default account when left out.
    /// Over REST, the caller's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub signal: String,
    /// Fires when the signal is above this.
    pub threshold: f64,
    /// For windowed signals: the window the signal is measured over, 10 s to 1 day.
    #[serde(default)]
    pub window_secs: Option<u64>,
    /// How long the condition must hold before the alert fires (0 to 1 day).
    #[serde(default)]
    pub for_secs: u64,
    /// How long the condition must stay clear before the alert resolves (0 to 1 day): a signal
    /// that flaps within it keeps one alert firing instead of paging again.
    #[serde(default = "default_hold_down")]
    pub hold_down_secs: u64,
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Names of destinations; at least one.
    pub destinations: Vec<String>,
    /// Keep one alert per `provider` (outbound_failure_ratio, credentials_rejected) or `team`
    /// (sla_breaches) instead of one for the account; inbound_silence is always per `inbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// outbound_failure_ratio, credentials_rejected: only this provider (`whatsapp` or
    /// `twilio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// sla_breaches: only this team (`team_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// inbound_silence: only this inbox (`inb_…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<String>,
    /// inbound_silence: the opening hours silence counts in; without it, the inbox's SLA
    /// policy's hours, else round the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursSpec>,
}

fn default_hold_down() -> u64 {
    300
}

fn default_severity() -> String {
    "warning".to_owned()
}

/// One field of a rule that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

const DAY: u64 = 24 * 60 * 60;

impl RuleSpec {
    /// Checks every field; `destinations` are the names that exist. The first problem is
    /// returned, its field relative to the rule (`destinations[1]`).
    pub fn check(&self, destinations: &[&str]) -> Result<Checked, FieldError> {
        let err = |field: &str, message: String| FieldError {
            field: field.to_owned(),
            message,
        };
        if !crate::config::is_slug(&self.name) {
            return Err(err(
                "name",
                "must be 1 to 64 lowercase letters, digits, - and _".to_owned(),
            ));
        }
        let signal = Signal::parse(&self.signal).ok_or_else(|| {
            let known: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
            err(
                "signal",
                format!("is not a signal (one of {})", known.join(", ")),
            )
        })?;
        let (low, high) = if signal.is_ratio() {
            (0.0, 100.0)
        } else {
            (0.0, 1_000_000.0)
        };
        if !self.threshold.is_finite() || self.threshold < low || self.threshold > high {
            return Err(err(
                "threshold",
                format!(
                    "must be a number from {low} to {high} for {}",
                    signal.as_str()
                ),
            ));
        }
        match (signal.windowed(), self.window_secs) {
            (true, None) => {
                return Err(err(
                    "window_secs",
                    format!("is required for {}", signal.as_str()),
                ));
            }
            (true, Some(w)) if !(10..=DAY).contains(&w) => {
                return Err(err("window_secs", "must be 10 to 86400".to_owned()));
            }
            (false, Some(_)) => {
                return Err(err(
                    "window_secs",
                    format!("does not apply to {}", signal.as_str()),
                ));
            }
            _ => {}
        }
        let per = self
            .scoping(signal)
            .map_err(|(field, message)| err(field, message))?;
        if let Some(hours) = &self.hours {
            if signal != Signal::InboundSilence {
                return Err(err(
                    "hours",
                    format!("does not apply to {}", signal.as_str()),
                ));
            }
            BusinessHours::parse(hours)
                .map_err(|e| err(&format!("hours.{}", e.field), e.message))?;
        }
        for (field, value) in [
            ("for_secs", self.for_secs),
            ("hold_down_secs", self.hold_down_secs),
        ] {
            if value > DAY {
                return Err(err(field, "must be 0 to 86400".to_owned()));
            }
        }
        let severity = Severity::parse(&self.severity).ok_or_else(|| {
            err(
                "severity",
                "must be critical, error, warning or info".to_owned(),
            )
        })?;
        if self.destinations.is_empty() {
            return Err(err("destinations", "must name at least one".to_owned()));
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if !destinations.contains(&d.as_str()) {
                return Err(err(
                    &format!("destinations[{i}]"),
                    format!("{d:?} is not a configured destination"),
                ));
            }
        }
        Ok(Checked {
            signal,
            per,
            severity,
            timing: Timing {
                for_ms: ms(self.for_secs),
                hold_down_ms: ms(self.hold_down_secs),
            },
        })
    }
}

impl RuleSpec {
    /// The one scope value the rule is restricted to (`provider`, `team` or `inbox`), if any.
    pub fn only(&self) -> Option<&str> {
        self.provider
            .as_deref()
            .or(self.team.as_deref())
            .or(self.inbox.as_deref())
    }

    /// What the rule keeps an alert per, if its scope fields fit `signal`.
    pub fn check_scoping(&self, signal: Signal) -> Option<Dimension> {
        self.scoping(signal).ok().flatten()
    }

    /// What the rule keeps an alert per: `per`, or the dimension of its restriction; a field
    /// that does not fit the signal is refused with its name.
    fn scoping(&self, signal: Signal) -> Result<Option<Dimension>, (&'static str, String)> {
        let dimension = signal.dimension();
        let mut per = (signal == Signal::InboundSilence).then_some(Dimension::Inbox);
        if let Some(p) = &self.per {
            let d = Dimension::parse(p).filter(|d| Some(*d) == dimension);
            per = Some(d.ok_or_else(|| {
                (
                    "per",
                    match dimension {
                        Some(d) => format!("must be {} for {}", d.as_str(), signal.as_str()),
                        None => format!(
                            "does not apply to {}: it is watched per account",
                            signal.as_str()
                        ),
                    },
                )
            })?);
        }
        let restrictions = [
            ("provider", &self.provider, Dimension::Provider),
            ("team", &self.team, Dimension::Team),
            ("inbox", &self.inbox, Dimension::Inbox),
        ];
        for (field, value, d) in restrictions {
            let Some(value) = value else { continue };
            if dimension != Some(d) {
                return Err((field, format!("does not apply to {}", signal.as_str())));
            }
            let fits = match d {
                Dimension::Provider => PROVIDERS.contains(&value.as_str()),
                Dimension::Team => crate::ids::has_prefix(value, crate::ids::TEAM),
                Dimension::Inbox => crate::ids::has_prefix(value, crate::ids::INBOX),
            };
            if !fits {
                return Err((
                    field,
                    match d {
                        Dimension::Provider => "must be whatsapp or twilio".to_owned(),
                        Dimension::Team => "must be a team id (team_…)".to_owned(),
                        Dimension::Inbox => "must be an inbox id (inb_…)".to_owned(),
                    },
                ));
            }
            per = Some(d);
        }
        Ok(per)
    }
}

fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A rule's fields, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checked {
    pub signal: Signal,
    /// One alert per value of this dimension; `None`: one for the account.
    pub per: Option<Dimension>,
    pub severity: Severity,
    pub timing: Timing,
}

/// How long a condition must hold to fire, and stay clear to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_ms: i64,
    pub hold_down_ms: i64,
}

/// Where one alert (a rule over one scope) stands. Persisted between evaluations, so the
/// times are wall-clock milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Nothing wrong, or resolved.
    Idle,
    /// The condition holds but not yet for `for`; nothing has been sent.
    Pending { since_ms: i64 },
    /// Sent as firing. `clear_since_ms`: the condition has been clear since then, and the
    /// alert resolves once that lasts the hold-down.
    Firing {
        since_ms: i64,
        clear_since_ms: Option<i64>,
    },
}

impl Phase {
    /// The next phase after observing whether the condition holds at `now_ms`, and the notice
    /// to send, if any. A pending condition that clears sends nothing; a firing one that
    /// clears and comes back within the hold-down sends nothing either.
    pub fn observe(
        self,
        breached: bool,
        now_ms: i64,
        timing: Timing,
    ) -> (Phase, Option<Transition>) {
        let fire = |now_ms| {
            (
                Phase::Firing {
                    since_ms: now_ms,
                    clear_since_ms: None,
                },
                Some(Transition::Firing),
            )
        };
        match (self, breached) {
            (Phase::Idle, false) => (Phase::Idle, None),
            (Phase::Idle, true) if timing.for_ms <= 0 => fire(now_ms),
            (Phase::Idle, true) => (Phase::Pending { since_ms: now_ms }, None),
            (Phase::Pending { .. }, false) => (Phase::Idle, None),
            (Phase::Pending { since_ms }, true) if now_ms - since_ms >= timing.for_ms => {
                fire(now_ms)
            }
            (pending @ Phase::Pending { .. }, true) => (pending, None),
            (Phase::Firing { since_ms, .. }, true) => (
                Phase::Firing {
                    since_ms,
                    clear_since_ms: None,
                },
                None,
            ),
            (
                Phase::Firing {
                    since_ms,
                    clear_since_ms,
                },
                false,
            ) => {
                let clear = clear_since_ms.unwrap_or(now_ms);
                if now_ms - clear >= timing.hold_down_ms {
                    (Phase::Idle, Some(Transition::Resolved))
                } else {
                    (
                        Phase::Firing {
                            since_ms,
                            clear_since_ms: Some(clear),
                        },
                        None,
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        for_ms: 60_000,
        hold_down_ms: 300_000,
    };

    type Steps = Vec<(bool, i64)>;
    type Sent = Vec<(i64, Transition)>;
    type Change = fn(&mut RuleSpec);

    /// Feeds `(breached, at_ms)` observations and collects what would be sent.
    fn run(timing: Timing, steps: &[(bool, i64)]) -> Sent {
        let mut phase = Phase::Idle;
        let mut sent = Vec::new();
        for &(breached, at) in steps {
            let (next, notice) = phase.observe(breached, at, timing);
            phase = next;
            if let Some(n) = notice {
                sent.push((at, n));
            }
        }
        sent
    }

    #[test]
    fn the_lifecycle_fires_once_and_resolves_once() {
        use Transition::*;
        let cases: [(&str, Timing, Steps, Sent); 6] = [
            ("quiet", T, vec![(false, 0), (false, 10_000)], vec![]),
            (
                "a blip shorter than `for` never pages",
                T,
                vec![
                    (true, 0),
                    (true, 30_000),
                    (false, 40_000),
                    (true, 50_000),
                    (true, 100_000),
                ],
                vec![],
            ),
            (
                "held for `for`, then clear for the hold-down",
                T,
                vec![
                    (true, 0),
                    (true, 59_999),
                    (true, 60_000),
                    (true, 90_000),
                    (false, 100_000),
                    (false, 399_999),
                    (false, 400_000),
                    (false, 500_000),
                ],
                vec![(60_000, Firing), (400_000, Resolved)],
            ),
            (
                "flapping within the hold-down keeps one alert",
                T,
                (0..100)
                    .map(|i| (i % 2 == 0 || i < 10, i * 10_000))
                    .collect(),
                vec![(60_000, Firing)],
            ),
            (
                "zero `for` fires at once; zero hold-down resolves at once",
                Timing {
                    for_ms: 0,
                    hold_down_ms: 0,
                },
                vec![(true, 0), (false, 1), (true, 2), (false, 3)],
                vec![(0, Firing), (1, Resolved), (2, Firing), (3, Resolved)],
            ),
            (
                "after resolving, a new breach is a new alert",
                Timing {
                    for_ms: 0,
                    hold_down_ms: 10,
                },
                vec![(true, 0), (false, 5), (false, 15), (true, 20)],
                vec![(0, Firing), (15, Resolved), (20, Firing)],
            ),
        ];
        for (name, timing, steps, want) in cases {
            assert_eq!(run(timing, &steps), want, "{name}");
        }
    }

    fn rule() -> RuleSpec {
        RuleSpec {
            name: "webhook_errors".to_owned(),
            account: None,
            signal: "webhook_error_ratio".to_owned(),
            threshold: 5.0,
            window_secs: Some(300),
            for_secs: 0,
            hold_down_secs: 300,
            severity: "error".to_owned(),
            destinations: vec!["oncall".to_owned()],
            per: None,
            provider: None,
            team: None,
            inbox: None,
            hours: None,
        }
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let destinations = ["oncall", "ops-slack"];
        let checked = rule().check(&destinations).unwrap();
        assert_eq!(checked.signal, Signal::WebhookErrorRatio);
        assert_eq!(checked.severity, Severity::Error);
        assert_eq!(checked.timing.hold_down_ms, 300_000);
        let bad: [(&str, Change); 11] = [
            ("name", |r| r.name = "Web Hooks".to_owned()),
            ("signal", |r| r.signal = "cpu".to_owned()),
            ("threshold", |r| r.threshold = 150.0),
            ("threshold", |r| r.threshold = f64::NAN),
            ("window_secs", |r| r.window_secs = None),
            ("window_secs", |r| r.window_secs = Some(5)),
            ("for_secs", |r| r.for_secs = 100_000),
            ("severity", |r| r.severity = "loud".to_owned()),
            ("destinations", |r| r.destinations.clear()),
            ("destinations[1]", |r| {
                r.destinations.push("nowhere".to_owned())
            }),
            ("window_secs", |r| {
                r.signal = "queue_backlog".to_owned();
                r.threshold = 500.0;
            }),
        ];
        for (field, change) in bad {
            let mut r = rule();
            change(&mut r);
            let e = r.check(&destinations).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn scope_fields_fit_their_signal() {
        let destinations = ["oncall"];
        fn as_signal(signal: &str, window: Option<u64>, threshold: f64) -> RuleSpec {
            RuleSpec {
                signal: signal.to_owned(),
                window_secs: window,
                threshold,
                ..rule()
            }
        }
        fn outbound() -> RuleSpec {
            as_signal("outbound_failure_ratio", Some(600), 20.0)
        }
        fn breaches() -> RuleSpec {
            as_signal("sla_breaches", Some(600), 3.0)
        }
        fn silence() -> RuleSpec {
            as_signal("inbound_silence", None, 900.0)
        }
        let per = |r: RuleSpec| r.check(&destinations).unwrap().per;
        assert_eq!(per(outbound()), None, "account-wide unless asked");
        assert_eq!(per(breaches()), None);
        assert_eq!(per(silence()), Some(Dimension::Inbox), "always per inbox");
        let mut r = outbound();
        r.per = Some("provider".to_owned());
        assert_eq!(per(r), Some(Dimension::Provider));
        let mut r = as_signal("credentials_rejected", Some(600), 0.0);
        r.provider = Some("whatsapp".to_owned());
        assert_eq!(per(r.clone()), Some(Dimension::Provider));
        assert_eq!(r.only(), Some("whatsapp"));
        let mut r = breaches();
        r.team = Some("team_support".to_owned());
        assert_eq!(per(r.clone()), Some(Dimension::Team));
        assert_eq!(r.only(), Some("team_support"));

        type Bad = (&'static str, fn() -> RuleSpec, Change);
        let bad: [Bad; 9] = [
            ("per", outbound, |r| r.per = Some("team".to_owned())),
            ("per", rule, |r| r.per = Some("provider".to_owned())),
            ("provider", outbound, |r| {
                r.provider = Some("telegram".to_owned())
            }),
            ("provider", breaches, |r| {
                r.provider = Some("twilio".to_owned())
            }),
            ("team", breaches, |r| r.team = Some("inb_x".to_owned())),
            ("team", silence, |r| r.team = Some("team_x".to_owned())),
            ("inbox", outbound, |r| r.inbox = Some("inb_x".to_owned())),
            ("hours", breaches, |r| {
                r.hours = Some(HoursSpec {
                    time_zone: "UTC".to_owned(),
                    week: [("mon".to_owned(), "09:00-17:00".to_owned())].into(),
                })
            }),
            ("hours.time_zone", silence, |r| {
                r.hours = Some(HoursSpec {
                    time_zone: "Mars/Olympus".to_owned(),
                    week: [("mon".to_owned(), "09:00-17:00".to_owned())].into(),
                })
            }),
        ];
        for (field, base, change) in bad {
            let mut r = base();
            change(&mut r);
            let e = r.check(&destinations).unwrap_err();
            assert_eq!(e.field, field, "{e:?}");
        }
        let e = RuleSpec {
            window_secs: Some(60),
            ..silence()
        }
        .check(&destinations)
        .unwrap_err();
        assert_eq!(e.field, "window_secs", "silence is not windowed");
    }
}
