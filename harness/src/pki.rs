//! The certificates of a local cluster, made once with `witness::certs` (the code behind
//! `witness certs`): a CA, the witness's server certificate, a certificate per node and the
//! operators' certificates, all in one directory under the names the deploy docs use
//! (`ca.pem`, `server.pem`, `<node>.pem`, `<admin>.pem`, each with its `-key.pem`).
use crate::HarnessError;
use std::path::{Path, PathBuf};
use witness::certs::{self, Ca, Validity};

/// One node's identity: `witness://<cluster>/<room>/<node>`, and the names its heartbeat
/// endpoint is reached by (its address, as the peers of the other room dial it).
#[derive(Clone, Debug)]
pub struct Member {
    pub cluster: String,
    pub room: String,
    pub node: String,
    pub sans: Vec<String>,
}

impl Member {
    pub fn new(cluster: &str, room: &str, node: &str, sans: &[&str]) -> Member {
        Member {
            cluster: cluster.into(),
            room: room.into(),
            node: node.into(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The certificate directory of a local cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Creates `dir` and everything in it: the CA, the witness's server certificate for
    /// `server_names` (DNS names or IPs; localhost and 127.0.0.1 are always in), one certificate
    /// per member and one per operator name in `admins`. Validity as `witness certs` defaults.
    pub fn create(
        dir: &Path,
        server_names: &[&str],
        members: &[Member],
        admins: &[&str],
    ) -> Result<Pki, HarnessError> {
        let err = |source| HarnessError::Certs {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| HarnessError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let leaf = Validity {
            days: Validity::LEAF_DEFAULT_DAYS,
        };
        let ca_validity = Validity {
            days: Validity::CA_DEFAULT_DAYS,
        };
        certs::create_ca(dir, "witness CA", ca_validity, false).map_err(err)?;
        let ca = Ca::load(dir).map_err(err)?;
        let names: Vec<String> = server_names.iter().map(|s| s.to_string()).collect();
        ca.issue_server(dir, &names, leaf, false).map_err(err)?;
        for m in members {
            ca.issue_node(
                dir, &m.cluster, &m.room, &m.node, &m.sans, None, leaf, false,
            )
            .map_err(err)?;
        }
        for a in admins {
            ca.issue_admin(dir, a, leaf, false).map_err(err)?;
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
        })
    }

    /// A directory with the same file names made another way (`witness certs`, or the copy
    /// inside a VM lab guest).
    pub fn at(dir: &Path) -> Pki {
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate every witness and agent trusts.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `<name>.pem` and `<name>-key.pem` (a node, `server`, or an operator).
    pub fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }

    /// The witness's `[tls]` section.
    pub fn witness_tls(&self) -> witness::config::TlsSection {
        let (cert, key) = self.pair("server");
        witness::config::TlsSection {
            ca: Some(self.ca()),
            cert: Some(cert),
            key: Some(key),
            ..Default::default()
        }
    }

    /// A node agent's `[tls]` section.
    pub fn agent_tls(&self, node: &str) -> agent::config::TlsConfig {
        let (cert, key) = self.pair(node);
        agent::config::TlsConfig {
            ca: self.ca(),
            cert,
            key,
        }
    }
}
