//! The DRBD `fence-peer` handler: `witness-agent drbd-fence-peer` asks the local agent whether
//! the other room is provably stopped, and answers DRBD with an exit code.
//!
//! DRBD calls the handler when it loses its replication peer while `fencing
//! resource-and-stonith` is set, with IO frozen until the handler returns. The codes DRBD
//! understands (drbd.conf, `fence-peer` handler): 3 peer inconsistent, 4 peer outdated, 5 peer
//! unreachable, 6 peer is primary (we outdate ourselves), 7 peer fenced (stonithed). 3, 4 and 7
//! resume IO with the peer marked outdated; 5 does too when our disk is UpToDate; 6 outdates
//! our own disk. Any other code makes DRBD log "fence-peer helper broken" and leave IO frozen.
//!
//! So: exit [`PEER_FENCED`] (7) only when the agent has taken over (this room holds the right
//! to act alone and the takeover bound has passed, so every node of the other room has fenced
//! itself or been reset). The agent asks its state machine at the moment of the question
//! (`proto::agent::NodeAgent::peer_fenced`), model-checked never to say so while a node of the
//! other room may still run. Otherwise the handler keeps asking until `timeout` and then exits
//! [`KEEP_FROZEN`] (1): not 5, which would resume IO on an UpToDate disk without proof, nor 6,
//! which would outdate a disk that may be the survivor's. A node that is fencing itself gets 1
//! at once.
use crate::status::FencePeerAnswer;
use proto::wire::NodePhase;
use std::time::Duration;

/// DRBD: the peer was fenced; IO resumes.
pub const PEER_FENCED: i32 = 7;
/// Not a DRBD verdict: IO stays frozen until the link returns or an operator resumes it.
pub const KEEP_FROZEN: i32 = 1;

/// Asks the agent at `status_url` until it says the peer is fenced or `timeout` passes.
/// `poll` is the pause between questions. Returns the exit code and why.
pub async fn decide(status_url: &str, timeout: Duration, poll: Duration) -> (i32, String) {
    let url = format!("{}/v1/fence-peer", status_url.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .timeout(poll.max(Duration::from_millis(500)))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => return (KEEP_FROZEN, format!("cannot build an HTTP client: {e}")),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match ask(&client, &url).await {
            Ok(a) if a.peer_fenced => return (PEER_FENCED, a.reason),
            Ok(a) if matches!(a.phase, NodePhase::Fencing | NodePhase::Fenced) => {
                return (KEEP_FROZEN, a.reason)
            }
            Ok(a) => a.reason,
            Err(e) => format!("the local agent at {url} is unreachable: {e}"),
        };
        if tokio::time::Instant::now() + poll > deadline {
            return (
                KEEP_FROZEN,
                format!("gave up after {} ms: {last}", timeout.as_millis()),
            );
        }
        tokio::time::sleep(poll).await;
    }
}

async fn ask(client: &reqwest::Client, url: &str) -> Result<FencePeerAnswer, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    r.json::<FencePeerAnswer>().await.map_err(|e| e.to_string())
}
