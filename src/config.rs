//! Configuration: embedded defaults (`config.toml`), an optional file, then
//! `SWITCHBOARD__SECTION__KEY` environment variables, then validation.
//!
//! Validation happens once, at start, and every error names the key it is about
//! (`inboxes[1].phone_number_id: …`). Secrets are [`SecretString`]s and never printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use switchboard_connectors::Channel;

/// The documented defaults, compiled into the binary.
pub const DEFAULTS: &str = include_str!("../config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub queue: QueueConfig,
    pub intake: IntakeConfig,
    pub log: LogConfig,
    pub accounts: AccountsConfig,
    pub auth: AuthConfig,
    pub rate_limits: RateLimitConfig,
    pub routing: RoutingConfig,
    pub live: LiveConfig,
    pub outbound: OutboundConfig,
    pub alerts: AlertsConfig,
    pub sla: SlaConfig,
    pub webhooks_out: WebhooksOutConfig,
    #[serde(default)]
    pub whatsapp_apps: Vec<WhatsappApp>,
    #[serde(default)]
    pub inboxes: Vec<InboxConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub public_url: String,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    pub schema: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: SecretString,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub sqlite_path: String,
    pub concurrency: usize,
    pub recovery_after_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    pub dedup_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    pub default: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The master secret: signs access tokens and seals stored credentials. Empty means
    /// "generate one into `key_file`" (embedded mode only).
    pub secret_key: SecretString,
    pub key_file: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Marks the refresh cookie `Secure`; turn off only for plain-http development.
    pub cookie_secure: bool,
    pub lockout_threshold: u32,
    pub lockout_secs: u64,
    pub min_password_length: usize,
    /// The first-run setup token (`POST /v1/setup`) while no user exists. Empty: a random one,
    /// printed at start.
    pub setup_token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// An agent whose last heartbeat is older than this reads as `offline`, whatever status
    /// they chose.
    pub presence_timeout_secs: u64,
    /// How long an offline agent keeps their conversations.
    pub grace_secs: u64,
    /// Reroute a conversation whose assignee has not replied this long (0: never).
    pub no_reply_secs: u64,
    /// What one priority point is worth in waiting time.
    pub tier_weight_secs: u64,
    /// A reply window closing within this makes a conversation urgent.
    pub urgency_margin_secs: u64,
    /// How recent the contact's last agent must be to be preferred.
    pub affinity_window_secs: u64,
    /// The dispatcher's safety-net resync period.
    pub resync_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// How long events are kept for resuming consoles.
    pub retention_secs: u64,
    /// Events a socket may fall behind before it is closed with 4008.
    pub socket_buffer: usize,
    /// Server ping period; also the console presence heartbeat period.
    pub ping_secs: u64,
    /// Largest client frame (1009 above it).
    pub max_frame_bytes: usize,
    /// Lifetime of a single-use WebSocket ticket.
    pub ticket_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Meta Graph API base URL (no trailing slash).
    pub whatsapp_base_url: String,
    /// Graph API version in the send path (`v23.0`).
    pub whatsapp_api_version: String,
    /// Twilio REST API base URL (no trailing slash).
    pub twilio_base_url: String,
    /// One provider call may take this long before it counts as a timeout (a retry).
    pub request_timeout_secs: u64,
    /// Attempts before a message is given up on and its delivery becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry's delay; it doubles per attempt (with full jitter) up to the cap.
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
    /// Delivery jobs run at once per worker node.
    pub concurrency: usize,
    /// Messages per second per WhatsApp phone number (Meta's default throughput is 80).
    pub whatsapp_per_number_per_second: u32,
    /// Messages to one customer from one number: a burst, then one per interval (Meta's pair
    /// rate limit, error 131056).
    pub whatsapp_pair_burst: u32,
    pub whatsapp_pair_interval_ms: u64,
    /// Messages per second per Twilio sender number (1 for a US long code).
    pub twilio_per_number_per_second: u32,
    /// How long the reply endpoint waits for a media URL to answer before refusing it.
    pub media_check_timeout_ms: u64,
    /// Accept media URLs on loopback and private addresses (tests, or a provider inside the
    /// same network). Off: such URLs are refused, since a provider could never fetch them.
    pub allow_private_media_urls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// How often each worker node looks at the SLA clocks of open conversations.
    pub check_every_ms: u64,
}

