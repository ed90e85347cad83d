//! What every scenario shares on the wire: the loopback-only target check, the HTTP client,
//! how a failed request is classified, and the closed loop that drives the load.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use reqwest::{Client, Response, StatusCode, Url};
use tokio::time::Instant;

use crate::report::{Outcome, Tally};

/// Per-request ceiling: a hub slower than this is broken, not slow.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a hub URL and refuses anything but plain http on loopback: 127.0.0.0/8, localhost,
/// ::1.
pub fn loopback_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// is supported (got {}://); the hub is on loopback",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "refusing host {host:?}: switchboard-bench only targets loopback \
             (127.0.0.0/8, localhost, ::1), never a hub reachable from elsewhere"
        ));
    }
    Ok(url)
}

/// A client keeping up to `concurrency` connections open, no proxy, Nagle off.
pub fn client(concurrency: usize) -> anyhow::Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// Waits for the whole answer (it is not complete, nor the connection reusable, before): the
/// status and body, or the outcome of a request that got no HTTP answer.
pub async fn answer(sent: reqwest::Result<Response>) -> Result<(StatusCode, Bytes), Outcome> {
    let response = sent.map_err(failed)?;
    let status = response.status();
    let body = response.bytes().await.map_err(failed)?;
    Ok((status, body))
}

/// A non-2xx answer, with a short excerpt of its body.
pub fn refused(status: StatusCode, body: &[u8]) -> Outcome {
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    Outcome::Refused(status.as_u16(), excerpt)
}

/// No HTTP answer: `timeout` or `transport`, with the whole cause chain (reqwest's own message
/// is generic; the cause is down the source chain).
fn failed(e: reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "transport"
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Outcome::Failed(kind, message)
}

/// One unit of load (an event, a request), numbered from 0.
pub trait Job: Clone + Send + Sync + 'static {
    fn run(&self, i: usize, tally: &mut Tally) -> impl Future<Output = ()> + Send;
}

/// `concurrency` workers, each starting the next job as soon as its last one is answered, until
/// `count` jobs have started or `deadline` has passed.
pub async fn closed_loop<J: Job>(
    job: &J,
    concurrency: usize,
    count: usize,
    deadline: Instant,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let job = job.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || Instant::now() >= deadline {
                        break;
                    }
                    job.run(i, &mut tally).await;
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::new();
    for worker in workers {
        match worker.await {
            Ok(tally) => total.merge(tally),
            Err(e) => eprintln!("a load worker failed: {e}"),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:9",
            "http://[::1]:8080/",
        ] {
            assert!(loopback_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1",
            "http://10.0.0.1",
            "http://example.com",
            "http://0.0.0.0:8080",
            "not a url",
        ] {
            assert!(loopback_url(bad).is_err(), "{bad}");
        }
    }
}
