//! The shared index: one PostgreSQL database for any number of instances
//! (docs/storage.md). The database arbitrates everything two instances could
//! race on: a path's claim and a JWT slot's are unique rows, quotas are checked
//! against counters that every change locks first, and each due file is taken
//! out by exactly one reaper (`FOR UPDATE SKIP LOCKED`).
//!
//! Claims carry a heartbeat that their instance renews while it runs; the
//! claims of an instance that died are swept once stale, with what their
//! upload may have left in the store. Every query has a deadline; a database
//! that cannot be reached makes requests answer 503, and the pool reconnects
//! by itself when it returns.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::{NoTls, Row, Transaction};

use super::{Index, IndexError, Intent, QuotaError, Stats, Ticket, Usage};
use crate::store::{Key, Meta};

/// The schema, in order; each applied once, recorded in `upslot_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/0001_files.sql"))];
/// Serialises migrations between instances that start together.
const MIGRATION_LOCK: i64 = 0x7570_736c_6f74; // "upslot"
const POOL_SIZE: usize = 16;
/// The longest a request waits for a connection, or for one to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest any statement may run.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// How often an instance renews its claims' heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A claim whose heartbeat is older than this belongs to an instance that
/// died: a client retrying its upload elsewhere waits this long at most.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

type Begun = (i64, Option<Arc<Meta>>, Vec<Arc<Meta>>);

pub struct PgIndex {
    pool: Pool,
    claimer: Arc<Claimer>,
    /// Renews the heartbeat of this instance's claims; ends with the index, so
    /// that a stopped service closes its connections.
    heartbeat: tokio::task::JoinHandle<()>,
}

/// What making a claim needs; shared with the task that makes it.
struct Claimer {
    pool: Pool,
    quota_total: i64,
    quota_per_user: i64,
    /// This instance, in the claims it holds.
    instance: String,
    releases: mpsc::UnboundedSender<i64>,
}

/// An [`Intent`] that owns its strings, to travel into a task.
struct OwnedIntent {
    key: Key,
    path: String,
    object: String,
    jwt_slot: Option<String>,
    size: u64,
    uploader: Option<String>,
    now: u64,
}

impl OwnedIntent {
    fn of(intent: &Intent<'_>) -> OwnedIntent {
        OwnedIntent {
            key: intent.key,
            path: intent.path.to_owned(),
            object: intent.object.to_owned(),
            jwt_slot: intent.jwt_slot.map(str::to_owned),
            size: intent.size,
            uploader: intent.uploader.map(str::to_owned),
            now: intent.now,
        }
    }

    fn intent(&self) -> Intent<'_> {
        Intent {
            key: self.key,
            path: &self.path,
            object: &self.object,
            jwt_slot: self.jwt_slot.as_deref(),
            size: self.size,
            uploader: self.uploader.as_deref(),
            now: self.now,
        }
    }
}

impl Drop for PgIndex {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn db(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

/// A unique violation says another instance won the race.
fn pg(e: tokio_postgres::Error) -> IndexError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        IndexError::Exists
    } else {
        db(e)
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn meta_of(row: &Row) -> Result<Arc<Meta>, IndexError> {
    let Json(meta): Json<Meta> = row.try_get("meta").map_err(db)?;
    Ok(Arc::new(meta))
}

impl PgIndex {
    /// Connects, applies the migrations this version brings, and starts the
    /// tasks that renew heartbeats and give back abandoned claims. `instance`
    /// names this instance in its claims, the same across its restarts (see
    /// [`Index::recover`]).
    pub async fn connect(
        url: &str,
        quota_total: u64,
        quota_per_user: u64,
        instance: &str,
    ) -> Result<PgIndex, IndexError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| db(format!("index.url: {e}")))?;
        // Options the URL gives (a search_path, say) stay.
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            config.get_options().unwrap_or_default()
        );
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .options(options.trim_start())
            .application_name("upslot");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(db)?;
        migrate(&pool).await?;
        let (releases, released) = mpsc::unbounded_channel();
        // Ends once the index and every ticket are gone.
        tokio::spawn(give_back(pool.clone(), released));
        let heartbeat = tokio::spawn(heartbeat(pool.clone(), instance.to_owned()));
        Ok(PgIndex {
            claimer: Arc::new(Claimer {
                pool: pool.clone(),
                quota_total: int(quota_total),
                quota_per_user: int(quota_per_user),
                instance: instance.to_owned(),
                releases,
            }),
            pool,
            heartbeat,
        })
    }

    /// Deletes the claims `condition` picks (on `$1`), gives their reservations
    /// back, and returns what their uploads may have left in the store.
    async fn take_claims(
        &self,
        condition: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Vec<Arc<Meta>>, IndexError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_usage(&tx).await?;
        let rows = tx
            .query(
                &format!(
                    "DELETE FROM claims WHERE id IN (SELECT id FROM claims WHERE {condition} \
                     FOR UPDATE SKIP LOCKED) RETURNING size, uploader, path, object"
                ),
                &[value],
            )
            .await
            .map_err(db)?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let (size, user): (i64, Option<String>) = (row.get(0), row.get(1));
            reserve(&tx, user.as_deref(), -size).await?;
            taken.push(Arc::new(Meta::abandoned(row.get(2), row.get(3))));
        }
        tx.commit().await.map_err(db)?;
        Ok(taken)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, IndexError> {
        self.pool.get().await.map_err(db)
    }
}

