//! The test harness: a real hub (`switchboard::run`) on port 0 against real backends.
//!
//! Embedded hubs get a fresh temp directory (SQLite store and queue). Distributed hubs get a
//! fresh PostgreSQL schema in the `test` database and a fresh Redis key prefix, so every test
//! runs in parallel with the others. Nothing is slept on: tests wait for a condition with a
//! deadline ([`eventually`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard::store::Store;
use switchboard::{Config, Roles, auth};
use switchboard_connectors::{twilio, whatsapp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const APP_SECRET: &str = "test_app_secret_0123456789abcdef";
pub const VERIFY_TOKEN: &str = "demo-verify-token";
pub const PHONE_NUMBER_ID: &str = "800000000000001";
pub const TWILIO_TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const PUBLIC_URL: &str = "https://hub.example.com";
pub const IDENTITY_SECRET: &str = "demo-identity-secret";
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const TEST_SECRET_KEY: &str = "test-secret-key-0123456789abcdefghij";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Distributed,
}

/// Runs a test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::helpers::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn distributed() {
                super::$name($crate::helpers::Backend::Distributed).await
            }
        }
    )*};
}

/// Where a hub keeps its state; several hubs sharing one `Site` are nodes of one deployment.
pub struct Site {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub schema: String,
    pub prefix: String,
}

fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Site {
    pub fn new(backend: Backend) -> Self {
        let id = unique();
        Site {
            backend,
            dir: tempfile::tempdir().unwrap(),
            schema: format!("t_{id}"),
            prefix: format!("t{id}:"),
        }
    }

    /// The configuration layer that points a hub at this site.
    pub fn config_toml(&self) -> String {
        let dir = self.dir.path().display();
        let common = format!(
            r#"
[server]
public_url = "{PUBLIC_URL}"
[queue]
concurrency = 4
recovery_after_secs = 1
sqlite_path = "{dir}/queue.db"
[log]
level = "warn"
[auth]
secret_key = "{TEST_SECRET_KEY}"
[outbound]
# Nothing listens on the discard port: a reply in a test that brings no fake provider fails
# fast and is retried, never sent to the real provider.
whatsapp_base_url = "http://127.0.0.1:9"
twilio_base_url = "http://127.0.0.1:9"
[rate_limits]
api_per_second = 100000
webhooks_per_second = 100000
login_per_minute = 100000
"#
        );
        match self.backend {
            Backend::Embedded => format!(
                "{common}\n[database]\nurl = \"sqlite://{dir}/switchboard.db\"\nmax_connections = 8\n"
            ),
            Backend::Distributed => format!(
                "{common}\n[database]\nurl = \"{POSTGRES_URL}\"\nschema = \"{}\"\nmax_connections = 8\n[redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n",
                self.schema, self.prefix
            ),
        }
    }

    pub fn config(&self, extra: &str) -> Config {
        Config::from_layers(&[DEMO, &self.config_toml(), extra]).unwrap()
    }

    /// The same configuration as environment variables, for the real binary.
    pub fn env(&self) -> Vec<(String, String)> {
        let dir = self.dir.path().display();
        let mut env = vec![
            ("SWITCHBOARD__SERVER__PUBLIC_URL".into(), PUBLIC_URL.into()),
            ("SWITCHBOARD__QUEUE__RECOVERY_AFTER_SECS".into(), "1".into()),
            (
                "SWITCHBOARD__QUEUE__SQLITE_PATH".into(),
                format!("{dir}/queue.db"),
            ),
            ("SWITCHBOARD__LOG__LEVEL".into(), "warn".into()),
            (
                "SWITCHBOARD__AUTH__SECRET_KEY".into(),
                TEST_SECRET_KEY.into(),
            ),
        ];
        match self.backend {
            Backend::Embedded => env.push((
                "SWITCHBOARD__DATABASE__URL".into(),
                format!("sqlite://{dir}/switchboard.db"),
            )),
            Backend::Distributed => env.extend([
                ("SWITCHBOARD__DATABASE__URL".into(), POSTGRES_URL.into()),
                ("SWITCHBOARD__DATABASE__SCHEMA".into(), self.schema.clone()),
                ("SWITCHBOARD__REDIS__URL".into(), REDIS_URL.into()),
                ("SWITCHBOARD__REDIS__KEY_PREFIX".into(), self.prefix.clone()),
            ]),
        }
        env
    }

    /// Mints an API key straight in the store, as `switchboard api-key create` does. Call it
    /// once a hub has started (and migrated) the site.
    pub async fn api_key(&self) -> String {
        let config = self.config("");
        let store = Store::open(&config.database).await.unwrap();
        let account = store.ensure_account("default").await.unwrap();
        let minted = auth::mint_key();
        store
            .create_api_key(
                &account,
                "tests",
                "super_admin",
                &minted.prefix,
                &minted.hash,
                None,
            )
            .await
            .unwrap();
        store.close().await;
        minted.key
    }

    /// Drops the PostgreSQL schema and the Redis keys; the temp dir goes with `self`.
    pub async fn cleanup(self) {
        if self.backend == Backend::Distributed {
            let config = self.config("");
            let store = Store::open(&config.database).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            )))
            .execute(store.pool())
            .await
            .unwrap();
            store.close().await;
            let client = redis::Client::open(REDIS_URL).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

/// The example configuration the README ships, so the tests exercise what users run.
pub const DEMO: &str = include_str!("../../examples/demo.toml");

pub struct TestHub {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub key: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestHub {
    pub async fn start(site: &Site) -> Self {
        Self::start_with(site, "").await
    }

