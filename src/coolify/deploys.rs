//! Starts of freshly created services, gathered into Coolify's batch deploy (`POST /deploy?uuid=a,b,...`).
//!
//! One deploy call is in flight at a time; the starts asked for meanwhile wait and go together in the
//! next. When the budget is short, the caller whose turn it is first gathers for `GATHER` (the tokens
//! meanwhile go to other jobs' creates and env pushes), so the starts of a burst cost one call between
//! several instead of one each. With tokens to spare a lone start goes at once, in a call of its own.
//! The caller whose turn it is sends the batch from its own job, so the budget places the call by that
//! job's age and that job's timeline shows it.
//!
//! Batch deploy has no "already running" check (a running service is force-recreated), so only services
//! known to be stopped come here: those created, stopped, by the same run.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::CoolifyError;

/// The most services one deploy call names (their uuids travel in the URL).
pub const MAX_BATCH: usize = 50;
/// How long a batch gathers when the budget is short: at the default 180/min about six calls of other
/// jobs go meanwhile; a start takes Coolify a minute or two, so two seconds more cost little.
pub const GATHER: Duration = Duration::from_secs(2);

type Started = Result<(), CoolifyError>;

#[derive(Default)]
pub struct DeployBatches {
    waiting: Mutex<Vec<(String, oneshot::Sender<Started>)>>,
    /// Held by the caller whose call is in flight; the next in line (FIFO) sends what waits then.
    turn: tokio::sync::Mutex<()>,
}

impl DeployBatches {
    /// Starts `uuid` in one `deploy` call with the other starts waiting at that moment (gathered for
    /// `GATHER` first while `short()` says the budget is short). A uuid the call does not report started
    /// is `NotFound`; an error of the call is every member's.
    pub async fn start<F, Fut>(&self, uuid: &str, short: impl Fn() -> bool, deploy: F) -> Started
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<String>, CoolifyError>>,
    {
        let (tx, mut rx) = oneshot::channel();
        self.lock().push((uuid.to_string(), tx));
        loop {
            let turn = self.turn.lock().await;
            if let Some(started) = heard(&mut rx) {
                return started;
            }
            if short() && self.lock().len() < MAX_BATCH {
                tokio::time::sleep(GATHER).await;
            }
            let batch: Vec<_> = {
                let mut waiting = self.lock();
                let n = waiting.len().min(MAX_BATCH);
                waiting.drain(..n).collect()
            };
            if batch.is_empty() {
                // Not answered and not waiting: only a sender cancelled mid-call loses starts (it drops them).
                return Err(abandoned());
            }
            let result = deploy(batch.iter().map(|(u, _)| u.clone()).collect()).await;
            for (uuid, tx) in batch {
                let outcome = match &result {
                    Ok(started) if started.contains(&uuid) => Ok(()),
                    Ok(_) => Err(CoolifyError::NotFound {
                        message: "Service not found.".into(),
                    }),
                    Err(e) => Err(e.clone()),
                };
                let _ = tx.send(outcome);
            }
            drop(turn);
            // Ours was in this call unless more than a batch waited before it.
            if let Some(started) = heard(&mut rx) {
                return started;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, oneshot::Sender<Started>)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answer for our start, if one came (a dropped sender is an abandoned call).
fn heard(rx: &mut oneshot::Receiver<Started>) -> Option<Started> {
    match rx.try_recv() {
        Ok(started) => Some(started),
        Err(oneshot::error::TryRecvError::Closed) => Some(Err(abandoned())),
        Err(oneshot::error::TryRecvError::Empty) => None,
    }
}

/// The caller that sent our start was cancelled before it heard Coolify's answer: whether the service
/// started is unknown (the job's next run observes it).
fn abandoned() -> CoolifyError {
    CoolifyError::Transport("the batch deploy carrying this start was abandoned before its answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Starts asked for while a call is in flight go together in the next call; a lone one goes alone.
    #[tokio::test]
    async fn starts_waiting_behind_a_call_share_the_next() {
        let batches = Arc::new(DeployBatches::default());
        let calls = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let deploy = {
            let calls = calls.clone();
            move |uuids: Vec<String>| {
                let calls = calls.clone();
                async move {
                    calls.lock().unwrap().push(uuids.clone());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(uuids.into_iter().filter(|u| u != "gone").collect())
                }
            }
        };
        let first = {
            let (b, d) = (batches.clone(), deploy.clone());
            tokio::spawn(async move { b.start("a", || false, d).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut rest = Vec::new();
        for u in ["b", "c", "gone"] {
            let (b, d) = (batches.clone(), deploy.clone());
            rest.push(tokio::spawn(async move { b.start(u, || false, d).await }));
        }
        assert!(first.await.unwrap().is_ok());
        let results: Vec<_> = futures_util::future::join_all(rest)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert!(results[0].is_ok() && results[1].is_ok());
        assert!(matches!(results[2], Err(CoolifyError::NotFound { .. })));
        assert_eq!(*calls.lock().unwrap(), [vec!["a"], vec!["b", "c", "gone"]]);
        assert!(batches.start("d", || false, deploy.clone()).await.is_ok());
        assert_eq!(calls.lock().unwrap().len(), 3);
        // Budget short: the first caller gathers the starts that come meanwhile into its own call.
        let mut gathered = Vec::new();
        for u in ["e", "f", "g"] {
            let (b, d) = (batches.clone(), deploy.clone());
            gathered.push(tokio::spawn(async move { b.start(u, || true, d).await }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for r in futures_util::future::join_all(gathered).await {
            assert!(r.unwrap().is_ok());
        }
        assert_eq!(calls.lock().unwrap()[3..], [vec!["e", "f", "g"]]);
    }

    #[tokio::test]
    async fn an_error_of_the_call_is_every_members() {
        let batches = DeployBatches::default();
        let failing = |_: Vec<String>| async {
            Err(CoolifyError::Server {
                status: 503,
                message: "down".into(),
            })
        };
        assert!(matches!(
            batches.start("a", || false, failing).await,
            Err(CoolifyError::Server { status: 503, .. })
        ));
    }
}
