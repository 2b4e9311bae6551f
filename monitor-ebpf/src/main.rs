//! eBPF programs of the monitor. Each hook family lives in its own module
//! under `probes`; shared kernel-reading helpers live in `kernel`.
#![no_std]
#![no_main]
// Atomic adds on map values; see `probes::net::add`.
#![allow(internal_features)]
#![feature(core_intrinsics)]
// Map keys are passed by reference on purpose: by value they would be
// copied onto the 512-byte stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod kernel;
mod maps;
mod probes;

/// The programs call GPL-only helpers (`bpf_probe_read_kernel`, ...), so
/// the object declares a GPL-compatible licence.
#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never run.
    loop {}
}
