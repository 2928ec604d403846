//! One module per `tether` command.

pub mod describe;
pub mod inspect;
pub mod module;
pub mod sync;
pub mod write;
