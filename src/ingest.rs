//! The hub's side of the normalize worker: stores a normalized batch and tells consoles.
//!
//! Items are routed to inboxes from the inbox registry (WhatsApp by `phone_number_id`, the
//! others by the inbox in the request path). An item whose inbox is unknown is not dropped: the
//! event is marked `unrouted` with the reason, its raw body stays, and operators see it at
//! `GET /v1/inbound-events?status=unrouted`. Events are published only for rows this run
//! actually created, so a re-run publishes nothing twice.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use switchboard_connectors::{InboundBatch, InboundItem, RouteKey};
use switchboard_workers::{InboundPort, PortError, RawEvent, SourceKind};

use crate::inboxes::{InboxRuntime, Registry};
use crate::store::conversations::Target;
use crate::store::{Store, StoreError};

pub struct Ingest {
    pub store: Store,
    pub events: crate::live::Events,
    pub registry: Arc<Registry>,
    /// Counts customer messages per inbox for the `inbound_silence` alert signal.
    pub tally: Arc<crate::alerts::watch::Tally>,
}

fn transient(e: StoreError) -> PortError {
    PortError::Transient(e.to_string())
}

/// The topic every change of an account is published on.
pub fn account_topic(account_id: &str) -> String {
    format!("account:{account_id}")
}

impl Ingest {
    fn route(&self, event: &RawEvent, route: &RouteKey) -> Option<Arc<InboxRuntime>> {
        let inbox = match route {
            RouteKey::PhoneNumberId { phone_number_id } => {
                self.registry.whatsapp_inbox(phone_number_id)
            }
            RouteKey::Inbox => event
                .inbox_id
                .as_deref()
                .and_then(|id| self.registry.inbox_by_id(id)),
        };
        // An event only reaches inboxes of the account whose secret signed it: one tenant's
        // Meta app cannot post into another tenant's number by naming its phone_number_id.
        inbox.filter(|i| i.account_id == event.account_id)
    }

    /// Routes an item; on a miss, reloads the registry once and tries again, so an inbox
    /// created on another node a moment ago is found even before its announcement arrives.
    async fn resolve(&self, event: &RawEvent, route: &RouteKey) -> Option<Arc<InboxRuntime>> {
        if let Some(inbox) = self.route(event, route) {
            return Some(inbox);
        }
        self.registry.reload_after_miss().await;
        self.route(event, route)
    }

    async fn publish(&self, account_id: &str, kind: &str, data: serde_json::Value) {
        self.events.publish(account_id, kind, data).await;
    }
}

fn route_name(route: &RouteKey) -> String {
    match route {
        RouteKey::PhoneNumberId { phone_number_id } => format!("phone_number_id {phone_number_id}"),
        RouteKey::Inbox => "the request's inbox".to_owned(),
    }
}

#[async_trait]
impl InboundPort for Ingest {
    async fn load(&self, event_id: &str) -> Result<Option<RawEvent>, PortError> {
        self.store.load_event(event_id).await.map_err(transient)
    }

    async fn apply(&self, event: &RawEvent, batch: InboundBatch) -> Result<(), PortError> {
        let kind = SourceKind::split(&event.source).map(|(k, _)| k);
        let mut unrouted = Vec::new();
        let mut notices = Vec::new();
        for item in &batch.items {
            match item {
                InboundItem::Message(message) => {
                    let Some(inbox) = self.resolve(event, &message.route).await else {
                        unrouted.push(route_name(&message.route));
                        continue;
                    };
                    let target = Target {
                        account_id: &inbox.account_id,
                        inbox_id: &inbox.id,
                        channel: inbox.channel.as_str(),
                        event_id: &event.id,
                        team_id: inbox.team_id.as_deref(),
                        branch_id: inbox.branch_id.as_deref(),
                    };
                    let stored = self
                        .store
                        .store_inbound_message(&target, message)
                        .await
                        .map_err(transient)?;
                    if let Some(stored) = stored {
                        metrics::counter!("switchboard_messages_stored_total", "channel" => inbox.channel.as_str()).increment(1);
                        self.tally.count(
                            &inbox.account_id,
                            crate::alerts::watch::INBOUND_MESSAGES,
                            Some(&crate::alerts::Dimension::Inbox.scope(&inbox.id)),
                        );
                        if stored.conversation_created {
                            self.publish(
                                &stored.account_id,
                                "conversation.created",
                                json!({ "conversation_id": stored.conversation_id, "inbox_id": inbox.id }),
                            )
                            .await;
                        }
                        self.publish(&stored.account_id, "message.created", json!(stored.message))
                            .await;
                    }
                }
                InboundItem::Status(status) => {
                    let inbox = self.resolve(event, &status.route).await;
                    if inbox.is_none() {
                        unrouted.push(route_name(&status.route));
                    }
                    let (account_id, channel) = match &inbox {
                        Some(inbox) => (inbox.account_id.as_str(), inbox.channel.as_str()),
                        None if kind == Some(SourceKind::Whatsapp) => {
                            (event.account_id.as_str(), "whatsapp")
                        }
                        None => (event.account_id.as_str(), "sms"),
                    };
                    let moved = self
                        .store
                        .store_status(account_id, channel, &event.id, status)
                        .await
                        .map_err(transient)?;
                    if let Some(moved) = moved {
                        self.publish(
                            account_id,
                            "message.status",
                            crate::outbound::status_event(&moved),
                        )
                        .await;
                    }
                }
                InboundItem::Notice(notice) => notices.push(notice.kind.clone()),
            }
        }
        let (status, note) = if unrouted.is_empty() {
            let note = (!notices.is_empty()).then(|| format!("notices: {}", notices.join(", ")));
            ("processed", note)
        } else {
            unrouted.dedup();
            (
                "unrouted",
                Some(format!("no inbox for {}", unrouted.join(", "))),
            )
        };
        self.store
            .finish_event(&event.id, status, note.as_deref())
            .await
            .map_err(transient)
    }

    async fn quarantine(&self, event_id: &str, reason: &str) -> Result<(), PortError> {
        self.store
            .finish_event(event_id, "quarantined", Some(reason))
            .await
            .map_err(transient)
    }
}
