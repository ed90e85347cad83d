//! The `NormalizeInbound` handler: raw provider request → normalized batch → store.

use std::sync::Arc;

use switchboard_connectors::{InboundBatch, ParseError, twilio, webchat, whatsapp};
use tracing::{info, warn};

use crate::jobs::NormalizeInbound;
use crate::ports::{InboundPort, PortError, RawEvent, SourceKind};

/// Runs one job. `Err` means "retry later"; everything that retrying cannot fix (an unparseable
/// body, a vanished event) is recorded and answered with `Ok` so the queue lets go of it.
pub async fn handle(job: &NormalizeInbound, port: &Arc<dyn InboundPort>) -> Result<(), PortError> {
    if job.v != 1 {
        return Err(PortError::Permanent(format!(
            "unknown NormalizeInbound version {}",
            job.v
        )));
    }
    let Some(event) = port.load(&job.event_id).await? else {
        warn!(event = %job.event_id, "Inbound event not found; dropping its job.");
        return Ok(());
    };
    if event.status != "received" {
        // Already processed, quarantined or unrouted by an earlier run.
        return Ok(());
    }
    match decode(&event) {
        Ok(batch) => port.apply(&event, batch).await,
        Err(reason) => {
            info!(event = %event.id, %reason, "Quarantined a signed but unparseable event.");
            port.quarantine(&event.id, &reason).await
        }
    }
}

/// Parses the stored body with the connector that speaks its protocol.
pub fn decode(event: &RawEvent) -> Result<InboundBatch, String> {
    let Some((kind, _)) = SourceKind::split(&event.source) else {
        return Err(format!("unknown event source `{}`", event.source));
    };
    let single = |item| InboundBatch { items: vec![item] };
    let result: Result<InboundBatch, ParseError> = match kind {
        SourceKind::Whatsapp => whatsapp::parse(&event.body),
        SourceKind::TwilioMessage => {
            let params = twilio::parse_form(&event.body);
            twilio::parse_inbound(&params, event.received_at_ms)
                .map(|m| single(switchboard_connectors::InboundItem::Message(Box::new(m))))
        }
        SourceKind::TwilioStatus => {
            let params = twilio::parse_form(&event.body);
            twilio::parse_status(&params, event.received_at_ms)
                .map(|s| single(switchboard_connectors::InboundItem::Status(s)))
        }
        SourceKind::Webchat => webchat::parse(&event.body),
    };
    result.map_err(|e| e.to_string())
}
