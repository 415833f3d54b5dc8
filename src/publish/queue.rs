//! The durable event queue: every event is written here before it is published, and removed only when the
//! broker has acknowledged it (PUBACK), so neither a broker outage, a daemon restart nor a power cut loses it.
//!
//! Storage is [redb] (ACID, copy-on-write, crash-safe); each record also carries its own CRC-32 so a record
//! damaged on the medium is detected, logged and skipped rather than published. A damaged queue file (one
//! that starts with redb's header, so it was a queue) is moved aside (`<path>.corrupt-<unix time>`) and a
//! fresh queue started: the daemon never stops over it. Anything else at the path — a device, a folder, a
//! user's file — is never touched: that is an error naming the path ([`foreign`]).
//!
//! Appends are durable when [`Queue::push`] returns (one fsync per batch). Removals are batched and made
//! durable at least every [`ACK_FLUSH`]; after a crash the few acknowledged-but-not-yet-removed events are
//! sent again, which at-least-once delivery allows. The queue is bounded by count and bytes: when full, the
//! oldest events are dropped and counted.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use redb::{Database, Durability, ReadableTable, TableDefinition};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Per-camera last sequence number, so `seq` keeps counting across restarts.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");

/// Removals are made durable at least this often.
pub const ACK_FLUSH: Duration = Duration::from_secs(1);

/// redb's page cache. Its default (1 GiB) lets RSS creep up by a megabyte per broker outage as the
/// copy-on-write file cycles through fresh pages; the queue reads what it wrote moments ago, so a little is
/// plenty (measured with scripts/soak-mqtt).
const CACHE_BYTES: usize = 512 * 1024;

/// Record layout: CRC-32 (LE, over the rest) | topic length (u16 LE) | topic | payload.
const HEADER: usize = 6;

pub use crate::config::files::{REDB_MAGIC, foreign};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "event queue {}: {why}: set [queue] path to a new file (the default is /var/lib/camclassd/queue.redb)",
        path.display()
    )]
    Foreign { path: PathBuf, why: String },
    #[error("event queue {}: {source}", path.display())]
    Open { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("event queue {}: {source} (free space on that disk, or set [queue] path to a writable one)", path.display())]
    Io { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
}

/// A queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Limits of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: u64,
    pub max_bytes: u64,
}

