//! A sink that writes from every worker, exactly once, by two-phase commit.
//!
//! ```text
//!  worker w (every process) ─its rows─► writer w: folds its epochs up to the cut,
//!                                        BEGIN; upserts; PREPARE TRANSACTION 'clickflow:<db>:<schema>:w:<cut>';
//!                                        clickflow_writers.prepared_through = cut
//!  worker 0 of process 0 ─progress, dead letters─► coordinator, once every writer is through the cut:
//!        BEGIN; dead letters, offsets, watermark (its epochs up to the cut);
//!               INSERT INTO clickflow_commit_log the writers' parts; next cut; COMMIT   ◄ the decision
//!        COMMIT PREPARED each part; forget them in the log
//! ```
//!
//! Each worker's writer has a connection of its own and writes only the rows of the keys its
//! worker owns (a stage makes every change of a key on one worker), so the sink's capacity
//! grows with workers and processes; the coordinator writes only the small part (offsets,
//! watermark, dead letters) and commits. This is the protocol of Flink's XA sink on
//! PostgreSQL's `PREPARE TRANSACTION`.
//!
//! **Rounds.** The sink commits in rounds. The coordinator sets a cut, the newest epoch whose
//! gathered part it has; each writer folds the rows of every epoch up to the cut into one part
//! (a row changed in many epochs is written once, as the single writer's fold does), prepares
//! it, and records that it is through the cut. Once every writer is, the coordinator commits
//! the round and sets the next cut to what has arrived meanwhile: a sink that is behind
//! commits bigger rounds, one that keeps up commits every epoch. A writer begins its next
//! part only once its previous one is committed, because a row inserted by a prepared
//! transaction is invisible to a later transaction's `DELETE` (only a conflicting `INSERT`
//! waits for it): a retraction written before that commit would miss its row.
//!
//! **Waiting.** Each side tells the other when it has moved, by a `NOTIFY` on
//! `clickflow_sink` with the schema as payload: a writer once it is through a cut, the
//! coordinator once it has set a cut and committed the round's parts. Both `LISTEN` and
//! wake on their own pipeline's notifications (`Link::listening`), and look again on their
//! own every `RECHECK` (200 ms). A notification is only a hint to look: what each side acts
//! on is what it reads in the tables, so a lost or extra one changes nothing but when it
//! looks.
//!
//! **Exactly once.** A writer's part is prepared (durable, invisible) before the writer says
//! it is through the cut. The coordinator's transaction, which commits the offsets the round
//! reached, also lists the parts it commits: that commit is the decision. After a crash
//! anywhere (any writer, the coordinator, a whole process), the next start ([`recover`])
//! commits every prepared part the log lists and rolls back every other, so the tables hold
//! exactly the rounds whose offsets are committed, and the restart replays from those
//! offsets as always.
//!
//! **What a reader sees.** Between the coordinator's commit and the last `COMMIT PREPARED`
//! (milliseconds), a reader may see the new offsets and some writers' rows of the round
//! before others'; a crash in that moment extends it until the next start. A reader never
//! sees a part that will not be committed, nor rows of an epoch whose offsets are not
//! committed. With one writer ([`super::spawn_sink`]) every transaction appears at once.
//!
//! **Needs** `max_prepared_transactions` of at least [`MAX_OUTSTANDING`] per worker on the
//! server (it is 0 by default); `--sink-writers auto` uses this sink when the server allows
//! it and the single writer otherwise.

mod coordinator;
mod writer;

pub use coordinator::spawn_coordinator;
pub use writer::{spawn_writer, SharedObserver, WriterHandle};

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use clickflow_dataflow::EpochOutput;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::config::WAKEUP_CHANNEL;
use super::schema::connect;
use super::{DatabaseUrl, SinkError};

/// The most parts one writer keeps prepared and not yet committed (see "Rounds"): the
/// server must allow this many prepared transactions per worker.
pub const MAX_OUTSTANDING: i64 = 1;

/// A writer's `prepared_through` once it has written everything (its input ended).
const DONE: i64 = i64::MAX;

/// How long a writer or the coordinator waits for the other side before looking again on
/// its own. Each side announces its progress (`NOTIFY`, [`PartNames::announcement`]) and
/// the other wakes at once; this only bounds the wait for a notification lost while a
/// connection was replaced.
///
/// They used to look every 2 ms, each look a round trip to the server, from every writer
/// and the coordinator, whether anything had changed or not. On the side-by-side file (2M
/// events, 2 workers, 4 December 2026, fifth sitting, alternating runs) those looks and the
/// server's answers took the CPU the workers needed: the run took 6.7–9.8 s with a writer
/// per worker against 6.2 s with one writer; waking on notifications, 4.4–6.4 s.
const RECHECK: Duration = Duration::from_millis(200);