impl Claimer {
    async fn ticket(&self, intent: Intent<'_>) -> Result<Ticket, IndexError> {
        let (id, replaced, abandoned) = self.begin_tx(&intent).await?;
        let releases = self.releases.clone();
        let mut ticket = Ticket::new(intent.key, replaced, id as u64, move |id| {
            let _ = releases.send(id as i64);
        });
        ticket.abandoned = abandoned;
        Ok(ticket)
    }

    /// The claim's id, the expired file it replaces, and what stale claims it
    /// took over.
    async fn begin_tx(&self, intent: &Intent<'_>) -> Result<Begun, IndexError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let usage = tx
            .query_one(
                "SELECT bytes, reserved FROM usage WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(db)?;
        let key = intent.key.bytes().as_slice();
        let existing = tx
            .query_opt(
                "SELECT meta, expires FROM files WHERE key = $1 FOR UPDATE",
                &[&key],
            )
            .await
            .map_err(db)?;
        // A claim on this path or slot whose instance died is taken over; what
        // its upload may have left is the ticket holder's to delete.
        let cutoff = unix_now() - STALE_AFTER.as_secs() as i64;
        let stale = tx
            .query(
                "DELETE FROM claims WHERE (key = $1 OR jwt_slot = $2) AND heartbeat < $3 \
                 RETURNING size, uploader, path, object",
                &[&key, &intent.jwt_slot, &cutoff],
            )
            .await
            .map_err(db)?;
        let mut abandoned = Vec::new();
        for row in &stale {
            let (size, user): (i64, Option<String>) = (row.get(0), row.get(1));
            reserve(&tx, user.as_deref(), -size).await?;
            abandoned.push(Arc::new(Meta::abandoned(row.get(2), row.get(3))));
        }
        let mut replaced = None;
        if let Some(row) = existing {
            let expires: i64 = row.get("expires");
            if expires > int(intent.now) {
                return Err(IndexError::Exists);
            }
            // Past its expiry the path is free again, whether or not a reaper came.
            replaced = take(&tx, &intent.key, None).await?;
        }
        if let Some(slot) = intent.jwt_slot {
            let taken = tx
                .query_opt("SELECT 1 FROM files WHERE jwt_slot = $1", &[&slot])
                .await
                .map_err(db)?;
            if taken.is_some() {
                return Err(IndexError::Exists);
            }
        }
        let size = int(intent.size);
        let (bytes, reserved): (i64, i64) = (usage.get(0), usage.get(1));
        if self.quota_total > 0 && bytes + reserved + size > self.quota_total {
            return Err(QuotaError::Total.into());
        }
        if let Some(user) = intent.uploader
            && self.quota_per_user > 0
        {
            let held = tx
                .query_opt(
                    "SELECT bytes + reserved FROM user_usage WHERE uploader = $1",
                    &[&user],
                )
                .await
                .map_err(db)?
                .map_or(0, |row| row.get::<_, i64>(0));
            if held + size > self.quota_per_user {
                return Err(QuotaError::User.into());
            }
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO claims (key, jwt_slot, size, uploader, path, object, instance, heartbeat) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &key,
                    &intent.jwt_slot,
                    &size,
                    &intent.uploader,
                    &intent.path,
                    &intent.object,
                    &self.instance,
                    &unix_now(),
                ],
            )
            .await
            .map_err(pg)?
            .get(0);
        reserve(&tx, intent.uploader, size).await?;
        tx.commit().await.map_err(pg)?;
        Ok((id, replaced, abandoned))
    }
}

async fn migrate(pool: &Pool) -> Result<(), IndexError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS upslot_migrations \
         (version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db)?;
    let applied: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM upslot_migrations",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO upslot_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "index schema migrated");
    }
    tx.commit().await.map_err(db)
}

