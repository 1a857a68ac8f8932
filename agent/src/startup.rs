//! Starting an agent: certificates, state file, listeners, watchdog, drivers and workers, wired
//! together and handed to the main loop ([`crate::shell`]).
use crate::actuator::{Actuators, Desired, FenceRun, Parts};
use crate::clock::{boot_id, Clock};
use crate::config::{Config, ConfigError};
use crate::drivers::hooks::Hooks;
use crate::drivers::watchdog::Watchdog;
use crate::drivers::FenceDrivers;
use crate::events::EventSink;
use crate::kube::Kube;
use crate::machine::SharedAgent;
use crate::metrics::Metrics;
use crate::net::{serve_heartbeats, Clients};
use crate::shell::Shell;
use crate::state::{Loaded, StateStore};
use crate::takeover::{OtherNodes, Takeover};
use crate::tls::TlsState;
use crate::view::PeerSeen;
use crate::Error;
use proto::agent::{AgentConfig, NodeAgent, Phase, RunState};
use proto::pending::PendingWork;
use proto::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A running agent: its bound addresses and the task to wait for.
pub struct Started {
    pub peer_addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

impl Started {
    /// Waits until the agent has stopped.
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("agent task failed: {e}"))),
        }
    }
}

async fn bind(field: &str, addr: &str) -> Result<(TcpListener, SocketAddr), Error> {
    let err = |source| Error::Listen {
        field: field.to_string(),
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((listener, bound))
}

/// The certificate must carry the configured node's identity: peers and the witness refuse
/// any other (`run` and `check-config` make the same check).
pub fn check_identity(cfg: &Config, tls: &TlsState) -> Result<(), ConfigError> {
    let names = cfg.names();
    let expected = proto::ids::Identity::Node {
        cluster: names.cluster.clone(),
        room: names.room.clone(),
        node: names.node.clone(),
    };
    if tls.identity != expected {
        return Err(ConfigError {
            file: cfg.origin.clone(),
            field: "tls.cert".into(),
            reason: format!(
                "the certificate is {} but this agent is configured as {}: peers and the \
                 witness would refuse it; issue one with `witness certs node --cluster {} \
                 --room {} --node {}`",
                tls.identity.to_uri(),
                expected.to_uri(),
                names.cluster,
                names.room,
                names.node
            ),
        });
    }
    Ok(())
}

/// The run state and unfinished work of the previous agent process on this boot, if any.
fn resume(store: &StateStore) -> (RunState, PendingWork) {
    match store.load() {
        Loaded::Resumed(p) => {
            tracing::info!(phase = ?p.run.phase, epoch = p.run.epoch.0, "resuming the state of the previous agent process on this boot");
            (
                p.run,
                PendingWork::from_actions(p.pending.actions().to_vec()),
            )
        }
        Loaded::Fresh(why) => {
            tracing::info!("{why}");
            (RunState::booted(), PendingWork::default())
        }
    }
}

/// Starts an agent: loads certificates and state, binds the listeners, opens the watchdog and
/// spawns everything. Returns once it runs; stops when `shutdown` flips to true (or its
/// sender is dropped).
pub async fn start(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<Started, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_err = |e: crate::tls::TlsError| {
        Error::Config(ConfigError {
            file: cfg.origin.clone(),
            field: e.field,
            reason: e.reason,
        })
    };
    let tls = TlsState::load(&cfg.tls).map_err(tls_err)?;
    check_identity(&cfg, &tls).map_err(Error::Config)?;
    let names = cfg.names();
    let clients = Clients::build(&cfg, &tls, &BTreeMap::new()).map_err(tls_err)?;
    let (peer_listener, peer_addr) = bind("listen", &cfg.listen).await?;
    let (status_listener, status_addr) = bind("status_listen", &cfg.status_listen).await?;

    let store = StateStore::new(&cfg.run_dir, boot_id().map_err(Error::BootId)?);
    let (run, pending) = resume(&store);

    let metrics = Metrics::new();
    let events = EventSink::new(&cfg.event_socket, &cfg.cluster, &cfg.room, &cfg.node);
    let watchdog = Watchdog::start(&cfg.watchdog, cfg.timings.watchdog_timeout_ms);
    let kube = if cfg.kubernetes.enabled {
        Kube::new(&cfg.kubernetes)
    } else {
        Kube::disabled()
    };
    let hooks = Hooks {
        hooks: cfg.hooks.clone(),
        names: names.clone(),
    };
    let drivers = FenceDrivers::build(&cfg, &kube, watchdog.status(), &hooks);
    let budget = drivers.budget().as_millis();
    if budget > u128::from(cfg.timings.fence_deadline_ms) {
        tracing::warn!(
            "the fencing drivers' deadlines add up to {budget} ms, more than \
             timings.fence_deadline_ms ({} ms): a slow but healthy fence can end in a watchdog \
             reset",
            cfg.timings.fence_deadline_ms
        );
    }

    // Work the previous process left unfinished: a fence in progress is run again (every
    // driver is idempotent), pending Kubernetes work is reconciled again.
    let fence = match run.phase {
        Phase::Fencing {
            escalated: false, ..
        } => Some(FenceRun {
            number: 1,
            epoch: run.epoch,
            reason: "resuming a fence interrupted by an agent restart".into(),
        }),
        _ => None,
    };
    let (fb_tx, fb_rx) = mpsc::channel(64);
    // Also the peers the membership kept in the state file names (added at runtime).
    let takeover_nodes = OtherNodes::new(cfg.peers.iter().map(|p| p.node.clone()));
    if let Some(m) = &run.members {
        takeover_nodes.add(m.counted_peers(&names.room).map(|e| e.node.to_string()));
    }
    let actuators = Actuators::start(
        Parts {
            drivers,
            hooks,
            takeover: Takeover {
                kube,
                other_nodes: takeover_nodes.clone(),
                delete: cfg.kubernetes.takeover_delete,
            },
            metrics: metrics.clone(),
            events: events.clone(),
        },
        Desired {
            fence: fence.clone(),
            work: pending.clone(),
        },
        fb_tx,
    );

    let agent = SharedAgent::new(NodeAgent::new(
        AgentConfig {
            timings: cfg.timings.clone(),
            cluster: names.cluster.clone(),
            room: names.room.clone(),
            node: names.node.clone(),
            peers: cfg.peers.iter().map(|p| NodeId::new(&p.node)).collect(),
            address: cfg.advertised_address(),
            mutation: Default::default(),
        },
        run,
    ));

    let (tls_tx, tls_rx) = watch::channel(Arc::new(tls));
    let (tls_err_tx, tls_err_rx) = watch::channel(None);
    tokio::spawn(crate::tls::reload_task(
        cfg.tls.clone(),
        tls_tx,
        tls_err_tx,
        shutdown.clone(),
    ));
    let (ping_tx, ping_rx) = mpsc::channel(64);
    tokio::spawn(serve_heartbeats(
        peer_listener,
        tls_rx.clone(),
        ping_tx,
        shutdown.clone(),
    ));
    let (net_tx, net_rx) = mpsc::channel(256);
    let peers = cfg
        .peers
        .iter()
        .map(|p| {
            (
                NodeId::new(&p.node),
                PeerSeen {
                    address: p.address.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    tracing::info!(
        node = %cfg.node, room = %cfg.room, cluster = %cfg.cluster,
        %peer_addr, %status_addr, "agent started"
    );
    let mut shell = Shell {
        store,
        pending,
        fence,
        clients: Arc::new(clients.with_metrics(&metrics)),
        clients_members: 0,
        tls: tls_rx,
        tls_errors: tls_err_rx,
        watchdog: Some(watchdog),
        actuators,
        takeover_nodes,
        metrics,
        events,
        report: None,
        net_tx,
        witness: Default::default(),
        peers,
        petting: None,
        last_phase: None,
        last_lease: None,
        clock: Clock,
        agent: agent.clone(),
        cfg,
    };
    // The first view is published before anyone can ask for it.
    let first = shell.publish(shell.clock.now());
    let (report_tx, report_rx) = watch::channel(first);
    shell.report = Some(report_tx);
    tokio::spawn(crate::status::serve(
        status_listener,
        report_rx,
        agent,
        shell.metrics.clone(),
        shutdown.clone(),
    ));
    let task = tokio::spawn(shell.run(shutdown, ping_rx, net_rx, fb_rx));
    Ok(Started {
        peer_addr,
        status_addr,
        task,
    })
}