/// Takes the parts of `waiting` (in epoch order) up to epoch `cut` and folds them into one,
/// consolidated (`None`: there are none); `taken` sees each part taken.
fn fold_through(
    waiting: &mut VecDeque<EpochOutput>,
    cut: i64,
    mut taken: impl FnMut(&EpochOutput),
) -> Option<EpochOutput> {
    let mut fold: Option<EpochOutput> = None;
    while let Some(part) = waiting.front() {
        if part.epoch as i128 > cut as i128 {
            break;
        }
        taken(part);
        let part = waiting.pop_front()?;
        match fold.as_mut() {
            Some(fold) => fold.append(part),
            None => fold = Some(part),
        }
    }
    fold.map(|mut fold| {
        fold.consolidate();
        fold
    })
}

/// The names of this pipeline's prepared parts: unique over the server (prepared
/// transactions are global), so they carry the database's oid and the schema.
#[derive(Clone, Debug)]
pub(crate) struct PartNames {
    prefix: String,
    /// The statement that wakes the pipeline's other writers and coordinator.
    announcement: String,
}

impl PartNames {
    pub(crate) async fn load(client: &Client, schema: &str) -> Result<PartNames, SinkError> {
        let row = client
            .query_one(
                "SELECT oid::bigint FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .map_err(SinkError::statement("reading the database's oid"))?;
        let oid: i64 = row.get(0);
        Ok(PartNames {
            prefix: format!("clickflow:{oid}:{schema}:"),
            // The schema is a plain identifier (`DatabaseUrl::with_schema`): safe to quote.
            announcement: format!("NOTIFY {WAKEUP_CHANNEL}, '{schema}'"),
        })
    }

    /// A statement that wakes the pipeline's writers and coordinator waiting for each
    /// other (see [`RECHECK`]); inside a transaction it takes effect at its commit.
    fn announcement(&self) -> &str {
        &self.announcement
    }

    /// Wakes the pipeline's writers and coordinator now.
    async fn announce(&self, client: &Client) -> Result<(), SinkError> {
        client
            .batch_execute(&self.announcement)
            .await
            .map_err(SinkError::statement("announcing the sink's progress"))
    }

    /// The name of writer `writer`'s part of `epoch`: plain digits and an identifier, safe to
    /// put in a string literal (`PREPARE TRANSACTION` takes no parameter).
    fn part(&self, writer: usize, epoch: u64) -> String {
        format!("{}{writer}:{epoch}", self.prefix)
    }

    /// The epoch of a part's name, if it is one of this pipeline's.
    fn epoch_of(&self, gid: &str) -> Option<u64> {
        let rest = gid.strip_prefix(&self.prefix)?;
        let (_writer, epoch) = rest.split_once(':')?;
        epoch.parse().ok()
    }

    /// This pipeline's prepared parts, with their epochs.
    async fn prepared(&self, client: &Client) -> Result<Vec<(String, u64)>, SinkError> {
        let rows = client
            .query(
                "SELECT gid FROM pg_prepared_xacts
                 WHERE database = current_database() AND starts_with(gid, $1)",
                &[&self.prefix],
            )
            .await
            .map_err(SinkError::statement("listing prepared parts"))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let gid: String = row.get(0);
                let epoch = self.epoch_of(&gid)?;
                Some((gid, epoch))
            })
            .collect())
    }

    /// Commits every prepared part the commit log lists (decided, maybe not yet committed
    /// when a coordinator stopped) and clears the log. Returns how many it committed.
    async fn finish_decided(&self, client: &Client) -> Result<usize, SinkError> {
        let decided: HashSet<String> = client
            .query("SELECT gid FROM clickflow_commit_log", &[])
            .await
            .map_err(SinkError::statement("reading the commit log"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if decided.is_empty() {
            return Ok(0);
        }
        let mut committed = 0;
        for (gid, _) in self.prepared(client).await? {
            if decided.contains(&gid) && finish_part(client, "COMMIT PREPARED", &gid).await? {
                committed += 1;
            }
        }
        let decided: Vec<String> = decided.into_iter().collect();
        client
            .execute(
                "DELETE FROM clickflow_commit_log WHERE gid = ANY($1)",
                &[&decided],
            )
            .await
            .map_err(SinkError::statement("clearing the commit log"))?;
        Ok(committed)
    }
}

/// Runs `COMMIT PREPARED` or `ROLLBACK PREPARED` (`finish`) of part `gid`, listed as
/// prepared a moment ago. Returns whether this call finished it.
///
/// When a connection is cut, its server process is still exiting after the client has seen
/// the error, and a part it was committing is busy until then, or finished by it meanwhile.
/// A busy part is a retriable error (the connection that waits a moment finds it free); a
/// part that no longer exists was finished by that exiting process, which only ever
/// finishes it as decided (the commit log's parts are committed before any other is rolled
/// back), so it is not an error.
async fn finish_part(client: &Client, finish: &'static str, gid: &str) -> Result<bool, SinkError> {
    match client.batch_execute(&format!("{finish} '{gid}'")).await {
        Ok(()) => Ok(true),
        Err(error) => match error.code() {
            Some(&SqlState::UNDEFINED_OBJECT) => Ok(false),
            Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => {
                Err(SinkError::PartBusy(gid.to_owned()))
            }
            _ => Err(SinkError::statement(finish)(error)),
        },
    }
}

/// What [`recover`] found after the previous run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Prepared parts the previous coordinator had decided to commit, committed now.
    pub committed: usize,
    /// Prepared parts of epochs whose offsets were never committed, rolled back.
    pub rolled_back: usize,
}