/// The on-disk queue. Single owner (the publisher task); redb's file lock keeps a second daemon out.
pub struct Queue {
    db: Database,
    path: PathBuf,
    limits: Limits,
    /// Id the next pushed record gets.
    next_id: u64,
    len: u64,
    bytes: u64,
    sizes: std::collections::BTreeMap<u64, u64>,
    sequences: HashMap<String, u64>,
    dropped: u64,
    pending_removals: bool,
    last_durable: Instant,
    /// (device, inode) of the file this queue has open: a different one at `path`, or none, means the file
    /// was deleted or replaced under the daemon ([`Queue::ensure_file`]).
    file_id: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("path", &self.path).field("len", &self.len).field("bytes", &self.bytes).finish()
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

impl Queue {
    /// Opens (or creates) the queue at `path`. A damaged file is moved aside with an error logged, and
    /// whatever records could still be read are carried over into the fresh queue.
    pub fn open(path: &Path, limits: Limits) -> Result<Queue, QueueError> {
        if let Some(why) = foreign(path) {
            return Err(QueueError::Foreign { path: path.to_path_buf(), why });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Open {
                path: path.to_path_buf(),
                source: format!("cannot create {}: {e} (set [queue] path to a writable file)", dir.display()).into(),
            })?;
        }
        let opened = Self::try_open(path, limits);
        // What the user or the machine must fix (permissions, a second daemon, a full or read-only disk) is
        // an error: moving the file aside would throw its events away. Only damage is worked around.
        let problem = match &opened {
            Ok(Opened::Salvaged { problem, .. }) | Err(problem) => Some(problem),
            Ok(Opened::Clean(_)) => None,
        };
        if let Some(problem) = problem
            && let Some(reason) = not_damage(problem.as_ref())
        {
            let source = format!("{reason}: {problem}").into();
            return Err(match reason {
                NotDamage::Fixable(_) => QueueError::Open { path: path.to_path_buf(), source },
                NotDamage::Io => QueueError::Io { path: path.to_path_buf(), source },
            });
        }
        match opened {
            Ok(Opened::Clean(queue)) => Ok(queue),
            Ok(Opened::Salvaged { records, mut sequences, problem }) => {
                let aside = Self::move_aside(path)?;
                tracing::error!(
                    "event queue {} is damaged ({problem}); kept {} readable events, moved the file to {}",
                    path.display(),
                    records.len(),
                    aside.display()
                );
                // Sequence numbers must not go back: take the highest seen in the kept events too.
                for r in &records {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.payload)
                        && let (Some(camera), Some(seq)) = (v["camera"].as_str(), v["seq"].as_u64())
                    {
                        let s = sequences.entry(camera.to_string()).or_insert(0);
                        *s = (*s).max(seq);
                    }
                }
                let mut queue = Self::fresh(path, limits)?;
                queue.restore(records, sequences)?;
                Ok(queue)
            }
            Err(problem) => {
                let aside = Self::move_aside(path)?;
                tracing::error!(
                    "event queue {} cannot be read ({problem}); moved it to {} and started an empty queue",
                    path.display(),
                    aside.display()
                );
                Self::fresh(path, limits)
            }
        }
    }

    fn move_aside(path: &Path) -> Result<PathBuf, QueueError> {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{stamp}"));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| QueueError::Open { path: path.to_path_buf(), source: boxed(e) })?;
        Ok(aside)
    }

    fn fresh(path: &Path, limits: Limits) -> Result<Queue, QueueError> {
        match Self::try_open(path, limits) {
            Ok(Opened::Clean(q)) => Ok(q),
            Ok(Opened::Salvaged { problem, .. }) | Err(problem) => {
                Err(QueueError::Open { path: path.to_path_buf(), source: problem })
            }
        }
    }

    /// Opens the file and checks every record's CRC, keeping only sizes in memory (a full queue is up to
    /// `max_mb`). Reads before writing, so a damaged file loses nothing to a failed first write. redb is
    /// not expected to panic on a damaged file, but a daemon that must never crash over its queue does
    /// not rely on that.
    fn try_open(path: &Path, limits: Limits) -> Result<Opened, Box<dyn std::error::Error + Send + Sync>> {
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<Opened, Box<dyn std::error::Error + Send + Sync>> {
            let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
            let mut sizes = std::collections::BTreeMap::new();
            let mut sequences = HashMap::new();
            let mut bad = Vec::new();
            let scan = (|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                let read = db.begin_read()?;
                match read.open_table(SEQUENCES) {
                    Ok(seqs) => {
                        for entry in seqs.iter()? {
                            let (camera, seq) = entry?;
                            sequences.insert(camera.value().to_string(), seq.value());
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                match read.open_table(EVENTS) {
                    Ok(events) => {
                        for entry in events.iter()? {
                            let (id, value) = entry?;
                            let value = value.value();
                            if check(value) {
                                sizes.insert(id.value(), value.len() as u64);
                            } else {
                                bad.push(id.value());
                            }
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            })();
            if let Err(problem) = scan {
                return Ok(Opened::Salvaged { records: salvage(&db), sequences, problem });
            }
            // Both tables exist from here on (a fresh file has neither).
            let tx = db.begin_write()?;
            tx.open_table(EVENTS)?;
            tx.open_table(SEQUENCES)?;
            tx.commit()?;
            let mut queue = Queue::from_parts(db, path, limits, sizes, sequences);
            if !bad.is_empty() {
                // Damaged records inside a readable file: drop them and carry on with the same file.
                tracing::error!(
                    "event queue {}: {} damaged event(s) failed their checksum and were skipped",
                    path.display(),
                    bad.len()
                );
                queue.delete(&bad, true)?;
            }
            Ok(Opened::Clean(queue))
        }));
        match opened {
            Ok(result) => result,
            Err(_) => Err("the storage library panicked reading it".into()),
        }
    }

    fn from_parts(
        db: Database,
        path: &Path,
        limits: Limits,
        sizes: std::collections::BTreeMap<u64, u64>,
        sequences: HashMap<String, u64>,
    ) -> Queue {
        Queue {
            db,
            path: path.to_path_buf(),
            limits,
            next_id: sizes.keys().next_back().map_or(1, |id| id + 1),
            len: sizes.len() as u64,
            bytes: sizes.values().sum(),
            sizes,
            sequences,
            dropped: 0,
            pending_removals: false,
            last_durable: Instant::now(),
            file_id: file_id(path),
        }
    }

    /// Checks that the file at the queue's path is still the one this queue has open. When it was deleted
    /// (or replaced) while the daemon ran, its events now live only in the open, unlinked file: they are
    /// written, with their ids and the sequence numbers, into a new file at the path, and that is logged as
    /// the error it is. Called before every write and every second by the publisher. A path now taken by
    /// something that is not a queue is an error, and nothing is written there.
    pub fn ensure_file(&mut self) -> Result<(), QueueError> {
        let now = file_id(&self.path);
        if now.is_some() && now == self.file_id {
            return Ok(());
        }
        if let Some(why) = foreign(&self.path) {
            return Err(QueueError::Foreign { path: self.path.clone(), why });
        }
        let io = |source| QueueError::Io { path: self.path.clone(), source };
        let mut records: Vec<(u64, Vec<u8>)> = Vec::with_capacity(self.sizes.len());
        {
            let read = self.db.begin_read().map_err(|e| io(boxed(e)))?;
            match read.open_table(EVENTS) {
                Ok(table) => {
                    for entry in table.iter().map_err(|e| io(boxed(e)))? {
                        let (id, value) = entry.map_err(|e| io(boxed(e)))?;
                        records.push((id.value(), value.value().to_vec()));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(io(boxed(e))),
            }
        }
        tracing::error!(
            "event queue {} was {} while camclassd ran: writing its {} waiting events into a new file there",
            self.path.display(),
            if now.is_some() { "replaced" } else { "deleted" },
            records.len()
        );
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(boxed(e)))?;
        }
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&self.path).map_err(|e| io(boxed(e)))?;
        let tx = db.begin_write().map_err(|e| io(boxed(e)))?;
        {
            let mut table = tx.open_table(EVENTS).map_err(|e| io(boxed(e)))?;
            for (id, value) in &records {
                table.insert(*id, value.as_slice()).map_err(|e| io(boxed(e)))?;
            }
            let mut seqs = tx.open_table(SEQUENCES).map_err(|e| io(boxed(e)))?;
            for (camera, seq) in &self.sequences {
                seqs.insert(camera.as_str(), *seq).map_err(|e| io(boxed(e)))?;
            }
        }
        tx.commit().map_err(|e| io(boxed(e)))?;
        self.db = db;
        self.file_id = file_id(&self.path);
        self.pending_removals = false;
        self.last_durable = Instant::now();
        Ok(())
    }

    fn restore(&mut self, records: Vec<Record>, sequences: HashMap<String, u64>) -> Result<(), QueueError> {
        self.sequences = sequences;
        let items: Vec<(String, Vec<u8>)> = records.into_iter().map(|r| (r.topic, r.payload)).collect();
        self.push(&items)?;
        Ok(())
    }

    fn write(
        &mut self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<(), QueueError> {
        self.ensure_file()?;
        let io = |source| QueueError::Io { path: self.path.clone(), source };
        let mut tx = self.db.begin_write().map_err(|e| io(boxed(e)))?;
        tx.set_durability(if durable { Durability::Immediate } else { Durability::None });
        f(&tx).map_err(io)?;
        tx.commit().map_err(|e| io(boxed(e)))?;
        if durable {
            self.pending_removals = false;
            self.last_durable = Instant::now();
        }
        Ok(())
    }

    /// The next sequence number of `camera` (1, 2, …, continuing across restarts). Persisted with the next
    /// [`Queue::push`].
    pub fn next_seq(&mut self, camera: &str) -> u64 {
        let seq = self.sequences.entry(camera.to_string()).or_insert(0);
        *seq += 1;
        *seq
    }

    /// Appends events, durably (one fsync for the batch), dropping the oldest beyond the limits.
    /// Returns how many old events were dropped to make room.
    pub fn push(&mut self, items: &[(String, Vec<u8>)]) -> Result<u64, QueueError> {
        self.push_keeping(items, 0)
    }

    /// [`Queue::push`], dropping records with an id below `handed_over` (already sent to the broker, maybe
    /// acknowledged) only when nothing newer is left to drop: a subscriber receives those, so dropping them
    /// would count as lost events that arrived, and `dropped` would no longer equal the gap in `seq`.
    pub fn push_keeping(&mut self, items: &[(String, Vec<u8>)], handed_over: u64) -> Result<u64, QueueError> {
        if items.is_empty() {
            return Ok(0);
        }
        let first_id = self.next_id;
        let sizes: Vec<u64> = items.iter().map(|(t, p)| (HEADER + t.len() + p.len()) as u64).collect();
        // Plan the evictions before writing: new events count against the limits too, and when the batch
        // alone is over them its own oldest events go as well.
        let mut evict = Vec::new();
        let mut skip_new = 0;
        {
            let mut len = self.len + items.len() as u64;
            let mut bytes = self.bytes + sizes.iter().sum::<u64>();
            // Never-sent records first, oldest first; then the ones already handed to the broker.
            let mut oldest = self.sizes.range(handed_over..).chain(self.sizes.range(..handed_over));
            while len > self.limits.max_events || bytes > self.limits.max_bytes {
                if let Some((&id, &size)) = oldest.next() {
                    evict.push(id);
                    len -= 1;
                    bytes -= size;
                } else if skip_new < items.len() {
                    len -= 1;
                    bytes -= sizes[skip_new];
                    skip_new += 1;
                } else {
                    break;
                }
            }
        }
        let sequences = self.sequences.clone();
        self.write(true, |tx| {
            let mut table = tx.open_table(EVENTS)?;
            for id in &evict {
                table.remove(*id)?;
            }
            let mut buf = Vec::new();
            for (i, (topic, payload)) in items.iter().enumerate().skip(skip_new) {
                encode(topic, payload, &mut buf);
                table.insert(first_id + i as u64, buf.as_slice())?;
            }
            let mut seqs = tx.open_table(SEQUENCES)?;
            for (camera, seq) in &sequences {
                seqs.insert(camera.as_str(), *seq)?;
            }
            Ok(())
        })?;
        for id in &evict {
            if let Some(size) = self.sizes.remove(id) {
                self.len -= 1;
                self.bytes -= size;
            }
        }
        for (i, size) in sizes.into_iter().enumerate().skip(skip_new) {
            self.sizes.insert(first_id + i as u64, size);
            self.len += 1;
            self.bytes += size;
        }
        self.next_id = first_id + items.len() as u64;
        let evicted = (evict.len() + skip_new) as u64;
        if evicted > 0 {
            let before = self.dropped;
            self.dropped += evicted;
            // Logged at powers of two: a long outage must not flood the journal.
            if (before + 1..=self.dropped).any(u64::is_power_of_two) {
                tracing::warn!(
                    dropped = self.dropped,
                    "event queue full ({} events, {} bytes max): oldest events dropped",
                    self.limits.max_events,
                    self.limits.max_bytes
                );
            }
        }
        Ok(evicted)
    }

    /// Up to `limit` records with id ≥ `from`, in order. A record whose checksum fails is removed and skipped.
    pub fn read_from(&mut self, from: u64, limit: usize) -> Result<Vec<Record>, QueueError> {
        let io = |source| QueueError::Io { path: self.path.clone(), source };
        let mut out = Vec::with_capacity(limit.min(64));
        let mut damaged = Vec::new();
        {
            let read = self.db.begin_read().map_err(|e| io(boxed(e)))?;
            let table = read.open_table(EVENTS).map_err(|e| io(boxed(e)))?;
            for entry in table.range(from..).map_err(|e| io(boxed(e)))? {
                if out.len() >= limit {
                    break;
                }
                let (id, value) = entry.map_err(|e| io(boxed(e)))?;
                match decode(id.value(), value.value()) {
                    Some(r) => out.push(r),
                    None => damaged.push(id.value()),
                }
            }
        }
        if !damaged.is_empty() {
            tracing::error!("event queue {}: {} damaged event(s) skipped", self.path.display(), damaged.len());
            self.remove(&damaged)?;
        }
        Ok(out)
    }

    /// Removes acknowledged events. Made durable by the next [`Queue::push`], [`Queue::flush`], or at
    /// the latest after [`ACK_FLUSH`].
    pub fn remove(&mut self, ids: &[u64]) -> Result<(), QueueError> {
        let present: Vec<u64> = ids.iter().copied().filter(|id| self.sizes.contains_key(id)).collect();
        if present.is_empty() {
            return Ok(());
        }
        let durable = self.last_durable.elapsed() >= ACK_FLUSH;
        self.delete(&present, durable)?;
        for id in present {
            if let Some(size) = self.sizes.remove(&id) {
                self.len -= 1;
                self.bytes -= size;
            }
        }
        Ok(())
    }

    /// Deletes records by id in one commit; a non-durable one is made durable by a later commit.
    fn delete(&mut self, ids: &[u64], durable: bool) -> Result<(), QueueError> {
        self.write(durable, |tx| {
            let mut table = tx.open_table(EVENTS)?;
            for id in ids {
                table.remove(*id)?;
            }
            Ok(())
        })?;
        if !durable {
            self.pending_removals = true;
        }
        Ok(())
    }

    /// Makes pending removals durable (and lets redb reclaim their pages).
    pub fn flush(&mut self) -> Result<(), QueueError> {
        if self.pending_removals {
            self.write(true, |_| Ok(()))?;
        }
        Ok(())
    }

    /// Whether removals are waiting for a durable commit older than [`ACK_FLUSH`].
    pub fn flush_due(&self) -> bool {
        self.pending_removals && self.last_durable.elapsed() >= ACK_FLUSH
    }

    /// The oldest queued event's id (the next id when empty).
    pub fn first_id(&self) -> u64 {
        self.sizes.keys().next().copied().unwrap_or(self.next_id)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events dropped because the queue was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

enum Opened {
    Clean(Queue),
    Salvaged {
        records: Vec<Record>,
        sequences: HashMap<String, u64>,
        problem: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn encode(topic: &str, payload: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    // Topics are far shorter than 64 KiB (MQTT allows that much; ours are a few dozen bytes).
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[4..]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a stored value is intact: long enough, and its CRC matches.
fn check(value: &[u8]) -> bool {
    value.len() >= HEADER
        && value[..4].try_into().is_ok_and(|crc| u32::from_le_bytes(crc) == crc32fast::hash(&value[4..]))
}

/// Every record that can still be read from a damaged file, in order, up to the first error.
fn salvage(db: &Database) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(read) = db.begin_read() else { return out };
    let Ok(events) = read.open_table(EVENTS) else { return out };
    let Ok(iter) = events.iter() else { return out };
    for entry in iter {
        let Ok((id, value)) = entry else { break };
        if let Some(r) = decode(id.value(), value.value()) {
            out.push(r);
        }
    }
    out
}

/// Why an open failure is not damage to work around, if it is not.
enum NotDamage {
    /// Permissions, a second daemon: the user's to fix (exit 2).
    Fixable(&'static str),
    /// The disk is full or read-only, or the quota is reached: the machine's to fix; retried (exit 1).
    Io,
}

impl std::fmt::Display for NotDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotDamage::Fixable(why) => f.write_str(why),
            NotDamage::Io => f.write_str("the disk refused the write (full, read-only or over quota)"),
        }
    }
}

fn not_damage(problem: &(dyn std::error::Error + 'static)) -> Option<NotDamage> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(problem);
    while let Some(e) = current {
        if let Some(redb::DatabaseError::DatabaseAlreadyOpen) = e.downcast_ref::<redb::DatabaseError>() {
            return Some(NotDamage::Fixable(
                "in use by another process (a second camclassd with the same [queue] path?)",
            ));
        }
        let io = e
            .downcast_ref::<std::io::Error>()
            .or_else(|| match e.downcast_ref::<redb::StorageError>() {
                Some(redb::StorageError::Io(io)) => Some(io),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<redb::DatabaseError>() {
                Some(redb::DatabaseError::Storage(redb::StorageError::Io(io))) => Some(io),
                _ => None,
            });
        if let Some(io) = io {
            return match io.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => Some(NotDamage::Fixable(
                    "permission denied (the daemon's user must be able to write it; or set [queue] path to a writable file)",
                )),
                Some(libc::ENOSPC | libc::EROFS | libc::EDQUOT) => Some(NotDamage::Io),
                _ => None,
            };
        }
        current = e.source();
    }
    None
}

fn decode(id: u64, value: &[u8]) -> Option<Record> {
    if value.len() < HEADER {
        return None;
    }
    let crc = u32::from_le_bytes(value[..4].try_into().ok()?);
    if crc32fast::hash(&value[4..]) != crc {
        return None;
    }
    let topic_len = u16::from_le_bytes(value[4..6].try_into().ok()?) as usize;
    let topic = value.get(HEADER..HEADER + topic_len)?;
    let topic = std::str::from_utf8(topic).ok()?.to_string();
    Some(Record { id, topic, payload: value[HEADER + topic_len..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_events: 1000, max_bytes: 1 << 20 };

    fn items(range: std::ops::Range<u32>) -> Vec<(String, Vec<u8>)> {
        range.map(|i| (format!("t/{i}"), format!("payload {i}").into_bytes())).collect()
    }

    #[test]
    fn records_come_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let mut q = Queue::open(&path, LIMITS).unwrap();
            assert_eq!(q.next_seq("porch"), 1);
            assert_eq!(q.next_seq("porch"), 2);
            q.push(&items(0..5)).unwrap();
            let r = q.read_from(q.first_id(), 3).unwrap();
            assert_eq!(r.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(), ["t/0", "t/1", "t/2"]);
            q.remove(&[r[0].id, r[1].id]).unwrap();
            q.flush().unwrap();
        }
        let mut q = Queue::open(&path, LIMITS).unwrap();
        assert_eq!(q.len(), 3);
        let r = q.read_from(0, 10).unwrap();
        assert_eq!(
            r.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
            [b"payload 2".to_vec(), b"payload 3".to_vec(), b"payload 4".to_vec()]
        );
        // Sequence numbers continue where they stopped.
        assert_eq!(q.next_seq("porch"), 3);
        assert_eq!(q.next_seq("garage"), 1);
        // New ids follow the old ones.
        q.push(&items(5..6)).unwrap();
        assert!(q.read_from(0, 10).unwrap().windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn records_already_handed_to_the_broker_are_dropped_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("q.redb"), Limits { max_events: 10, max_bytes: 1 << 20 }).unwrap();
        q.push(&items(0..10)).unwrap();
        // Records 0..3 were sent (the subscriber has them or will have them): the next oldest go instead.
        let handed_over = q.read_from(0, 3).unwrap()[2].id + 1;
        assert_eq!(q.push_keeping(&items(10..12), handed_over).unwrap(), 2);
        let topics: Vec<String> = q.read_from(0, 20).unwrap().into_iter().map(|r| r.topic).collect();
        assert_eq!(topics[..4], ["t/0", "t/1", "t/2", "t/5"]);
        assert_eq!(q.dropped(), 2, "the two never sent: the gap a subscriber sees");
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(&dir.path().join("q.redb"), Limits { max_events: 10, max_bytes: 1 << 20 }).unwrap();
        q.push(&items(0..8)).unwrap();
        assert_eq!(q.push(&items(8..14)).unwrap(), 4);
        assert_eq!(q.len(), 10);
        assert_eq!(q.dropped(), 4);
        assert_eq!(q.read_from(0, 1).unwrap()[0].topic, "t/4");
        // The byte limit holds too.
        let mut q = Queue::open(&dir.path().join("b.redb"), Limits { max_events: 1000, max_bytes: 100 }).unwrap();
        q.push(&items(0..20)).unwrap();
        assert!(q.bytes() <= 100, "{} bytes", q.bytes());
        assert_eq!(q.read_from(0, 100).unwrap().last().unwrap().topic, "t/19");
    }

    #[test]
    fn damaged_records_are_skipped_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let mut q = Queue::open(&path, LIMITS).unwrap();
            q.push(&items(0..3)).unwrap();
            // Damage the middle record's payload behind the queue's back.
            let tx = q.db.begin_write().unwrap();
            {
                let mut t = tx.open_table(EVENTS).unwrap();
                let mut buf = Vec::new();
                encode("t/1", b"payload 1", &mut buf);
                let last = buf.len() - 1;
                buf[last] ^= 0xff;
                t.insert(2, buf.as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        let mut q = Queue::open(&path, LIMITS).unwrap();
        let topics: Vec<String> = q.read_from(0, 10).unwrap().into_iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["t/0", "t/2"]);
    }

    #[test]
    fn a_queue_file_deleted_while_open_is_written_again_with_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("qdel");
        let path = folder.join("q.redb");
        let mut q = Queue::open(&path, LIMITS).unwrap();
        q.next_seq("porch");
        q.push(&items(0..5)).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        q.ensure_file().unwrap();
        assert!(path.is_file(), "recreated");
        q.push(&items(5..7)).unwrap();
        let ids: Vec<u64> = q.read_from(0, 100).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..=7).collect::<Vec<_>>(), "same ids, none lost");
        drop(q);
        let mut q = Queue::open(&path, LIMITS).unwrap();
        assert_eq!(q.len(), 7, "the next start has them all");
        assert_eq!(q.next_seq("porch"), 2, "seq kept");
    }

    #[test]
    fn what_is_not_a_queue_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("camclassd.toml");
        std::fs::write(&config, "version = 1\n").unwrap();
        for path in [config.as_path(), dir.path(), Path::new("/dev/null")] {
            let err = Queue::open(path, LIMITS).unwrap_err();
            assert!(matches!(err, QueueError::Foreign { .. }), "{}: {err}", path.display());
            assert!(err.to_string().contains("never replaces it"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "version = 1\n", "the file is untouched");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing moved aside or created");
    }

    #[test]
    fn an_unreadable_queue_is_moved_aside_and_a_fresh_queue_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        // redb's header, then garbage: a queue damaged past its first bytes.
        let mut bytes = REDB_MAGIC.to_vec();
        bytes.extend(vec![0x5a; 10_000]);
        std::fs::write(&path, bytes).unwrap();
        let mut q = Queue::open(&path, LIMITS).unwrap();
        assert!(q.is_empty());
        q.push(&items(0..1)).unwrap();
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("q.redb.corrupt-"));
        assert!(aside, "the damaged file is kept for inspection");
    }

    #[test]
    fn a_truncated_file_never_crashes_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let mut q = Queue::open(&path, LIMITS).unwrap();
            for i in 0..50 {
                q.push(&items(i * 10..i * 10 + 10)).unwrap();
            }
        }
        let full = std::fs::read(&path).unwrap();
        for cut in [full.len() / 2, full.len() - 1, 4096, 100, 0] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let mut q = Queue::open(&path, LIMITS).unwrap();
            q.push(&items(0..1)).unwrap();
            drop(q);
            let _ = std::fs::remove_file(&path);
        }
    }
}
