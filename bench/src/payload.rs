//! Signed provider requests, built ahead of the timed run so signing is not charged to the hub.
//!
//! Every event is unique across runs (ids carry the run id) and its sender is one of 1000, so a
//! run spreads over many conversations the way real traffic does.

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};
use switchboard_connectors::{twilio, whatsapp};

/// Senders cycle through this many numbers: one conversation each per inbox.
const SENDERS: u64 = 1000;
const TWILIO_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// What one channel's requests share: where they go and how they are signed.
pub struct Target {
    pub url: Url,
    pub content_type: HeaderValue,
    pub signature_header: HeaderName,
    /// REST API events instead of webhooks: each is a `PATCH` of its [`Prepared::url`] with
    /// this `Authorization` value, accepted when the answer is 2xx.
    pub api_bearer: Option<HeaderValue>,
}

/// One event, ready to send: the body exactly as signed, and its signature.
pub struct Prepared {
    pub body: Bytes,
    pub signature: HeaderValue,
    /// Where this event goes when not to the target's URL (REST API events).
    pub url: Option<Url>,
}

/// A run-unique tag (48 bits from the clock and the pid) so repeated runs never collide in the
/// hub's dedup.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default() as u64;
    let mixed = nanos ^ (u64::from(std::process::id()) << 40);
    format!("{:012x}", mixed & 0xffff_ffff_ffff)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `{base}/{segments…}`, each segment percent-encoded as needed.
pub fn endpoint(base: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Builds WhatsApp Cloud API message webhooks: the realistic body of PROVIDERS.md §1.9, one
/// text message each, signed with `X-Hub-Signature-256`.
pub struct WhatsappEvents<'a> {
    pub app_secret: &'a [u8],
    pub phone_number_id: &'a str,
    pub run_id: &'a str,
}

