//! One module per `tether` command.

pub mod describe;
pub mod diff;
pub mod export;
pub mod inspect;
pub mod module;
pub mod module_oci;
pub mod report;
pub mod serve;
pub mod sync;
pub mod write;
