//! The epoch chain on disk: tree `epochs` (number, big-endian, -> encoded
//! epoch) and tree `epochs/meta` (the worker's last checkpoint, the bus
//! watermark). An epoch is appended only on top of the head, and flushed
//! before anyone is told about it.

use std::sync::{Arc, Mutex};

use vigil_protocols::epoch::Epoch;
use vigil_protocols::vdf::{Progress, State};

use crate::store::{decode_value, encode_value, SledStore, Store};
use crate::{Error, Result};

const EPOCHS: &str = "epochs";
const META: &str = "epochs/meta";
const PROGRESS_KEY: &[u8] = b"progress";
const PUBLISHED_KEY: &[u8] = b"bus-published";
const FORMAT: u8 = 1;

/// What [`EpochStore::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored as the new head.
    New,
    /// The same epoch was already stored.
    Duplicate,
}

/// Why an epoch could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Not `head + 1`.
    #[error("epoch {got} does not follow the head {head}")]
    OutOfOrder {
        /// Current head.
        head: u64,
        /// Offered.
        got: u64,
    },
    /// Another epoch with this number is stored.
    #[error("epoch {0} differs from the one stored")]
    Conflict(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

/// The worker's resumable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedProgress {
    /// Epoch being computed.
    pub number: u64,
    /// Its input (a resume for another input is discarded).
    pub input: State,
    /// Progress at the last checkpoint.
    pub progress: Progress,
}

/// The epoch chain in sled; cheap to clone.
#[derive(Debug, Clone)]
pub struct EpochStore {
    store: SledStore,
    append_lock: Arc<Mutex<()>>,
}

fn corrupt(why: impl ToString) -> Error {
    Error::Corrupt {
        tree: EPOCHS.into(),
        why: why.to_string(),
    }
}

impl EpochStore {
    /// The chain in `store`.
    pub fn new(store: SledStore) -> Self {
        Self {
            store,
            append_lock: Arc::new(Mutex::new(())),
        }
    }

    /// Highest epoch stored (0: none).
    pub fn head(&self) -> Result<u64> {
        Ok(match self.store.last(EPOCHS)? {
            Some((k, _)) => u64::from_be_bytes(k.as_slice().try_into().map_err(corrupt)?),
            None => 0,
        })
    }

    /// Epoch `n`, if stored.
    pub fn get(&self, n: u64) -> Result<Option<Epoch>> {
        self.store
            .get(EPOCHS, &n.to_be_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Encoded epochs `from ..`, at most `count` and `max_bytes`.
    pub fn range_encoded(&self, from: u64, count: u32, max_bytes: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (k, v) in self
            .store
            .range_from(EPOCHS, &from.to_be_bytes(), count as usize)?
        {
            let n = u64::from_be_bytes(k.as_slice().try_into().map_err(corrupt)?);
            if n != from + out.len() as u64 {
                break;
            }
            let body = decode_value(EPOCHS, FORMAT, &v)?;
            if bytes + body.len() > max_bytes {
                break;
            }
            bytes += body.len();
            out.push(body.to_vec());
        }
        Ok(out)
    }

    /// Appends `e` on top of the head and flushes.
    pub fn append(&self, e: &Epoch) -> std::result::Result<Appended, AppendError> {
        let _g = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.head()?;
        if e.number <= head {
            return match self.get(e.number)? {
                Some(stored) if stored == *e => Ok(Appended::Duplicate),
                _ => Err(AppendError::Conflict(e.number)),
            };
        }
        if e.number != head + 1 {
            return Err(AppendError::OutOfOrder { head, got: e.number });
        }
        self.store.insert(
            EPOCHS,
            &e.number.to_be_bytes(),
            &encode_value(FORMAT, &e.encode()),
        )?;
        self.store.flush()?;
        Ok(Appended::New)
    }

    /// Removes epochs `n ..` (a rollback) and any worker progress built on
    /// them; flushed. How many epochs went.
    pub fn truncate_from(&self, n: u64) -> Result<usize> {
        let _g = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.head()?;
        let mut b = crate::store::Batch::default();
        for k in n.max(1)..=head {
            b.remove(EPOCHS, &k.to_be_bytes());
        }
        if self.load_progress()?.is_some_and(|p| p.number > n) {
            b.remove(META, PROGRESS_KEY);
        }
        self.store.apply(&b)?;
        self.store.flush()?;
        Ok(head.saturating_sub(n - 1) as usize)
    }

    /// Saves the worker's progress (flushed: a kill resumes from here).
    pub fn save_progress(&self, p: &SavedProgress) -> Result<()> {
        let mut b = Vec::with_capacity(80 + 32 * p.progress.checkpoints.len());
        b.extend_from_slice(&p.number.to_be_bytes());
        b.extend_from_slice(&p.input);
        b.extend_from_slice(&p.progress.done.to_be_bytes());
        b.extend_from_slice(&p.progress.state);
        for c in &p.progress.checkpoints {
            b.extend_from_slice(c);
        }
        self.store.insert(META, PROGRESS_KEY, &encode_value(FORMAT, &b))?;
        self.store.flush()?;
        Ok(())
    }

    /// The saved progress, if any (a corrupt record is reported, not used).
    pub fn load_progress(&self) -> Result<Option<SavedProgress>> {
        let Some(v) = self.store.get(META, PROGRESS_KEY)? else {
            return Ok(None);
        };
        let b = decode_value(META, FORMAT, &v)?;
        let bad = || Error::Corrupt {
            tree: META.into(),
            why: format!("progress record of {} bytes", b.len()),
        };
        if b.len() < 76 || (b.len() - 76) % 32 != 0 {
            return Err(bad());
        }
        let number = u64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
        let input: State = b[8..40].try_into().map_err(|_| bad())?;
        let done = u32::from_be_bytes(b[40..44].try_into().map_err(|_| bad())?);
        let state: State = b[44..76].try_into().map_err(|_| bad())?;
        let checkpoints: Vec<State> = b[76..]
            .chunks_exact(32)
            .map(|c| c.try_into().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        if checkpoints.len() != done as usize && checkpoints.len() + 1 != done as usize {
            return Err(bad());
        }
        Ok(Some(SavedProgress {
            number,
            input,
            progress: Progress {
                done,
                state,
                checkpoints,
            },
        }))
    }

    /// Forgets the saved progress.
    pub fn clear_progress(&self) -> Result<()> {
        self.store.remove(META, PROGRESS_KEY)?;
        Ok(())
    }

    /// Highest epoch confirmed on the bus topic `epoch.new`.
    pub fn bus_published(&self) -> Result<u64> {
        Ok(match self.store.get(META, PUBLISHED_KEY)? {
            Some(v) => u64::from_be_bytes(decode_value(META, FORMAT, &v)?.try_into().map_err(corrupt)?),
            None => 0,
        })
    }

    /// Records the bus watermark.
    pub fn set_bus_published(&self, n: u64) -> Result<()> {
        self.store
            .insert(META, PUBLISHED_KEY, &encode_value(FORMAT, &n.to_be_bytes()))
    }
}

fn decode(v: &[u8]) -> Result<Epoch> {
    Epoch::decode(decode_value(EPOCHS, FORMAT, v)?).map_err(corrupt)
}
