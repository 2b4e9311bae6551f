//! Layouts shared by the eBPF programs and the daemon.
//!
//! Every type here is `#[repr(C)]`, has no `bool`, no Rust `enum`, no pointer
//! and no implicit padding, and carries a compile-time size assertion, so the
//! kernel and userspace views of a record cannot drift apart silently.
//! Discriminants are `u32`/`u8` values with named constants.
#![no_std]

pub mod event;
pub mod limits;
pub mod offsets;

#[cfg(feature = "user")]
mod user;

/// Asserts at compile time that a shared type has the size the layout
/// comment promises, so an added field without matching padding fails the
/// build instead of corrupting records.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