/// Settles what a previous run of this pipeline left prepared: commits the parts its
/// coordinator had decided to commit, rolls back every other, and forgets its writers. Run
/// at start by the process that coordinates, before any writer of the new run exists (the
/// other processes cannot write before the cluster has formed, which needs this one).
/// `client` is connected to the pipeline's database with `schema` on its search path.
pub async fn recover(client: &Client, schema: &str) -> Result<Recovered, SinkError> {
    let names = PartNames::load(client, schema).await?;
    let committed = names.finish_decided(client).await?;
    let mut rolled_back = 0;
    for (gid, _) in names.prepared(client).await? {
        if finish_part(client, "ROLLBACK PREPARED", &gid).await? {
            rolled_back += 1;
        }
    }
    client
        .batch_execute("DELETE FROM clickflow_writers; DELETE FROM clickflow_cut")
        .await
        .map_err(SinkError::statement(
            "forgetting the previous run's writers",
        ))?;
    let recovered = Recovered {
        committed,
        rolled_back,
    };
    if recovered != Recovered::default() {
        tracing::info!(
            committed,
            rolled_back,
            "settled the parts a previous run left prepared"
        );
    }
    Ok(recovered)
}

/// Waits until the coordinating process has settled what a previous run left decided
/// ([`recover`]): a process that does not coordinate reads the tables at start (users'
/// histories) and must see every committed epoch whole.
pub async fn await_recovery(client: &Client) -> Result<(), SinkError> {
    let mut told = false;
    loop {
        let row = client
            .query_one("SELECT count(*) FROM clickflow_commit_log", &[])
            .await
            .map_err(SinkError::statement("reading the commit log"))?;
        if row.get::<_, i64>(0) == 0 {
            return Ok(());
        }
        if !told {
            tracing::info!("waiting for process 0 to settle the previous run's prepared parts");
            told = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Rolls back every transaction left prepared in the database of `url`, whoever prepared
/// it: for a database about to be dropped (PostgreSQL refuses to drop one that has any).
pub async fn discard_prepared(url: &DatabaseUrl) -> Result<usize, SinkError> {
    let client = connect(url).await?;
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
            &[],
        )
        .await
        .map_err(SinkError::statement("listing prepared transactions"))?;
    let mut discarded = 0;
    for row in &rows {
        let gid: String = row.get(0);
        if finish_part(&client, "ROLLBACK PREPARED", &gid.replace('\'', "''")).await? {
            discarded += 1;
        }
    }
    Ok(discarded)
}

/// How many prepared transactions the server allows (`max_prepared_transactions`).
pub async fn prepared_transactions_allowed(client: &Client) -> Result<i64, SinkError> {
    let row = client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'max_prepared_transactions'",
            &[],
        )
        .await
        .map_err(SinkError::statement("reading max_prepared_transactions"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing::{block_on, scratch_database};

    /// Finishing a part that another connection finished meanwhile is not an error, and
    /// says it did not finish it; one that exists is finished.
    #[test]
    fn a_part_finished_by_another_connection_is_not_an_error() {
        let (db, url) = scratch_database("finish_part");
        block_on(async {
            let client = connect(&url).await.unwrap();
            let gid = format!("clickflow-test:{}", db.name);
            client
                .batch_execute(&format!("BEGIN; PREPARE TRANSACTION '{gid}'"))
                .await
                .unwrap();
            assert!(finish_part(&client, "COMMIT PREPARED", &gid).await.unwrap());
            assert!(!finish_part(&client, "COMMIT PREPARED", &gid).await.unwrap());
            assert!(!finish_part(&client, "ROLLBACK PREPARED", &gid)
                .await
                .unwrap());
        });
    }
}
