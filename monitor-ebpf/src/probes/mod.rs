//! Programs, one module per hook family. Programs are named
//! `<family>_<hook>`: userspace attaches them by that name.

pub mod net;
pub mod process;
