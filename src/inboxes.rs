//! The inbox registry: every active inbox (declared in config or created over the API) and the
//! Meta apps of the config, held in memory so a webhook is routed without a database round trip.
//!
//! Reads are lock-free: the indexes are one immutable [`Snapshot`] behind an `ArcSwap`, and a
//! reload builds a new snapshot from the database and swaps it in whole. Lookups hand out
//! `Arc<InboxRuntime>`s, so a request keeps the inbox it started with even if a reload lands
//! mid-request.
//!
//! How every node stays current (see [`watch`]):
//! - the node that commits an admin change reloads at once and publishes on [`TOPIC`]; every
//!   node reloads on that message;
//! - every node also reloads every 30 s (a lost pub/sub message heals within that), whenever its
//!   subscription reports a gap (a Redis reconnect), and after (re)subscribing;
//! - a worker that cannot route an item reloads once before calling it unrouted
//!   ([`Registry::reload_after_miss`]), which closes the window between another node's commit
//!   and this node's reload;
//! - with the in-process broker (embedded mode) nodes cannot hear each other, so each polls a
//!   cheap fingerprint of the table every second instead.
//!
//! WhatsApp apps (app secret, verify token) stay config-only; an inbox names one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use switchboard_connectors::Channel;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{Broker, BrokerError, Received, Subscription};
use crate::config::Config;
use crate::crypto::{Keys, OpenError, Sealer, mask};
use crate::ids;
use crate::store::inboxes::InboxRow;
use crate::store::{Store, StoreError};

/// The broker topic that announces "an inbox changed; reload".
pub const TOPIC: &str = "registry";
/// The safety-net reload period.
const FULL_RELOAD: Duration = Duration::from_secs(30);
/// How often embedded nodes compare the table's fingerprint.
const FINGERPRINT_POLL: Duration = Duration::from_secs(1);
/// A routing miss reloads at most this often.
const MISS_RELOAD_AFTER: Duration = Duration::from_millis(250);
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Provider secrets of one inbox, as sealed into the `credentials` column. Deliberately no
/// `Debug`: it holds plaintext.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_auth_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_account_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_secret: Option<String>,
}

impl Credentials {
    fn fields(&self) -> [(&'static str, Option<&String>); 4] {
        [
            ("access_token", self.access_token.as_ref()),
            ("twilio_auth_token", self.twilio_auth_token.as_ref()),
            ("twilio_account_sid", self.twilio_account_sid.as_ref()),
            ("identity_secret", self.identity_secret.as_ref()),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// The sealed JSON for the `credentials` column (`None` when there is nothing to seal).
    pub fn seal(&self, sealer: &Sealer) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let json = serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("a struct of strings serializes"));
        Some(sealer.seal(&json))
    }

    pub fn open(sealed: &str, sealer: &Sealer) -> Result<Self, OpenError> {
        let json = sealer.open(sealed)?;
        serde_json::from_str(json.expose_secret()).map_err(|_| OpenError)
    }

    /// Each secret masked (`••••cdef`), as a JSON object.
    pub fn hint(&self) -> BTreeMap<&'static str, String> {
        self.fields()
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| (name, mask(v))))
            .collect()
    }

    /// [`Credentials::hint`] as the text of the `credentials_hint` column.
    pub fn hint_json(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::json!(self.hint()).to_string())
    }
}

#[derive(Debug)]
pub struct InboxRuntime {
    pub id: String,
    pub slug: String,
    pub account_id: String,
    pub channel: Channel,
    pub provider_ref: Option<String>,
    pub whatsapp_app: Option<String>,
    /// New conversations of this inbox start in this team and branch.
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    pub access_token: Option<SecretString>,
    pub twilio_auth_token: Option<SecretString>,
    pub twilio_account_sid: Option<String>,
    pub identity_secret: Option<SecretString>,
}