/// Changes the counters: `files` and `bytes` stored, `reserved` bytes, in
/// all and for `user`. The caller holds the `usage` row.
async fn adjust(
    tx: &Transaction<'_>,
    user: Option<&str>,
    files: i64,
    bytes: i64,
    reserved: i64,
) -> Result<(), IndexError> {
    tx.execute(
        "UPDATE usage SET files = files + $1, bytes = bytes + $2, reserved = reserved + $3 \
         WHERE id = 1",
        &[&files, &bytes, &reserved],
    )
    .await
    .map_err(db)?;
    if let Some(user) = user {
        tx.execute(
            "INSERT INTO user_usage (uploader, bytes, reserved) VALUES ($1, $2, $3) \
             ON CONFLICT (uploader) DO UPDATE \
             SET bytes = user_usage.bytes + $2, reserved = user_usage.reserved + $3",
            &[&user, &bytes, &reserved],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn reserve(tx: &Transaction<'_>, user: Option<&str>, size: i64) -> Result<(), IndexError> {
    adjust(tx, user, 0, 0, size).await
}

async fn count(
    tx: &Transaction<'_>,
    user: Option<&str>,
    files: i64,
    size: i64,
) -> Result<(), IndexError> {
    adjust(tx, user, files, size, 0).await
}

/// Takes the `usage` row, which orders every change of the counters.
async fn lock_usage(tx: &Transaction<'_>) -> Result<(), IndexError> {
    tx.execute("SELECT 1 FROM usage WHERE id = 1 FOR UPDATE", &[])
        .await
        .map(drop)
        .map_err(db)
}

/// Records `meta`; false if its path is recorded already and `or_nothing`.
async fn insert_file(
    tx: &Transaction<'_>,
    meta: &Meta,
    or_nothing: bool,
) -> Result<bool, IndexError> {
    let conflict = if or_nothing {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    let added = tx
        .execute(
            &format!(
                "INSERT INTO files (key, meta, size, uploader, jwt_slot, created, expires) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7){conflict}"
            ),
            &[
                &meta.key().bytes().as_slice(),
                &Json(meta),
                &int(meta.size),
                &meta.uploader,
                &meta.jwt_slot(),
                &int(meta.created),
                &int(meta.expires),
            ],
        )
        .await
        .map_err(pg)?
        == 1;
    if added {
        count(tx, meta.uploader.as_deref(), 1, int(meta.size)).await?;
    }
    Ok(added)
}

/// Takes the file at `key` out (only if it is `expect`), with its accounting.
/// The caller holds the `usage` row.
async fn take(
    tx: &Transaction<'_>,
    key: &Key,
    expect: Option<&Meta>,
) -> Result<Option<Arc<Meta>>, IndexError> {
    let key = key.bytes().as_slice();
    let row = match expect {
        Some(expect) => {
            tx.query_opt(
                "DELETE FROM files WHERE key = $1 AND meta = $2 RETURNING meta",
                &[&key, &Json(expect)],
            )
            .await
        }
        None => {
            tx.query_opt("DELETE FROM files WHERE key = $1 RETURNING meta", &[&key])
                .await
        }
    }
    .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let meta = meta_of(&row)?;
    count(tx, meta.uploader.as_deref(), -1, -int(meta.size)).await?;
    Ok(Some(meta))
}

/// Ends claims whose upload was abandoned, as their tickets are dropped.
async fn give_back(pool: Pool, mut released: mpsc::UnboundedReceiver<i64>) {
    while let Some(id) = released.recv().await {
        let mut delay = Duration::from_millis(100);
        loop {
            match release(&pool, id).await {
                Ok(()) => break,
                // The database is away: the claim is still ours to give back,
                // and goes stale anyway if this process dies first.
                Err(e) => {
                    tracing::warn!(error = %e, "could not give back a claim; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

async fn release(pool: &Pool, id: i64) -> Result<(), IndexError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    lock_usage(&tx).await?;
    unclaim(&tx, id).await?;
    tx.commit().await.map_err(db)
}

/// Deletes claim `id` and its reservation; false if it was gone. The caller
/// holds the `usage` row.
async fn unclaim(tx: &Transaction<'_>, id: i64) -> Result<bool, IndexError> {
    let row = tx
        .query_opt(
            "DELETE FROM claims WHERE id = $1 RETURNING size, uploader",
            &[&id],
        )
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let (size, user): (i64, Option<String>) = (row.get(0), row.get(1));
    reserve(tx, user.as_deref(), -size).await?;
    Ok(true)
}

/// Renews this instance's claims, so that no other takes them for stale.
async fn heartbeat(pool: Pool, instance: String) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    loop {
        ticks.tick().await;
        let renewed = async {
            let client = pool.get().await.map_err(db)?;
            client
                .execute(
                    "UPDATE claims SET heartbeat = $1 WHERE instance = $2",
                    &[&unix_now(), &instance],
                )
                .await
                .map_err(db)
        };
        if let Err(e) = renewed.await {
            tracing::warn!(error = %e, "could not renew this instance's claims");
        }
    }
}

#[async_trait]
impl Index for PgIndex {
    async fn get(&self, key: &Key) -> Result<Option<Arc<Meta>>, IndexError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT meta FROM files WHERE key = $1",
                &[&key.bytes().as_slice()],
            )
            .await
            .map_err(db)?;
        row.as_ref().map(meta_of).transpose()
    }

    async fn begin(&self, intent: Intent<'_>) -> Result<Ticket, IndexError> {
        // The claim is made in a task of its own that runs to the end even if
        // the request is dropped meanwhile (an HTTP/2 reset drops it at once,
        // maybe after COMMIT went out): its ticket is then dropped, which gives
        // the claim back, instead of leaving it to go stale (docs/storage.md).
        let claimer = self.claimer.clone();
        let intent = OwnedIntent::of(&intent);
        tokio::spawn(async move { claimer.ticket(intent.intent()).await })
            .await
            .map_err(db)?
    }

    async fn abandon(&self, ticket: Ticket) {
        // If the database is away, the dropped ticket gives it back later.
        if release(&self.pool, ticket.id() as i64).await.is_ok() {
            ticket.settle();
        }
    }

    async fn commit(&self, ticket: Ticket, meta: &Meta) -> Result<(), IndexError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_usage(&tx).await?;
        if !unclaim(&tx, ticket.id() as i64).await? {
            // Swept as stale: the path may be someone else's by now.
            return Err(IndexError::Exists);
        }
        insert_file(&tx, meta, false).await?;
        tx.commit().await.map_err(pg)?;
        ticket.settle();
        Ok(())
    }

    async fn remove(
        &self,
        key: &Key,
        expect: Option<&Meta>,
    ) -> Result<Option<Arc<Meta>>, IndexError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_usage(&tx).await?;
        let taken = take(&tx, key, expect).await?;
        tx.commit().await.map_err(db)?;
        Ok(taken)
    }

    async fn take_due(&self, now: u64, max: usize) -> Result<Vec<Arc<Meta>>, IndexError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_usage(&tx).await?;
        let rows = tx
            .query(
                "DELETE FROM files WHERE key IN (SELECT key FROM files WHERE expires <= $1 \
                 ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING meta",
                &[&int(now), &int(max as u64)],
            )
            .await
            .map_err(db)?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let meta = meta_of(row)?;
            count(&tx, meta.uploader.as_deref(), -1, -int(meta.size)).await?;
            due.push(meta);
        }
        tx.commit().await.map_err(db)?;
        due.sort_by_key(|m| m.expires);
        Ok(due)
    }

    async fn recover(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        self.take_claims("instance = $1", &self.claimer.instance)
            .await
    }

    async fn take_stale(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        let cutoff = unix_now() - STALE_AFTER.as_secs() as i64;
        self.take_claims("heartbeat < $1", &cutoff).await
    }

    async fn list(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT meta FROM files", &[])
            .await
            .map_err(db)?;
        rows.iter().map(meta_of).collect()
    }

    async fn adopt(&self, meta: Meta) -> Result<bool, IndexError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        lock_usage(&tx).await?;
        let added = insert_file(&tx, &meta, true).await?;
        tx.commit().await.map_err(db)?;
        Ok(added)
    }

    async fn stats(&self) -> Result<Stats, IndexError> {
        let client = self.client().await?;
        let usage = client
            .query_one("SELECT files, bytes, reserved FROM usage WHERE id = 1", &[])
            .await
            .map_err(db)?;
        let times = client
            .query_one("SELECT min(created), min(expires) FROM files", &[])
            .await
            .map_err(db)?;
        let (files, bytes, reserved): (i64, i64, i64) = (usage.get(0), usage.get(1), usage.get(2));
        let (oldest, next): (Option<i64>, Option<i64>) = (times.get(0), times.get(1));
        Ok(Stats {
            usage: Usage {
                files: files.max(0) as u64,
                bytes: bytes.max(0) as u64,
            },
            reserved: reserved.max(0) as u64,
            oldest_created: oldest.map(|t| t.max(0) as u64),
            next_expiry: next.map(|t| t.max(0) as u64),
        })
    }

    async fn check(&self) -> Option<String> {
        let answered = async {
            let client = self.client().await?;
            client.query_one("SELECT 1", &[]).await.map_err(db)
        };
        answered
            .await
            .err()
            .map(|e| format!("index unavailable ({e})"))
    }
}
