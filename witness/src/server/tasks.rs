//! The witness's periodic tasks: the ticker that steps clusters with a pending time-based
//! decision, the reloader that swaps certificates when their files change (or on SIGHUP), and
//! the returner of freed memory.
use crate::app::App;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub(super) async fn ticker(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(Duration::from_millis(app.config.tick_interval_ms));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = iv.tick() => {}
        }
        app.table.tick().await;
        n += 1;
        if n >= 150 {
            n = 0;
            app.limiter.prune();
        }
    }
}

pub(super) async fn reloader(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(Duration::from_millis(app.config.tls.reload_interval_ms));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<()>();
        let force = tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = hup_fut => true,
            _ = iv.tick() => false,
        };
        if force {
            tracing::info!("SIGHUP: reloading certificates");
        }
        let _ = app.tls.check(force);
        let cur = app.tls.current();
        app.metrics
            .set_cert_expiry(cur.server_not_after, cur.ca_not_after);
    }
}

/// How often freed heap pages are handed back to the kernel.
const MEMORY_RETURN_INTERVAL: Duration = Duration::from_secs(5);

/// Hands freed heap pages back to the kernel every few seconds. Thousands of connections each
/// allocate and free their handshake and request buffers between long-lived allocations (the
/// clusters' state), and a burst (every node reconnecting after a witness restart, each first
/// request waiting for a durable write) leaves most of the heap free but resident: glibc gives
/// back only the top of each arena by itself.
pub(super) async fn memory_returner(mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(MEMORY_RETURN_INTERVAL);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = iv.tick() => {}
        }
        // Off the async workers: it walks every arena's free chunks, a few ms on a large heap.
        let _ = tokio::task::spawn_blocking(return_free_memory).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_free_memory() {
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas; it takes the
    // arenas' locks and touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_free_memory() {}
