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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use switchboard_connectors::{InboundItem, twilio, whatsapp};

    use super::*;

    /// Records what the handler asks of the hub.
    #[derive(Default)]
    struct Recorder {
        event: Mutex<Option<RawEvent>>,
        applied: Mutex<Vec<usize>>,
        quarantined: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl InboundPort for Recorder {
        async fn load(&self, _: &str) -> Result<Option<RawEvent>, PortError> {
            Ok(self.event.lock().unwrap().clone())
        }
        async fn apply(&self, _: &RawEvent, batch: InboundBatch) -> Result<(), PortError> {
            self.applied.lock().unwrap().push(batch.items.len());
            Ok(())
        }
        async fn quarantine(&self, _: &str, reason: &str) -> Result<(), PortError> {
            self.quarantined.lock().unwrap().push(reason.to_owned());
            Ok(())
        }
    }

    fn event(source: &str, body: &[u8], status: &str) -> RawEvent {
        RawEvent {
            id: "evt_1".into(),
            account_id: "acc_default".into(),
            source: source.into(),
            inbox_id: Some("inb_x".into()),
            body: body.to_vec(),
            status: status.into(),
            received_at_ms: 1_760_000_000_000,
        }
    }

    async fn run(event: Option<RawEvent>) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::default());
        *recorder.event.lock().unwrap() = event;
        let port: Arc<dyn InboundPort> = recorder.clone();
        handle(&NormalizeInbound::new("evt_1"), &port)
            .await
            .unwrap();
        recorder
    }

    #[tokio::test]
    async fn each_source_is_decoded_by_its_connector() {
        let wa = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"8"},"messages":[{"from":"1555","id":"wamid.1","timestamp":"1760000000","type":"text","text":{"body":"hi"}}]}}]}]}"#;
        let form = b"MessageSid=SM1&From=%2B14155550199&To=%2B14155550100&Body=hi&NumMedia=0";
        let status = b"MessageSid=SM1&MessageStatus=delivered";
        let chat = br#"{"visitor_id":"vis_1","identifier":null,"name":null,"email":null,"client_message_id":"c1","text":"hi","sent_at_ms":1}"#;
        for (source, body) in [
            ("whatsapp:demo", &wa[..]),
            ("twilio:sms", &form[..]),
            ("twilio-status:sms", &status[..]),
            ("webchat:site", &chat[..]),
        ] {
            let recorder = run(Some(event(source, body, "received"))).await;
            assert_eq!(*recorder.applied.lock().unwrap(), [1], "{source}");
        }
        assert!(matches!(
            decode(&event("twilio:sms", form, "received"))
                .unwrap()
                .items[0],
            InboundItem::Message(_)
        ));
        assert!(
            whatsapp::dedup_keys(wa).is_ok()
                && twilio::dedup_key(&twilio::parse_form(status)).is_some()
        );
    }

    #[tokio::test]
    async fn unreadable_events_are_quarantined_and_finished_ones_left_alone() {
        let recorder = run(Some(event("whatsapp:demo", b"{not json", "received"))).await;
        assert!(recorder.applied.lock().unwrap().is_empty());
        assert_eq!(recorder.quarantined.lock().unwrap().len(), 1);

        let recorder = run(Some(event("carrier-pigeon:x", b"coo", "received"))).await;
        assert!(recorder.quarantined.lock().unwrap()[0].contains("unknown event source"));

        // A re-run of a processed event, or a job for a vanished one, does nothing.
        let recorder = run(Some(event("whatsapp:demo", b"{not json", "processed"))).await;
        assert!(
            recorder.applied.lock().unwrap().is_empty()
                && recorder.quarantined.lock().unwrap().is_empty()
        );
        let recorder = run(None).await;
        assert!(recorder.applied.lock().unwrap().is_empty());
    }
}
