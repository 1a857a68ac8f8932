//! The agent's persisted state: the protocol's [`RunState`] plus the shell's unfinished
//! Kubernetes work, in one JSON file under `run_dir` (tmpfs `/run`: it survives an agent
//! restart, not a reboot), tagged with the boot id so a file from another boot is ignored.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory) *before* the actions
//! the state allows are performed: that is the contract of [`proto::agent::AgentStep::persist`].
use proto::agent::RunState;
use proto::pending::PendingWork;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside `run_dir`.
pub const STATE_FILE: &str = "state.json";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the run state: {0}")]
    Encode(#[source] serde_json::Error),
}

/// What is on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub boot_id: String,
    pub run: RunState,
    /// Kubernetes actions (unfence, takeover, release) started but not yet confirmed done: the
    /// next agent process on this boot repeats them (they are idempotent).
    #[serde(default)]
    pub pending: PendingWork,
}

/// Where the state lives and which boot it belongs to.
#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
    boot_id: String,
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// A state from this boot.
    Resumed(Box<Persisted>),
    /// No usable state: a fresh boot (or the file was from another boot, or unreadable: the
    /// reason says which).
    Fresh(String),
}

impl StateStore {
    pub fn new(run_dir: &Path, boot_id: String) -> StateStore {
        StateStore {
            path: run_dir.join(STATE_FILE),
            boot_id,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state left by a previous agent process on this boot.
    pub fn load(&self) -> Loaded {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Loaded::Fresh("no state file: first start on this boot".into())
            }
            Err(e) => return Loaded::Fresh(format!("state file unreadable ({e}): starting fresh")),
        };
        match serde_json::from_str::<Persisted>(&text) {
            Ok(p) if p.boot_id == self.boot_id => Loaded::Resumed(Box::new(p)),
            Ok(p) => Loaded::Fresh(format!(
                "state file is from another boot ({}), ignored",
                p.boot_id
            )),
            Err(e) => Loaded::Fresh(format!(
                "state file {} is not valid ({e}): starting as after a reboot",
                self.path.display()
            )),
        }
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, run: &RunState, pending: &PendingWork) -> Result<(), StateError> {
        let p = Persisted {
            boot_id: self.boot_id.clone(),
            run: run.clone(),
            pending: pending.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&p).map_err(StateError::Encode)?;
        let werr = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(werr)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp).map_err(werr)?;
            f.write_all(&bytes).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(werr)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::agent::Phase;
    use proto::Millis;

    #[test]
    fn state_round_trips_and_a_file_from_another_boot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::new(dir.path(), "boot-1".into());
        assert!(matches!(s.load(), Loaded::Fresh(_)));
        let mut run = RunState::booted();
        run.phase = Phase::Active { since: Millis(5) };
        let pending = PendingWork::from_actions([proto::agent::AgentAction::ReleaseTakeover {
            epoch: proto::Epoch(3),
        }]);
        s.save(&run, &pending).unwrap();
        match s.load() {
            Loaded::Resumed(p) => {
                assert_eq!(p.run, run);
                assert_eq!(p.pending, pending);
            }
            other => panic!("{other:?}"),
        }
        let other = StateStore::new(dir.path(), "boot-2".into());
        match other.load() {
            Loaded::Fresh(why) => assert!(why.contains("another boot"), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(s.path(), "{not json").unwrap();
        assert!(matches!(s.load(), Loaded::Fresh(_)));
    }
}
