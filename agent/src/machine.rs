//! The state machine, shared between the main loop, which steps it, and the status server, which
//! asks it questions at request time (DRBD's fence-peer question must be answered on the clock
//! of the moment it is asked, not from the last published view).
use proto::agent::NodeAgent;
use std::sync::Arc;

/// A [`NodeAgent`] behind a short lock.
// A blocking lock held only inside `with`, a synchronous closure: never across an await.
#[allow(clippy::disallowed_types)]
#[derive(Clone)]
pub struct SharedAgent(Arc<std::sync::Mutex<NodeAgent>>);

#[allow(clippy::disallowed_types)]
impl SharedAgent {
    pub fn new(agent: NodeAgent) -> SharedAgent {
        SharedAgent(Arc::new(std::sync::Mutex::new(agent)))
    }

    /// Runs `f` on the state machine under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut NodeAgent) -> R) -> R {
        let mut agent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut agent)
    }
}
