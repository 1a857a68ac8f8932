//! The witness's periodic tasks: the ticker that steps clusters with a pending time-based
//! decision, and the reloader that swaps certificates when their files change (or on SIGHUP).
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
