//! Nothing acknowledged is lost: the real binary is killed with SIGKILL right after
//! acknowledging events, restarted, and every acknowledged event becomes a message.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(sigkill_after_acknowledging_loses_nothing);

fn spawn_binary(site: &Site, port: u16) -> Child {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--config", demo, "serve"])
        .envs(site.env())
        .env("SWITCHBOARD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn sigkill_after_acknowledging_loses_nothing(backend: Backend) {
    let site = Site::new(backend);
    let port = free_port().await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut child = spawn_binary(&site, port);
    wait_ready(&client, &base).await;

    // Fire 60 events from 12 concurrent senders; SIGKILL as soon as 20 are acknowledged, while
    // the rest are in flight or queued.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let total = 60;
    let kill_after = 20;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(total);
    let mut senders = Vec::new();
    for worker in 0..12 {
        let (client, base, acked, tx) = (client.clone(), base.clone(), acked.clone(), tx.clone());
        senders.push(tokio::spawn(async move {
            for i in (worker..total).step_by(12) {
                let id = format!("wamid.KILL{i:03}");
                let body = wa_text(&id, "15555550123", &format!("message {i}"));
                let signature =
                    switchboard_connectors::whatsapp::sign(APP_SECRET.as_bytes(), body.as_bytes());
                let sent = client
                    .post(format!("{base}/webhooks/whatsapp/demo"))
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status() == 200) {
                    acked.lock().await.push(id);
                    let _ = tx.send(()).await;
                }
            }
        }));
    }
    drop(tx);
    for _ in 0..kill_after {
        rx.recv()
            .await
            .expect("enough events were acknowledged before the kill");
    }
    child.start_kill().unwrap(); // SIGKILL on Unix
    child.wait().await.unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().await.iter().cloned().collect();
    assert!(acked.len() >= kill_after, "{}", acked.len());

    // Restart on the same state: every acknowledged event must become a message.
    let mut child = spawn_binary(&site, port);
    wait_ready(&client, &base).await;
    let hub_key = site.api_key().await;
    let stored: HashSet<String> = eventually("every acknowledged event to be stored", || async {
        let conversations: serde_json::Value = client
            .get(format!("{base}/v1/conversations"))
            .bearer_auth(&hub_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let conversation = conversations["data"].get(0)?["id"].as_str()?.to_owned();
        let messages: serde_json::Value = client
            .get(format!(
                "{base}/v1/conversations/{conversation}/messages?limit=100"
            ))
            .bearer_auth(&hub_key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let ids: HashSet<String> = messages["data"]
            .as_array()?
            .iter()
            .filter_map(|m| m["provider_message_id"].as_str().map(str::to_owned))
            .collect();
        acked.is_subset(&ids).then_some(ids)
    })
    .await;
    assert!(acked.is_subset(&stored));
    assert!(stored.len() <= total, "no duplicates: {}", stored.len());
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    site.cleanup().await;
}
