//! The cluster admin's configuration, read at start: which metric providers tenants may
//! use (`providers`) and the default release windows (`windows`).

pub mod providers;
pub mod windows;