/// Signed webhooks to customers' systems (docs/WEBHOOKS_OUT.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksOutConfig {
    /// The delay before each attempt, counted from the event (first) or the previous failure;
    /// as many attempts as entries.
    pub schedule_ms: Vec<u64>,
    /// One attempt may take this long, answer included; then it is cut and counts as failed.
    pub request_timeout_ms: u64,
    /// At most this much of a receiver's answer is read (and kept, for the deliveries list).
    pub max_response_bytes: usize,
    /// After this many deliveries in a row failed for good, the endpoint is disabled.
    pub disable_after_failures: u32,
    /// How long a rotated-out secret keeps signing, unless the rotation says otherwise.
    pub rotation_overlap_secs: u64,
    /// Accept `http://` endpoint URLs (otherwise HTTPS is required).
    pub allow_http: bool,
    /// Host names, addresses and networks (`10.0.0.0/8`) the SSRF guard lets through.
    pub allowed_hosts: Vec<String>,
    /// How often each worker node looks for new events and due deliveries.
    pub poll_ms: u64,
    /// Attempts in flight at once per worker node.
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often each worker node evaluates the rules.
    pub evaluate_every_ms: u64,
    /// PagerDuty Events API base URL (no trailing slash).
    pub pagerduty_base_url: String,
    /// Attempts per notice before it is given up on (the delivery shows why).
    pub max_attempts: u32,
    /// The first retry's delay, doubling per attempt (full jitter) up to `retry_max_secs`;
    /// a destination's `Retry-After` is honoured when longer.
    pub retry_base_ms: u64,
    pub retry_max_secs: u64,
    /// Adds the two rules that ship unless rules of their names are declared: `queue_backlog`
    /// (more than 500 waiting for 1 minute) to every Slack destination, and `webhook_errors`
    /// (more than 5% of webhooks refused over 5 minutes) to every PagerDuty destination.
    pub default_rules: bool,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    #[serde(default)]
    pub rules: Vec<crate::alerts::RuleSpec>,
}

/// Where alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// 1 to 64 lowercase letters, digits, `-` and `_`; unique within its account.
    pub name: String,
    /// `slack` or `pagerduty`.
    pub kind: String,
    pub account: Option<String>,
    /// Slack: the incoming webhook URL (it is the secret).
    pub url: Option<SecretString>,
    /// PagerDuty: the Events API v2 integration key.
    pub routing_key: Option<SecretString>,
}

impl AlertsConfig {
    /// The declared rules, and the shipped ones (see `default_rules`) where no rule of their
    /// name is declared for the account.
    pub fn effective_rules(&self, default_account: &str) -> Vec<crate::alerts::RuleSpec> {
        let mut rules = self.rules.clone();
        if !self.default_rules {
            return rules;
        }
        let account_of =
            |a: &Option<String>| a.clone().unwrap_or_else(|| default_account.to_owned());
        let mut accounts: Vec<String> = self
            .destinations
            .iter()
            .map(|d| account_of(&d.account))
            .collect();
        accounts.dedup();
        for account in accounts {
            let named = |kind: &str| -> Vec<String> {
                self.destinations
                    .iter()
                    .filter(|d| d.kind == kind && account_of(&d.account) == account)
                    .map(|d| d.name.clone())
                    .collect()
            };
            for (rule, signal, threshold, window, for_secs, severity, kind) in [
                (
                    "queue_backlog",
                    "queue_backlog",
                    500.0,
                    None,
                    60,
                    "warning",
                    "slack",
                ),
                (
                    "webhook_errors",
                    "webhook_error_ratio",
                    5.0,
                    Some(300),
                    0,
                    "error",
                    "pagerduty",
                ),
            ] {
                let destinations = named(kind);
                let declared = rules
                    .iter()
                    .any(|r| r.name == rule && account_of(&r.account) == account);
                if destinations.is_empty() || declared {
                    continue;
                }
                rules.push(crate::alerts::RuleSpec {
                    name: rule.to_owned(),
                    account: Some(account.clone()),
                    signal: signal.to_owned(),
                    threshold,
                    window_secs: window,
                    for_secs,
                    hold_down_secs: 300,
                    severity: severity.to_owned(),
                    destinations,
                    per: None,
                    provider: None,
                    team: None,
                    inbox: None,
                    hours: None,
                });
            }
        }
        rules
    }
}

