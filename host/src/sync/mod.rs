//! The sync: the uniform data model (`model`), the SQLite sync file that
//! holds every run (`sync_file`) and the lock a sync holds on it
//! (`writer_lock`), where a run goes on from (`checkpoint`),
//! the driver that walks a connector page by page (`driver`), and access
//! reviews read from the file (`review`: export and diff; `query`: the
//! API's paged listings).

pub mod checkpoint;
pub mod driver;
mod key_table;
pub mod model;
pub mod query;
pub mod review;
pub mod sync_file;
pub mod work;
pub mod writer_lock;

pub use driver::{run, run_pool, run_with, Interrupted, StopRequest, SyncOptions, SyncSummary, STOP_GRACE};
pub use sync_file::SyncFile;