    pub async fn start_with(site: &Site, extra: &str) -> Self {
        let config = site.config(extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(switchboard::run(
            config,
            Roles::ALL,
            Some(listener),
            shutdown.clone(),
        ));
        let client = reqwest::Client::new();
        eventually("the hub to be ready", || async {
            let r = client
                .get(format!("http://{addr}/health/ready"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        TestHub {
            addr,
            client,
            key: site.api_key().await,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with the API key; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_whatsapp(&self, body: &str) -> reqwest::Response {
        self.client
            .post(self.url("/webhooks/whatsapp/demo"))
            .header(
                whatsapp::SIGNATURE_HEADER,
                whatsapp::sign(APP_SECRET.as_bytes(), body.as_bytes()),
            )
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Posts a Twilio form webhook signed exactly as Twilio signs it (the public URL).
    pub async fn post_twilio(&self, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = twilio::compute_signature(
            TWILIO_TOKEN.as_bytes(),
            &format!("{PUBLIC_URL}{path}"),
            &owned,
        );
        self.client
            .post(self.url(path))
            .header(twilio::SIGNATURE_HEADER, signature)
            .form(&owned)
            .send()
            .await
            .unwrap()
    }

    /// All conversations of the default account.
    pub async fn conversations(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/conversations?limit=100").await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    pub async fn messages(&self, conversation_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/v1/conversations/{conversation_id}/messages?limit=100"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    /// Every message of every conversation, once the queue has drained to `expected` of them.
    pub async fn wait_for_messages(&self, expected: usize) -> Vec<Value> {
        eventually(&format!("{expected} messages"), || async {
            let mut all = Vec::new();
            for c in self.conversations().await {
                all.extend(self.messages(c["id"].as_str().unwrap()).await);
            }
            (all.len() >= expected).then_some(all)
        })
        .await
    }

    pub async fn events(&self, status: &str) -> Vec<Value> {
        let (code, body) = self
            .get(&format!("/v1/inbound-events?status={status}&limit=100"))
            .await;
        assert_eq!(code, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }
}

/// Waits until the hub at `base` answers `/health/ready` with 200.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    eventually("the hub to be ready", || async {
        let r = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// Polls `check` until it yields a value, failing the test after 20 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A WhatsApp webhook envelope around `messages` (and optionally `statuses`) for `phone_number_id`.
pub fn wa_envelope(
    phone_number_id: &str,
    contacts: Value,
    messages: Value,
    statuses: Value,
) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "900000000000001",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": { "display_phone_number": "15555550100", "phone_number_id": phone_number_id },
                    "contacts": contacts,
                    "messages": messages,
                    "statuses": statuses,
                }
            }]
        }]
    })
    .to_string()
}

/// One text message from `wa_id` with provider id `id`.
/// [`wa_text`] sent now: its conversation's 24-hour reply window is open.
pub fn wa_text_now(id: &str, wa_id: &str, text: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    wa_text(id, wa_id, text).replace("\"1760000000\"", &format!("\"{now}\""))
}

pub fn wa_text(id: &str, wa_id: &str, text: &str) -> String {
    wa_envelope(
        PHONE_NUMBER_ID,
        serde_json::json!([{ "profile": { "name": "Ada Tester" }, "wa_id": wa_id }]),
        serde_json::json!([{ "from": wa_id, "id": id, "timestamp": "1760000000", "type": "text", "text": { "body": text } }]),
        serde_json::json!([]),
    )
}

/// A user made straight in the store, with a live session and a real access token.
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub const TEST_PASSWORD: &str = "Tangerine-Kite-42";

impl Site {
    /// Creates a user of the default account with `role` (a built-in name or custom role id),
    /// an optional branch and teams, and signs it in. Call once a hub has migrated the site.
    pub async fn user(&self, role: &str, branch: Option<&str>, teams: &[&str]) -> TestUser {
        use switchboard::store::{org, sessions, users};
        let config = self.config("");
        let store = Store::open(&config.database).await.unwrap();
        let account = store.ensure_account("default").await.unwrap();
        let email = format!("{}@example.com", unique().replace('_', "."));
        let mut tx = store.begin().await.unwrap();
        let id = Store::insert_user(
            &mut tx,
            &users::NewUser {
                account_id: &account,
                email: &email,
                name: "Test User",
                password_hash: &auth::passwords::hash(TEST_PASSWORD).unwrap(),
                role,
                branch_id: branch,
            },
        )
        .await
        .unwrap();
        let teams: Vec<String> = teams.iter().map(|t| (*t).to_owned()).collect();
        org::set_memberships(&mut tx, &account, &id, &teams)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let session = store
            .create_session(
                &sessions::NewSession {
                    account_id: &account,
                    user_id: &id,
                    ip: None,
                    user_agent: None,
                },
                &auth::hash_key(&unique()),
                i64::MAX,
            )
            .await
            .unwrap();
        store.close().await;
        let keys = switchboard::crypto::Keys::from_master(TEST_SECRET_KEY.as_bytes());
        let (token, _) = auth::tokens::issue(&keys, 900, &id, &account, &session).unwrap();
        TestUser {
            id,
            email,
            password: TEST_PASSWORD.to_owned(),
            token,
        }
    }

    /// Runs `f` with a connection to this site's store (fixtures that have no API yet).
    pub async fn store(&self) -> Store {
        Store::open(&self.config("").database).await.unwrap()
    }
}

impl TestHub {
    /// A request with `token` as the bearer; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}