impl RoutingConfig {
    fn ms(secs: u64) -> i64 {
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    pub fn presence_timeout_ms(&self) -> i64 {
        Self::ms(self.presence_timeout_secs)
    }

    pub fn grace_ms(&self) -> i64 {
        Self::ms(self.grace_secs)
    }

    pub fn no_reply_ms(&self) -> Option<i64> {
        (self.no_reply_secs > 0).then(|| Self::ms(self.no_reply_secs))
    }

    pub fn engine(&self) -> switchboard_routing::engine::EngineConfig {
        switchboard_routing::engine::EngineConfig {
            tier_weight_ms: Self::ms(self.tier_weight_secs),
            urgency_margin_ms: Self::ms(self.urgency_margin_secs),
            affinity_window_ms: Self::ms(self.affinity_window_secs),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Login attempts per IP per minute (counted in Redis in the distributed mode).
    pub login_per_minute: u32,
    /// Webhook requests per IP per second (burst of the same size).
    pub webhooks_per_second: u32,
    /// REST requests per user or API key per second (burst of the same size).
    pub api_per_second: u32,
    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a proxy you run).
    pub trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappApp {
    pub name: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
    pub account: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxConfig {
    pub slug: String,
    pub name: Option<String>,
    pub channel: String,
    pub account: Option<String>,
    pub whatsapp_app: Option<String>,
    pub phone_number_id: Option<String>,
    pub phone_number: Option<String>,
    pub twilio_auth_token: Option<SecretString>,
    pub identity_secret: Option<SecretString>,
    /// WhatsApp: the Graph API token replies are sent with.
    pub access_token: Option<SecretString>,
    /// SMS: the Twilio account replies are sent from.
    pub twilio_account_sid: Option<String>,
}

/// Which column of ARCHITECTURE.md's table this configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Distributed,
}

impl Config {
    /// Loads the layers and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("SWITCHBOARD__").split("__"));
        Self::from_figment(figment)
    }

    /// The embedded defaults with TOML documents layered over them, in order (tests, tools).
    pub fn from_layers(layers: &[&str]) -> Result<Self, ConfigError> {
        let figment = layers
            .iter()
            .fold(Figment::from(Toml::string(DEFAULTS)), |f, layer| {
                f.merge(Toml::string(layer))
            });
        Self::from_figment(figment)
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn mode(&self) -> Mode {
        if self.redis.url.expose_secret().is_empty() {
            Mode::Embedded
        } else {
            Mode::Distributed
        }
    }

    pub fn is_postgres(&self) -> bool {
        let url = self.database.url.expose_secret();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// The account slug an entry belongs to.
    pub fn account_of<'a>(&'a self, account: &'a Option<String>) -> &'a str {
        account.as_deref().unwrap_or(&self.accounts.default)
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let alerts = &self.alerts;
        if !(100..=3_600_000).contains(&alerts.evaluate_every_ms) {
            return Err(invalid(
                "alerts.evaluate_every_ms",
                "must be 100 to 3600000",
            ));
        }
        if !(100..=3_600_000).contains(&self.sla.check_every_ms) {
            return Err(invalid("sla.check_every_ms", "must be 100 to 3600000"));
        }
        if !(1..=50).contains(&alerts.max_attempts) {
            return Err(invalid("alerts.max_attempts", "must be 1 to 50"));
        }
        if alerts.retry_base_ms == 0 || alerts.retry_max_secs == 0 {
            return Err(invalid(
                "alerts.retry_base_ms",
                "retry_base_ms and retry_max_secs must be at least 1",
            ));
        }
        if !alerts.pagerduty_base_url.starts_with("http://")
            && !alerts.pagerduty_base_url.starts_with("https://")
        {
            return Err(invalid(
                "alerts.pagerduty_base_url",
                "must be an http(s) URL",
            ));
        }
        let mut seen = HashSet::new();
        for (i, d) in alerts.destinations.iter().enumerate() {
            let key = |field: &str| format!("alerts.destinations[{i}].{field}");
            if !is_slug(&d.name) {
                return Err(invalid(
                    key("name"),
                    "must be 1 to 64 lowercase letters, digits, - and _",
                ));
            }
            let account = self.account_of(&d.account);
            if !seen.insert((account.to_owned(), d.name.clone())) {
                return Err(invalid(key("name"), "is declared twice for its account"));
            }
            let present = |v: &Option<SecretString>| {
                v.as_ref().is_some_and(|s| !s.expose_secret().is_empty())
            };
            match d.kind.as_str() {
                "slack" => {
                    let url = d
                        .url
                        .as_ref()
                        .map(|u| u.expose_secret().to_owned())
                        .unwrap_or_default();
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid(
                            key("url"),
                            "a Slack destination needs its incoming webhook URL",
                        ));
                    }
                    if d.routing_key.is_some() {
                        return Err(invalid(key("routing_key"), "is for PagerDuty destinations"));
                    }
                }
                "pagerduty" => {
                    if !present(&d.routing_key) {
                        return Err(invalid(
                            key("routing_key"),
                            "a PagerDuty destination needs its integration key",
                        ));
                    }
                    if d.url.is_some() {
                        return Err(invalid(key("url"), "is for Slack destinations"));
                    }
                }
                _ => return Err(invalid(key("kind"), "must be slack or pagerduty")),
            }
        }
        let mut names = HashSet::new();
        for (i, rule) in alerts
            .effective_rules(&self.accounts.default)
            .iter()
            .enumerate()
        {
            let account = self.account_of(&rule.account);
            let destinations: Vec<&str> = alerts
                .destinations
                .iter()
                .filter(|d| self.account_of(&d.account) == account)
                .map(|d| d.name.as_str())
                .collect();
            if let Err(e) = rule.check(&destinations) {
                return Err(invalid(format!("alerts.rules[{i}].{}", e.field), e.message));
            }
            if !names.insert((account.to_owned(), rule.name.clone())) {
                return Err(invalid(
                    format!("alerts.rules[{i}].name"),
                    "is declared twice for its account",
                ));
            }
        }
        Ok(())
    }

    fn validate_webhooks_out(&self) -> Result<(), ConfigError> {
        let w = &self.webhooks_out;
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        if w.schedule_ms.is_empty() || w.schedule_ms.len() > 50 {
            return Err(invalid(
                "webhooks_out.schedule_ms",
                "must list 1 to 50 delays",
            ));
        }
        if w.schedule_ms.iter().any(|d| *d > DAY_MS) {
            return Err(invalid(
                "webhooks_out.schedule_ms",
                "each delay must be at most one day (86400000)",
            ));
        }
        if !(100..=300_000).contains(&w.request_timeout_ms) {
            return Err(invalid(
                "webhooks_out.request_timeout_ms",
                "must be 100 to 300000",
            ));
        }
        if !(256..=1_048_576).contains(&w.max_response_bytes) {
            return Err(invalid(
                "webhooks_out.max_response_bytes",
                "must be 256 to 1048576",
            ));
        }
        if !(1..=1000).contains(&w.disable_after_failures) {
            return Err(invalid(
                "webhooks_out.disable_after_failures",
                "must be 1 to 1000",
            ));
        }
        if w.rotation_overlap_secs > 7 * 24 * 3600 {
            return Err(invalid(
                "webhooks_out.rotation_overlap_secs",
                "must be 0 to 604800 (7 days)",
            ));
        }
        if !(10..=60_000).contains(&w.poll_ms) {
            return Err(invalid("webhooks_out.poll_ms", "must be 10 to 60000"));
        }
        if !(1..=1000).contains(&w.concurrency) {
            return Err(invalid("webhooks_out.concurrency", "must be 1 to 1000"));
        }
        crate::ssrf::Guard::new(&w.allowed_hosts)
            .map_err(|e| invalid("webhooks_out.allowed_hosts", e))?;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_webhooks_out()?;
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:") || self.is_postgres()) {
            return Err(invalid(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if !is_slug(&self.database.schema) {
            return Err(invalid(
                "database.schema",
                "must be lowercase letters, digits and _",
            ));
        }
        let redis = self.redis.url.expose_secret();
        if !redis.is_empty() && !redis.starts_with("redis://") && !redis.starts_with("rediss://") {
            return Err(invalid(
                "redis.url",
                "must be empty (embedded) or start with redis://",
            ));
        }
        if self.mode() == Mode::Distributed && !self.is_postgres() {
            return Err(invalid(
                "database.url",
                "the distributed mode (redis.url set) needs PostgreSQL: several nodes cannot share a SQLite file",
            ));
        }
        let public = url::Url::parse(&self.server.public_url)
            .map_err(|e| invalid("server.public_url", e.to_string()))?;
        if !matches!(public.scheme(), "http" | "https") || self.server.public_url.ends_with('/') {
            return Err(invalid(
                "server.public_url",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.queue.concurrency == 0 {
            return Err(invalid("queue.concurrency", "must be at least 1"));
        }
        if self.intake.dedup_ttl_secs == 0 {
            return Err(invalid("intake.dedup_ttl_secs", "must be at least 1"));
        }
        if !is_slug(&self.accounts.default) {
            return Err(invalid(
                "accounts.default",
                "must be lowercase letters, digits, - and _",
            ));
        }
        let secret = self.auth.secret_key.expose_secret();
        if !secret.is_empty() && secret.len() < 32 {
            return Err(invalid("auth.secret_key", "must be at least 32 characters"));
        }
        if secret.is_empty() && self.mode() == Mode::Distributed {
            return Err(invalid(
                "auth.secret_key",
                "required in the distributed mode: every node must sign and seal with the same key",
            ));
        }
        if self.auth.access_token_ttl_secs < 60 || self.auth.access_token_ttl_secs > 86_400 {
            return Err(invalid(
                "auth.access_token_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        if self.auth.refresh_token_ttl_secs < self.auth.access_token_ttl_secs {
            return Err(invalid(
                "auth.refresh_token_ttl_secs",
                "must be at least auth.access_token_ttl_secs",
            ));
        }
        if self.auth.lockout_threshold == 0 {
            return Err(invalid("auth.lockout_threshold", "must be at least 1"));
        }
        if self.auth.min_password_length < 8 {
            return Err(invalid("auth.min_password_length", "must be at least 8"));
        }
        let setup = self.auth.setup_token.expose_secret();
        if !setup.is_empty()
            && (setup.len() < 16
                || !setup
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(invalid(
                "auth.setup_token",
                "must be at least 16 characters of letters, digits, - and _",
            ));
        }
        for (key, value) in [
            (
                "rate_limits.login_per_minute",
                self.rate_limits.login_per_minute,
            ),
            (
                "rate_limits.webhooks_per_second",
                self.rate_limits.webhooks_per_second,
            ),
            (
                "rate_limits.api_per_second",
                self.rate_limits.api_per_second,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        let outbound = &self.outbound;
        for (field, url) in [
            ("outbound.whatsapp_base_url", &outbound.whatsapp_base_url),
            ("outbound.twilio_base_url", &outbound.twilio_base_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return Err(invalid(
                    field,
                    "must be an http(s) URL without a trailing slash",
                ));
            }
        }
        if !(1..=300).contains(&outbound.request_timeout_secs) {
            return Err(invalid("outbound.request_timeout_secs", "must be 1 to 300"));
        }
        if !(1..=50).contains(&outbound.max_attempts) {
            return Err(invalid("outbound.max_attempts", "must be 1 to 50"));
        }
        if outbound.retry_base_ms == 0 || outbound.retry_max_secs == 0 {
            return Err(invalid(
                "outbound.retry_base_ms",
                "retry_base_ms and retry_max_secs must be at least 1",
            ));
        }
        if !(1..=256).contains(&outbound.concurrency) {
            return Err(invalid("outbound.concurrency", "must be 1 to 256"));
        }
        for (field, n) in [
            (
                "outbound.whatsapp_per_number_per_second",
                outbound.whatsapp_per_number_per_second,
            ),
            ("outbound.whatsapp_pair_burst", outbound.whatsapp_pair_burst),
            (
                "outbound.twilio_per_number_per_second",
                outbound.twilio_per_number_per_second,
            ),
        ] {
            if n == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if !(100..=30_000).contains(&outbound.media_check_timeout_ms) {
            return Err(invalid(
                "outbound.media_check_timeout_ms",
                "must be 100 to 30000",
            ));
        }
        if outbound.whatsapp_pair_interval_ms == 0 {
            return Err(invalid(
                "outbound.whatsapp_pair_interval_ms",
                "must be at least 1",
            ));
        }
        self.validate_alerts()?;
        if self.routing.presence_timeout_secs < 5 {
            return Err(invalid(
                "routing.presence_timeout_secs",
                "must be at least 5 (heartbeats need time to arrive)",
            ));
        }
        let live = &self.live;
        for (key, value, low, high) in [
            ("live.retention_secs", live.retention_secs, 60, u64::MAX),
            ("live.socket_buffer", live.socket_buffer as u64, 16, 65536),
            ("live.ping_secs", live.ping_secs, 1, 300),
            (
                "live.max_frame_bytes",
                live.max_frame_bytes as u64,
                1024,
                1 << 20,
            ),
            ("live.ticket_ttl_secs", live.ticket_ttl_secs, 5, 300),
        ] {
            if !(low..=high).contains(&value) {
                return Err(invalid(key, format!("must be between {low} and {high}")));
            }
        }
        if self.routing.resync_secs == 0 {
            return Err(invalid("routing.resync_secs", "must be at least 1"));
        }
        let mut apps = HashSet::new();
        for (i, app) in self.whatsapp_apps.iter().enumerate() {
            let key = |field: &str| format!("whatsapp_apps[{i}].{field}");
            if !is_slug(&app.name) {
                return Err(invalid(
                    key("name"),
                    "must be lowercase letters, digits, - and _",
                ));
            }
            if !apps.insert(app.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is declared twice", app.name),
                ));
            }
            if app.app_secret.expose_secret().is_empty() {
                return Err(invalid(key("app_secret"), "must not be empty"));
            }
            if app.verify_token.expose_secret().is_empty() {
                return Err(invalid(key("verify_token"), "must not be empty"));
            }
            self.check_account(&app.account, key("account"))?;
        }
        let mut slugs = HashSet::new();
        let mut numbers = HashSet::new();
        for (i, inbox) in self.inboxes.iter().enumerate() {
            let key = |field: &str| format!("inboxes[{i}].{field}");
            if !is_slug(&inbox.slug) {
                return Err(invalid(
                    key("slug"),
                    "must be lowercase letters, digits, - and _",
                ));
            }
            if !slugs.insert(inbox.slug.as_str()) {
                return Err(invalid(
                    key("slug"),
                    format!("`{}` is declared twice", inbox.slug),
                ));
            }
            self.check_account(&inbox.account, key("account"))?;
            let Some(channel) = Channel::parse(&inbox.channel) else {
                return Err(invalid(
                    key("channel"),
                    "must be one of whatsapp, sms, webchat",
                ));
            };
            let required = |value: bool, field: &str| {
                if value {
                    Ok(())
                } else {
                    Err(invalid(
                        key(field),
                        format!("required for channel `{}`", inbox.channel),
                    ))
                }
            };
            match channel {
                Channel::Whatsapp => {
                    required(inbox.whatsapp_app.is_some(), "whatsapp_app")?;
                    required(inbox.phone_number_id.is_some(), "phone_number_id")?;
                    let app = inbox.whatsapp_app.as_deref().unwrap_or_default();
                    if !apps.contains(app) {
                        return Err(invalid(
                            key("whatsapp_app"),
                            format!("no whatsapp_apps entry is named `{app}`"),
                        ));
                    }
                    let id = inbox.phone_number_id.as_deref().unwrap_or_default();
                    if !numbers.insert(("whatsapp", id)) {
                        return Err(invalid(
                            key("phone_number_id"),
                            format!("`{id}` is used by two inboxes"),
                        ));
                    }
                }
                Channel::Sms => {
                    required(inbox.phone_number.is_some(), "phone_number")?;
                    required(inbox.twilio_auth_token.is_some(), "twilio_auth_token")?;
                    let number = inbox.phone_number.as_deref().unwrap_or_default();
                    if !is_e164(number) {
                        return Err(invalid(
                            key("phone_number"),
                            "must be E.164, like +14155550100",
                        ));
                    }
                    if !numbers.insert(("sms", number)) {
                        return Err(invalid(
                            key("phone_number"),
                            format!("`{number}` is used by two inboxes"),
                        ));
                    }
                }
                Channel::Webchat => {}
            }
        }
        Ok(())
    }

    fn check_account(&self, account: &Option<String>, key: String) -> Result<(), ConfigError> {
        match account {
            Some(slug) if !is_slug(slug) => {
                Err(invalid(key, "must be lowercase letters, digits, - and _"))
            }
            _ => Ok(()),
        }
    }
}

/// Slug shape shared by config keys and the inbox API: 1–64 of `a-z 0-9 - _`.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(extra)))
    }

    #[test]
    fn defaults_are_embedded_and_valid() {
        let config = load("").unwrap();
        assert_eq!(config.mode(), Mode::Embedded);
        assert!(!config.is_postgres());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[redis]\nurl = \"redis://127.0.0.1\"", "database.url"),
            (
                "[[inboxes]]\nslug = \"a\"\nchannel = \"whatsapp\"",
                "inboxes[0].whatsapp_app",
            ),
            (
                "[[inboxes]]\nslug = \"a\"\nchannel = \"sms\"\nphone_number = \"555\"\ntwilio_auth_token = \"t\"",
                "inboxes[0].phone_number",
            ),
            (
                "[[inboxes]]\nslug = \"A B\"\nchannel = \"webchat\"",
                "inboxes[0].slug",
            ),
            (
                "[[inboxes]]\nslug = \"a\"\nchannel = \"fax\"",
                "inboxes[0].channel",
            ),
            ("[server]\npublic_url = \"http://x/\"", "server.public_url"),
            (
                "[routing]\npresence_timeout_secs = 4",
                "routing.presence_timeout_secs",
            ),
            (
                "[webhooks_out]\nschedule_ms = []",
                "webhooks_out.schedule_ms",
            ),
            (
                "[webhooks_out]\nrequest_timeout_ms = 1",
                "webhooks_out.request_timeout_ms",
            ),
            (
                "[webhooks_out]\nallowed_hosts = [\"10.0.0.0/99\"]",
                "webhooks_out.allowed_hosts",
            ),
        ];
        for (toml, key) in cases {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?} gave {err:?}, wanted {key}");
        }
        let err = load("[queue]\nconcurrency = \"many\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("concurrency"), "{err}");
    }

    #[test]
    fn alert_errors_name_the_key_and_defaults_ship() {
        const SLACK: &str = "[[alerts.destinations]]\nname = \"ops\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/x\"\n";
        let cases = [
            (
                "[alerts]\nevaluate_every_ms = 5",
                "alerts.evaluate_every_ms",
            ),
            (
                "[[alerts.destinations]]\nname = \"x\"\nkind = \"email\"",
                "alerts.destinations[1].kind",
            ),
            (
                "[[alerts.destinations]]\nname = \"x\"\nkind = \"slack\"",
                "alerts.destinations[1].url",
            ),
            (
                "[[alerts.destinations]]\nname = \"x\"\nkind = \"pagerduty\"",
                "alerts.destinations[1].routing_key",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nsignal = \"queue_backlog\"\nthreshold = 1\ndestinations = [\"nowhere\"]",
                "alerts.rules[0].destinations[0]",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nsignal = \"disk_full\"\nthreshold = 1\ndestinations = [\"ops\"]",
                "alerts.rules[0].signal",
            ),
        ];
        for (toml, key) in cases {
            let err = load(&format!("{SLACK}{toml}")).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?} gave {err:?}, wanted {key}");
        }
        // No destination, no shipped rule; a Slack destination gets the backlog rule.
        let config = load("").unwrap();
        assert!(config.alerts.effective_rules("default").is_empty());
        let config = load(SLACK).unwrap();
        let rules = config.alerts.effective_rules("default");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            (rules[0].name.as_str(), rules[0].threshold),
            ("queue_backlog", 500.0)
        );
        assert_eq!(rules[0].destinations, ["ops"]);
    }

    #[test]
    fn e164() {
        assert!(is_e164("+14155550100"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+1415x550100"));
    }
}
