//! The commands that read and print limits.

pub mod check;
pub mod limits;
pub mod trace;
