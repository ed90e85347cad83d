//! The inboxes and Meta apps declared in config, resolved once at start and shared read-only by
//! every request and worker (no database round trip to route a webhook).

use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;
use switchboard_connectors::Channel;

use crate::config::Config;
use crate::ids;
use crate::store::accounts::Inbox;
use crate::store::{Store, StoreError};

#[derive(Debug)]
pub struct InboxRuntime {
    pub id: String,
    pub slug: String,
    pub account_id: String,
    pub channel: Channel,
    pub provider_ref: Option<String>,
    pub twilio_auth_token: Option<SecretString>,
    pub identity_secret: Option<SecretString>,
}

#[derive(Debug)]
pub struct AppRuntime {
    pub name: String,
    pub account_id: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

#[derive(Debug, Default)]
pub struct Registry {
    by_slug: HashMap<String, Arc<InboxRuntime>>,
    by_id: HashMap<String, Arc<InboxRuntime>>,
    by_phone_number_id: HashMap<String, Arc<InboxRuntime>>,
    apps: HashMap<String, Arc<AppRuntime>>,
    pub default_account_id: String,
}

impl Registry {
    /// Creates the configured accounts and inboxes in the store (idempotently) and indexes them.
    pub async fn load(config: &Config, store: &Store) -> Result<Self, StoreError> {
        let mut registry = Registry {
            default_account_id: store.ensure_account(&config.accounts.default).await?,
            ..Registry::default()
        };
        for app in &config.whatsapp_apps {
            let account_id = store
                .ensure_account(config.account_of(&app.account))
                .await?;
            registry.apps.insert(
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
            let runtime = Arc::new(InboxRuntime {
                id: ids::from_slug(ids::INBOX, &inbox.slug),
                slug: inbox.slug.clone(),
                account_id,
                channel,
                provider_ref,
                twilio_auth_token: inbox.twilio_auth_token.clone(),
                identity_secret: inbox.identity_secret.clone(),
            });
            store
                .upsert_inbox(&Inbox {
                    id: runtime.id.clone(),
                    account_id: runtime.account_id.clone(),
                    slug: runtime.slug.clone(),
                    channel: channel.as_str().to_owned(),
                    name: inbox.name.clone().unwrap_or_else(|| inbox.slug.clone()),
                    provider_ref: runtime.provider_ref.clone(),
                })
                .await?;
            if let (Channel::Whatsapp, Some(id)) = (channel, &runtime.provider_ref) {
                registry
                    .by_phone_number_id
                    .insert(id.clone(), runtime.clone());
            }
            registry.by_id.insert(runtime.id.clone(), runtime.clone());
            registry.by_slug.insert(runtime.slug.clone(), runtime);
        }
        Ok(registry)
    }

    /// An inbox by slug (as in webhook paths) on the given channel.
    pub fn inbox(&self, slug: &str, channel: Channel) -> Option<&Arc<InboxRuntime>> {
        self.by_slug.get(slug).filter(|i| i.channel == channel)
    }

    pub fn inbox_by_id(&self, id: &str) -> Option<&Arc<InboxRuntime>> {
        self.by_id.get(id)
    }

    /// An inbox by id (`inb_…`) or slug, for API filters.
    pub fn find(&self, id_or_slug: &str) -> Option<&Arc<InboxRuntime>> {
        self.by_id
            .get(id_or_slug)
            .or_else(|| self.by_slug.get(id_or_slug))
    }

    pub fn whatsapp_inbox(&self, phone_number_id: &str) -> Option<&Arc<InboxRuntime>> {
        self.by_phone_number_id.get(phone_number_id)
    }

    pub fn app(&self, name: &str) -> Option<&Arc<AppRuntime>> {
        self.apps.get(name)
    }
}