#[derive(Debug)]
pub struct AppRuntime {
    pub name: String,
    pub account_id: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

/// One immutable generation of the inbox indexes.
#[derive(Debug, Default)]
struct Snapshot {
    by_slug: HashMap<String, Arc<InboxRuntime>>,
    by_id: HashMap<String, Arc<InboxRuntime>>,
    by_phone_number_id: HashMap<String, Arc<InboxRuntime>>,
}

/// Serializes reloads (never lookups), so an older snapshot cannot replace a newer one.
struct ReloadState {
    at: Instant,
    fingerprint: (i64, i64),
}

pub struct Registry {
    current: ArcSwap<Snapshot>,
    apps: HashMap<String, Arc<AppRuntime>>,
    pub default_account_id: String,
    store: Store,
    keys: Arc<Keys>,
    reload: tokio::sync::Mutex<ReloadState>,
}

impl Registry {
    /// Creates the configured accounts and inboxes in the store (idempotently, credentials
    /// sealed), then loads every active inbox.
    pub async fn load(config: &Config, store: &Store, keys: Arc<Keys>) -> Result<Self, StoreError> {
        let mut apps = HashMap::new();
        for app in &config.whatsapp_apps {
            let account_id = store
                .ensure_account(config.account_of(&app.account))
                .await?;
            apps.insert(
                app.name.clone(),
                Arc::new(AppRuntime {
                    name: app.name.clone(),
                    account_id,
                    app_secret: app.app_secret.clone(),
                    verify_token: app.verify_token.clone(),
                }),
            );
        }
        for inbox in &config.inboxes {
            let account_id = store
                .ensure_account(config.account_of(&inbox.account))
                .await?;
            let channel = Channel::parse(&inbox.channel)
                .ok_or_else(|| StoreError::Setup(format!("bad channel {}", inbox.channel)))?;
            let provider_ref = match channel {
                Channel::Whatsapp => inbox.phone_number_id.clone(),
                Channel::Sms => inbox.phone_number.clone(),
                Channel::Webchat => None,
            };
            let secret =
                |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
            let credentials = Credentials {
                access_token: secret(&inbox.access_token),
                twilio_auth_token: secret(&inbox.twilio_auth_token),
                twilio_account_sid: inbox.twilio_account_sid.clone(),
                identity_secret: secret(&inbox.identity_secret),
            };
            let now = ids::now_ms();
            store
                .upsert_config_inbox(&InboxRow {
                    id: ids::from_slug(ids::INBOX, &inbox.slug),
                    account_id,
                    slug: inbox.slug.clone(),
                    channel: channel.as_str().to_owned(),
                    name: inbox.name.clone().unwrap_or_else(|| inbox.slug.clone()),
                    provider_ref,
                    whatsapp_app: inbox.whatsapp_app.clone(),
                    team_id: None,
                    branch_id: None,
                    credentials: credentials.seal(&keys.sealer),
                    credentials_hint: credentials.hint_json(),
                    managed_by: "config".to_owned(),
                    active: true,
                    created_at_ms: now,
                    updated_at_ms: now,
                })
                .await?;
        }
        let registry = Registry {
            current: ArcSwap::from_pointee(Snapshot::default()),
            apps,
            default_account_id: store.ensure_account(&config.accounts.default).await?,
            store: store.clone(),
            keys,
            reload: tokio::sync::Mutex::new(ReloadState {
                at: Instant::now(),
                fingerprint: (-1, -1),
            }),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// Rebuilds the snapshot from every active inbox row and swaps it in. A row whose
    /// credentials cannot be opened (a different `auth.secret_key`) is left out and logged:
    /// its webhooks then answer as for an unknown inbox rather than checking against nothing.
    pub async fn reload(&self) -> Result<usize, StoreError> {
        let mut state = self.reload.lock().await;
        // Read the fingerprint first: a change committed during the load shows up as a
        // different fingerprint at the next poll.
        let fingerprint = self.store.inbox_fingerprint().await?;
        let rows = self.store.active_inboxes().await?;
        let mut snapshot = Snapshot::default();
        for row in rows {
            let Some(runtime) = self.runtime(row) else {
                continue;
            };
            let runtime = Arc::new(runtime);
            if let (Channel::Whatsapp, Some(id)) = (runtime.channel, &runtime.provider_ref) {
                snapshot
                    .by_phone_number_id
                    .insert(id.clone(), runtime.clone());
            }
            snapshot.by_id.insert(runtime.id.clone(), runtime.clone());
            snapshot.by_slug.insert(runtime.slug.clone(), runtime);
        }
        let count = snapshot.by_id.len();
        self.current.store(Arc::new(snapshot));
        *state = ReloadState {
            at: Instant::now(),
            fingerprint,
        };
        Ok(count)
    }

    fn runtime(&self, row: InboxRow) -> Option<InboxRuntime> {
        let Some(channel) = Channel::parse(&row.channel) else {
            warn!(inbox = %row.id, channel = %row.channel, "Inbox has an unknown channel; skipped.");
            return None;
        };
        let credentials = match row.credentials.as_deref() {
            None => Credentials::default(),
            Some(sealed) => match Credentials::open(sealed, &self.keys.sealer) {
                Ok(c) => c,
                Err(_) => {
                    error!(inbox = %row.id, "Inbox credentials cannot be opened (was auth.secret_key changed?); inbox skipped.");
                    return None;
                }
            },
        };
        Some(InboxRuntime {
            id: row.id,
            slug: row.slug,
            account_id: row.account_id,
            channel,
            provider_ref: row.provider_ref,
            whatsapp_app: row.whatsapp_app,
            team_id: row.team_id,
            branch_id: row.branch_id,
            access_token: credentials.access_token.map(SecretString::from),
            twilio_auth_token: credentials.twilio_auth_token.map(SecretString::from),
            twilio_account_sid: credentials.twilio_account_sid,
            identity_secret: credentials.identity_secret.map(SecretString::from),
        })
    }

    /// Reloads after a routing miss, unless a reload finished very recently (so a stream of
    /// events for a truly unknown number costs at most a few reloads a second).
    pub async fn reload_after_miss(&self) {
        if self.reload.lock().await.at.elapsed() < MISS_RELOAD_AFTER {
            return;
        }
        self.reload_logged("a routing miss").await;
    }

    async fn reload_logged(&self, why: &'static str) {
        match self.reload().await {
            Ok(count) => tracing::debug!(count, why, "Inbox registry reloaded."),
            Err(e) => warn!(error = %e, why, "Inbox registry reload failed; keeping the last one."),
        }
    }

    /// True when the table changed since the last reload.
    async fn fingerprint_changed(&self) -> bool {
        match self.store.inbox_fingerprint().await {
            Ok(now) => self.reload.lock().await.fingerprint != now,
            Err(e) => {
                warn!(error = %e, "Could not read the inbox fingerprint.");
                false
            }
        }
    }

    /// Called after an admin change has committed: reloads this node at once (so the caller
    /// reads its own write), then tells every other node.
    pub async fn announce(&self, broker: &Broker, account_id: &str, inbox_id: &str) {
        self.reload_logged("an admin change").await;
        let payload = serde_json::json!({ "account_id": account_id, "inbox_id": inbox_id });
        if let Err(e) = broker.publish(TOPIC, payload.to_string().into()).await {
            // The periodic reload heals this within FULL_RELOAD.
            warn!(error = %e, inbox = %inbox_id, "Could not announce an inbox change.");
        }
    }

    /// An inbox by slug (as in webhook paths) on the given channel.
    pub fn inbox(&self, slug: &str, channel: Channel) -> Option<Arc<InboxRuntime>> {
        self.current
            .load()
            .by_slug
            .get(slug)
            .filter(|i| i.channel == channel)
            .cloned()
    }

    pub fn inbox_by_id(&self, id: &str) -> Option<Arc<InboxRuntime>> {
        self.current.load().by_id.get(id).cloned()
    }

    /// An inbox by id (`inb_…`) or slug, for API filters.
    pub fn find(&self, id_or_slug: &str) -> Option<Arc<InboxRuntime>> {
        let snapshot = self.current.load();
        snapshot
            .by_id
            .get(id_or_slug)
            .or_else(|| snapshot.by_slug.get(id_or_slug))
            .cloned()
    }

    pub fn whatsapp_inbox(&self, phone_number_id: &str) -> Option<Arc<InboxRuntime>> {
        self.current
            .load()
            .by_phone_number_id
            .get(phone_number_id)
            .cloned()
    }

    pub fn app(&self, name: &str) -> Option<&Arc<AppRuntime>> {
        self.apps.get(name)
    }
}

/// Keeps `registry` current until `shutdown` (see the module docs). Every node runs one.
pub async fn watch(registry: Arc<Registry>, broker: Broker, shutdown: CancellationToken) {
    // The in-process broker only reaches this process: fall back on polling the database.
    let poll_database = matches!(broker, Broker::Memory(_));
    loop {
        let mut subscription = match broker.subscribe(TOPIC).await {
            Ok(s) => Some(s),
            Err(BrokerError::Closed) => return,
            Err(e) => {
                warn!(error = %e, "Cannot subscribe to inbox changes; relying on periodic reloads.");
                None
            }
        };
        // Whatever changed while we were not subscribed.
        registry.reload_logged("a (re)subscription").await;
        let mut full =
            tokio::time::interval_at(tokio::time::Instant::now() + FULL_RELOAD, FULL_RELOAD);
        let mut poll = tokio::time::interval(FINGERPRINT_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = next(&mut subscription) => match received {
                    Some(Received::Message(_)) => registry.reload_logged("an announcement").await,
                    Some(Received::Lagged(_)) => {
                        info!("Inbox announcements may have been missed; reloading.");
                        registry.reload_logged("a subscription gap").await;
                    }
                    // The subscription ended (or never started): subscribe again.
                    None => break,
                },
                _ = full.tick() => registry.reload_logged("the periodic safety net").await,
                _ = poll.tick(), if poll_database => {
                    if registry.fingerprint_changed().await {
                        registry.reload_logged("a changed fingerprint").await;
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
        }
    }
}

async fn next(subscription: &mut Option<Subscription>) -> Option<Received> {
    match subscription {
        Some(s) => s.recv().await,
        None => {
            tokio::time::sleep(RESUBSCRIBE_AFTER * 5).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_seal_and_hint_without_plaintext() {
        let keys = Keys::from_master(b"0123456789abcdef0123456789abcdef");
        let creds = Credentials {
            twilio_auth_token: Some("fresh-token-0123456789abcdef".to_owned()),
            ..Credentials::default()
        };
        let sealed = creds.seal(&keys.sealer).expect("something to seal");
        assert!(!sealed.contains("fresh-token"));
        assert!(Credentials::open(&sealed, &keys.sealer).expect("opens") == creds);
        assert_eq!(
            creds.hint_json().as_deref(),
            Some(r#"{"twilio_auth_token":"••••cdef"}"#)
        );
        assert!(Credentials::default().seal(&keys.sealer).is_none());
        assert!(Credentials::default().hint_json().is_none());
    }
}