impl WhatsappEvents<'_> {
    pub fn target(base: &Url, app: &str) -> anyhow::Result<Target> {
        Ok(Target {
            url: endpoint(base, &["webhooks", "whatsapp", app])?,
            content_type: HeaderValue::from_static("application/json"),
            signature_header: HeaderName::from_static(whatsapp::SIGNATURE_HEADER),
            api_bearer: None,
        })
    }

    /// `count` events from 1000 senders in turn (a sender's later events join its open
    /// conversation).
    pub fn build(&self, count: usize) -> anyhow::Result<Vec<Prepared>> {
        let timestamp = unix_now();
        (0..count as u64)
            .map(|i| {
                let sender = i % SENDERS;
                let text = format!("Hi, is my order shipped? (#{i})");
                self.event(i, sender, &format!("1555555{sender:04}"), timestamp, &text)
            })
            .collect()
    }

    /// `count` events from the first `senders` of the same 1000 numbers in turn, each text
    /// carrying [`marker`]`(run_id, i)` so the console frame it becomes can be matched to it.
    pub fn build_marked(&self, count: usize, senders: u64) -> anyhow::Result<Vec<Prepared>> {
        anyhow::ensure!(
            (1..=SENDERS).contains(&senders),
            "between 1 and {SENDERS} senders"
        );
        let timestamp = unix_now();
        (0..count as u64)
            .map(|i| {
                let sender = i % senders;
                let text = format!("Hi, is my order shipped? {}", marker(self.run_id, i));
                self.event(i, sender, &format!("1555555{sender:04}"), timestamp, &text)
            })
            .collect()
    }

    /// `count` events, each from a customer of its own that no other run uses (the number
    /// carries six digits of the run id), so each one opens a new conversation.
    pub fn build_new_customers(&self, count: usize) -> anyhow::Result<Vec<Prepared>> {
        anyhow::ensure!(
            count <= 100_000,
            "at most 100000 distinct customers per run"
        );
        let run = u64::from_str_radix(self.run_id, 16).unwrap_or_default() % 1_000_000;
        let timestamp = unix_now();
        (0..count as u64)
            .map(|i| {
                let text = format!("Hi, is my order shipped? (#{i})");
                self.event(i, i, &format!("2{run:06}{i:05}"), timestamp, &text)
            })
            .collect()
    }

    /// Event `i` of the run: one text message from `wa_id`.
    fn event(
        &self,
        i: u64,
        sender: u64,
        wa_id: &str,
        timestamp: u64,
        text: &str,
    ) -> anyhow::Result<Prepared> {
        // Meta only ever sends ASCII (non-ASCII is \u-escaped), and so does this; `text` is
        // ASCII without quotes or backslashes.
        let body = format!(
            concat!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"id":"900000000000001","changes":[{{"value":"#,
                r#"{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15555550100","#,
                r#""phone_number_id":"{pnid}"}},"contacts":[{{"profile":{{"name":"Bench Sender {sender}"}},"#,
                r#""wa_id":"{wa_id}"}}],"messages":[{{"from":"{wa_id}","id":"wamid.BENCH{run}{i:010}","#,
                r#""timestamp":"{ts}","type":"text","text":{{"body":"{text}"}}}}]}},"#,
                r#""field":"messages"}}]}}]}}"#,
            ),
            pnid = self.phone_number_id,
            sender = sender,
            wa_id = wa_id,
            run = self.run_id,
            i = i,
            ts = timestamp,
            text = text,
        );
        let signature = whatsapp::sign(self.app_secret, body.as_bytes());
        Ok(Prepared {
            signature: HeaderValue::try_from(signature)?,
            body: Bytes::from(body),
            url: None,
        })
    }
}

/// The tag event `i` of run `run_id` carries in its text: `[wsb:{run_id}:{i}]`. The console
/// scenarios find it in the frames with [`MarkerFinder`].
pub fn marker(run_id: &str, i: u64) -> String {
    format!("[wsb:{run_id}:{i}]")
}

/// Finds a run's [`marker`] in a frame and reads the event number back.
pub struct MarkerFinder {
    prefix: memchr::memmem::Finder<'static>,
}

impl MarkerFinder {
    pub fn new(run_id: &str) -> Self {
        Self {
            prefix: memchr::memmem::Finder::new(format!("[wsb:{run_id}:").as_bytes()).into_owned(),
        }
    }

    /// The event number of the first marker of this run in `text`, if any.
    pub fn find(&self, text: &[u8]) -> Option<u64> {
        let at = self.prefix.find(text)? + self.prefix.needle().len();
        let digits = &text[at..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        if end == 0 || digits[end] != b']' {
            return None;
        }
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    }
}

/// Builds Twilio inbound SMS webhooks (PROVIDERS.md §2.1), form-encoded and signed with
/// `X-Twilio-Signature` over the URL the hub rebuilds from its public URL.
pub struct TwilioEvents<'a> {
    pub auth_token: &'a [u8],
    /// `{public_url}/webhooks/twilio/{inbox}`: what Twilio would have called.
    pub signed_url: String,
    pub run_id: &'a str,
}

impl TwilioEvents<'_> {
    pub fn target(base: &Url, inbox: &str) -> anyhow::Result<Target> {
        Ok(Target {
            url: endpoint(base, &["webhooks", "twilio", inbox])?,
            content_type: HeaderValue::from_static("application/x-www-form-urlencoded"),
            signature_header: HeaderName::from_static(twilio::SIGNATURE_HEADER),
            api_bearer: None,
        })
    }

    pub fn build(&self, count: usize) -> anyhow::Result<Vec<Prepared>> {
        (0..count as u64)
            .map(|i| {
                let params: Vec<(String, String)> = vec![
                    // SM + 32 hex: 12 from the run id, 20 from the event number.
                    ("MessageSid".into(), format!("SM{}{i:020x}", self.run_id)),
                    ("AccountSid".into(), TWILIO_ACCOUNT_SID.into()),
                    ("From".into(), format!("+1555555{:04}", i % SENDERS)),
                    ("To".into(), "+14155550100".into()),
                    ("Body".into(), format!("Hi, is my order shipped? (#{i})")),
                    ("NumMedia".into(), "0".into()),
                ];
                let signature =
                    twilio::compute_signature(self.auth_token, &self.signed_url, &params);
                let body = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&params)
                    .finish();
                Ok(Prepared {
                    signature: HeaderValue::try_from(signature)?,
                    body: Bytes::from(body),
                    url: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_bodies_verify_and_are_unique_json() {
        let events = WhatsappEvents {
            app_secret: b"secret",
            phone_number_id: "800000000000001",
            run_id: "0123456789ab",
        }
        .build(3)
        .unwrap();
        let ids: Vec<String> = events
            .iter()
            .map(|e| {
                let sig = e.signature.to_str().unwrap();
                whatsapp::verify_signature(b"secret", &e.body, Some(sig)).unwrap();
                let keys = whatsapp::dedup_keys(&e.body).unwrap();
                assert_eq!(keys.len(), 1);
                keys[0].clone()
            })
            .collect();
        assert_eq!(ids[0], "msg:wamid.BENCH0123456789ab0000000000");
        assert_ne!(ids[1], ids[2]);
    }

    #[test]
    fn new_customers_are_distinct_within_and_across_runs() {
        let senders = |run_id: &str| -> Vec<String> {
            WhatsappEvents {
                app_secret: b"secret",
                phone_number_id: "800000000000001",
                run_id,
            }
            .build_new_customers(1500)
            .unwrap()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
                let from = &v["entry"][0]["changes"][0]["value"]["messages"][0]["from"];
                from.as_str().unwrap().to_owned()
            })
            .collect()
        };
        let a = senders("0123456789ab");
        let b = senders("0123456789ac");
        let unique: std::collections::HashSet<&String> = a.iter().chain(&b).collect();
        assert_eq!(unique.len(), 3000);
        assert!(a.iter().all(|s| s.len() == 12 && s.starts_with('2')));
    }

    #[test]
    fn marked_bodies_carry_a_findable_marker() {
        let events = WhatsappEvents {
            app_secret: b"secret",
            phone_number_id: "800000000000001",
            run_id: "0123456789ab",
        }
        .build_marked(12, 5)
        .unwrap();
        let finder = MarkerFinder::new("0123456789ab");
        for (i, e) in events.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
            let message = &v["entry"][0]["changes"][0]["value"]["messages"][0];
            let text = message["text"]["body"].as_str().unwrap();
            assert_eq!(finder.find(text.as_bytes()), Some(i as u64));
            let from = message["from"].as_str().unwrap();
            assert_eq!(from, format!("1555555{:04}", i % 5));
            let sig = e.signature.to_str().unwrap();
            whatsapp::verify_signature(b"secret", &e.body, Some(sig)).unwrap();
        }
        // As the hub echoes it inside a frame; other runs' markers and broken ones are not it.
        let frame = br#"{"type":"message.created","id":7,"data":{"content":{"type":"text","text":"x [wsb:0123456789ab:41]"}}}"#;
        assert_eq!(finder.find(frame), Some(41));
        assert_eq!(finder.find(b"[wsb:0123456789ac:41]"), None);
        assert_eq!(finder.find(b"[wsb:0123456789ab:]"), None);
        assert_eq!(finder.find(b"[wsb:0123456789ab:12"), None);
        assert_eq!(finder.find(b"[wsb:0123456789ab:12x]"), None);
    }

    #[test]
    fn twilio_bodies_verify_against_the_public_url() {
        let url = "http://localhost:8080/webhooks/twilio/support-sms";
        let events = TwilioEvents {
            auth_token: b"token",
            signed_url: url.to_owned(),
            run_id: "0123456789ab",
        }
        .build(2)
        .unwrap();
        for e in &events {
            let params = twilio::parse_form(&e.body);
            let sig = e.signature.to_str().unwrap();
            twilio::verify_signature(b"token", url, &params, Some(sig)).unwrap();
            let sid = &params[0].1;
            assert_eq!(sid.len(), 34);
            assert!(sid.starts_with("SM0123456789ab"));
        }
    }

    #[test]
    fn endpoint_encodes_segments() {
        let base = Url::parse("http://127.0.0.1:8080/").unwrap();
        let url = endpoint(&base, &["webhooks", "twilio", "a b"]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/webhooks/twilio/a%20b");
    }
}
