//! Whether two connections are the two legs of one relay, judged on the
//! kernel's byte counts and first-payload times alone: pure functions,
//! tested on synthetic legs.
//!
//! A relay passes on what it received: what came in on one leg goes out on
//! the other, both ways, and never before it came in. The tests here are
//! written for that behaviour, never for a tool, a port or a name:
//!
//! - **exchange**: the bytes match exactly both ways once a request and its
//!   answer went through (a port forward), or match once the proxy
//!   handshake the relaying process read before it dialled is taken off
//!   (a SOCKS or HTTP CONNECT proxy, a custom one);
//! - **bulk**: both ways carried the volume threshold and balance within
//!   a slack for handshakes and framing;
//! - **tunnel**: the second leg's bytes travel inside the first, framed
//!   (encrypted, multiplexed): over the second leg's life the first leg
//!   carried a little more than it, each way (an sshd serving a forward).
//!
//! Every test also checks causality: data cannot leave on one leg before
//! it arrived on the other. Two unrelated exchanges of equal size (a
//! client asking two servers the same thing) fail that.

/// Byte counts and times of one leg, from the kernel's per-flow counters
/// (payload bytes, TCP counted once by sequence number).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// First packet (boot ns).
    pub first_ns: u64,
    /// Last packet (boot ns), 0 when unknown.
    pub last_ns: u64,
    /// First payload byte received and sent (boot ns), 0 when none yet or
    /// unknown (a flow seeded at start).
    pub first_in_ns: u64,
    pub first_out_ns: u64,
}

/// What the relaying process had received from and sent on the first leg
/// when it dialled the second: the handshake it consumed (a proxy request
/// and the replies to it), from the kernel's socket activity records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handshake {
    pub received: u64,
    pub sent: u64,
}

/// The second leg's counts against the first leg's movement over the
/// second leg's life (for framed tunnels): `received` and `sent` are what
/// the relaying process read from and wrote to the first leg meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub received: u64,
    pub sent: u64,
}

/// A proxy's reply after it connected (SOCKS4 8 bytes, SOCKS5 10 to 22,
/// an HTTP `200 Connection established` with a header or two), allowed on
/// top of the handshake when the first leg spoke a known proxy protocol.
pub const PROXY_REPLY_MAX: u64 = 256;
/// A known proxy protocol's request, when the handshake was not recorded
/// (the request line and headers of an HTTP CONNECT).
pub const PROXY_REQUEST_MAX: u64 = 512;
/// The same for an unknown protocol whose client sent a request before the
/// dial: a short acknowledgement.
pub const UNKNOWN_REPLY_MAX: u64 = 64;
/// Bulk legs balance within this many bytes, or 10%.
pub const BULK_SLACK: u64 = 4096;
/// Framing a tunnel adds: at most this plus half the payload, each way.
pub const TUNNEL_FRAMING: u64 = 2048;
/// First-payload times are read from the boot clock, which every CPU
/// shares: no disorder to allow for. A relay's send follows the arrival it
/// passes on by at least a wakeup and two system calls, while two probes
/// one after the other can be a few microseconds apart.
const ORDER_SLACK_NS: u64 = 0;

/// Whether `x` and `y` agree within `slack` bytes or 10%.
pub fn close(x: u64, y: u64, slack: u64) -> bool {
    x.abs_diff(y) <= slack.max(x.max(y) / 10)
}

/// Whether the two legs carried traffic at the same time: a leg that ended
/// before the other began belongs to another client. Last times have tick
/// resolution; 0 is unknown.
pub fn overlap(a: &Counts, b: &Counts) -> bool {
    let slack = crate::clock::LAST_SEEN_SLACK_NS;
    !((b.last_ns != 0 && a.first_ns > b.last_ns + slack)
        || (a.last_ns != 0 && b.first_ns > a.last_ns + slack))
}

/// Whether `later` is not before `earlier` (both known), with the slack.
fn not_before(later: u64, earlier: u64) -> bool {
    later + ORDER_SLACK_NS >= earlier
}

/// Causality of a relay between `a` and `b`, in whichever orientation the
/// data took: the leg where data arrived first is the requester; what the
/// other leg sent must come after that arrival, and what the requester got
/// back must come after the other leg's first answer, unless the requester
/// was answered by a proxy handshake first (`handshake`: a known proxy
/// protocol, or the relaying process had read or written on the leg before
/// it dialled). Unknown times (0: flows older than the monitor) do not
/// refute.
pub fn causal(a: &Counts, b: &Counts, handshake: bool) -> bool {
    let known = |c: &Counts| c.first_in_ns != 0 && c.first_out_ns != 0;
    if !known(a) || !known(b) {
        return true;
    }
    let (req, srv) = if a.first_in_ns <= b.first_in_ns {
        (a, b)
    } else {
        (b, a)
    };
    if !not_before(srv.first_out_ns, req.first_in_ns) {
        return false;
    }
    handshake || not_before(req.first_out_ns, srv.first_in_ns)
}

/// Everything moved both ways on both legs.
fn both_ways(a: &Counts, b: &Counts) -> bool {
    a.bytes_in > 0 && a.bytes_out > 0 && b.bytes_in > 0 && b.bytes_out > 0
}

/// The exchange test. `client` is the leg the relaying process read from
/// before it dialled `server` (with the handshake it had consumed, when the
/// kernel recorded it); `proxy` says the client leg spoke a known proxy
/// protocol. Without a handshake record the legs may be either way round.
pub fn exchange(
    client: &Counts,
    server: &Counts,
    handshake: Option<Handshake>,
    proxy: bool,
) -> bool {
    if !both_ways(client, server) || !overlap(client, server) {
        return false;
    }
    let forward = client.bytes_in as i128 - server.bytes_out as i128;
    let back = client.bytes_out as i128 - server.bytes_in as i128;
    let reply_max = |hs: &Handshake| -> i128 {
        if proxy {
            PROXY_REPLY_MAX as i128
        } else if hs.received > 0 {
            UNKNOWN_REPLY_MAX as i128
        } else {
            0
        }
    };
    // A pure relay (a port forward) passes every byte: nothing was kept
    // back, so nothing excuses an answer that came before the data it
    // would relay.
    if forward == 0 && back == 0 && causal(client, server, false) {
        return true;
    }
    let matched = match handshake {
        // What was read before the dial was the handshake (for known
        // protocols a client may also send data before the reply,
        // optimistically), and everything written back beyond the
        // handshake's replies and a short post-dial reply was relayed.
        Some(hs) => {
            let (got, sent) = (hs.received as i128, hs.sent as i128);
            let forward_ok = forward == got || (proxy && (0..=got).contains(&forward));
            got > 0 && forward_ok && back >= sent && back <= sent + reply_max(&hs)
        }
        // A known proxy protocol whose handshake was not recorded (no
        // activity tracepoints): within the request and reply bounds.
        None if proxy => {
            (0..=PROXY_REQUEST_MAX as i128).contains(&forward)
                && (0..=PROXY_REPLY_MAX as i128).contains(&back)
        }
        None => false,
    };
    // The handshake's replies came before the relayed data.
    matched && causal(client, server, true)
}

/// The bulk test: at least `volume` bytes each way through both legs,
/// balanced within the slack, in causal order.
pub fn bulk(a: &Counts, b: &Counts, volume: u64, handshake: bool) -> bool {
    overlap(a, b)
        && a.bytes_in.min(b.bytes_out) >= volume
        && b.bytes_in.min(a.bytes_out) >= volume
        && close(a.bytes_in, b.bytes_out, BULK_SLACK)
        && close(b.bytes_in, a.bytes_out, BULK_SLACK)
        && causal(a, b, handshake)
}

/// The tunnel test: over `server`'s life the client leg moved `window`,
/// which holds the server leg's bytes each way plus framing (at least a
/// byte, at most `TUNNEL_FRAMING` and half the payload).
pub fn tunnel(window: &Window, server: &Counts) -> bool {
    let holds = |outer: u64, inner: u64| {
        inner > 0 && outer > inner && outer <= inner + inner / 2 + TUNNEL_FRAMING
    };
    holds(window.received, server.bytes_out) && holds(window.sent, server.bytes_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// A leg opened at `t` ms that first received at `fin` and first sent
    /// at `fout` ms (0: never).
    fn leg(t: u64, fin: u64, fout: u64, bytes_in: u64, bytes_out: u64) -> Counts {
        Counts {
            bytes_in,
            bytes_out,
            first_ns: t * MS,
            last_ns: (t + 1000) * MS,
            first_in_ns: fin * MS,
            first_out_ns: fout * MS,
        }
    }

    #[test]
    fn a_port_forward_matches_at_its_first_exchange() {
        // Client leg: request of 78 in at 10 ms, 300 answer out at 30.
        // Target leg: opened at 12, request out at 15, answer in at 25.
        let client = leg(1, 10, 30, 78, 300);
        let target = leg(12, 25, 15, 300, 78);
        assert!(exchange(&client, &target, None, false));
        assert!(exchange(&target, &client, None, false), "either way round");
        // Symmetric volumes (64 KiB each way) are no obstacle.
        let client = leg(1, 2, 4, 65536, 65536);
        let target = leg(2, 3, 2, 65536, 65536);
        assert!(exchange(&client, &target, None, false));
        assert!(bulk(&client, &target, 16384, false));
    }

    #[test]
    fn one_byte_off_is_not_an_exchange_without_a_handshake() {
        let client = leg(1, 10, 30, 79, 300);
        let target = leg(12, 25, 15, 300, 78);
        assert!(!exchange(&client, &target, None, false));
    }

    #[test]
    fn a_client_asking_two_servers_the_same_is_no_relay() {
        // Equal sizes everywhere, but each answer came before the other
        // leg received anything: two exchanges, not one relayed.
        let a = leg(1, 5, 2, 100, 100);
        let b = leg(10, 15, 12, 100, 100);
        assert!(!exchange(&a, &b, None, false));
        assert!(!bulk(&a, &b, 50, false));
        // An echo server's two clients, served one after the other.
        let a = leg(1, 2, 3, 40000, 40000);
        let b = leg(10, 11, 12, 40000, 40000);
        assert!(!bulk(&a, &b, 16384, false));
    }

    #[test]
    fn probes_one_after_the_other_are_no_relay_even_with_a_trigger() {
        // A monitoring agent read the first answer, then dialled the next
        // service and asked the same: equal bytes, the trigger names the
        // first connection, but its request went out before anything came
        // back on the second.
        let a = leg(1, 3, 2, 78, 78);
        let b = leg(4, 6, 5, 78, 78);
        let hs = Handshake {
            received: 78,
            sent: 78,
        };
        assert!(!exchange(&a, &b, Some(hs), false));
        assert!(!exchange(&a, &b, None, false));
    }

    #[test]
    fn a_web_app_querying_a_database_is_no_relay() {
        // Request 400 in, query 120 out, answer 2000 in, page 5000 out; the
        // app read the request before it dialled.
        let web = leg(1, 2, 40, 400, 5000);
        let db = leg(10, 30, 12, 2000, 120);
        let hs = Handshake {
            received: 400,
            sent: 0,
        };
        assert!(!exchange(&web, &db, Some(hs), false));
        assert!(!exchange(&web, &db, None, false));
        // Nearly equal sizes: a small API answering with the row and a
        // header of 90 bytes, the query the size of the request.
        let web = leg(1, 2, 40, 150, 390);
        let db = leg(10, 30, 12, 300, 150);
        assert!(!exchange(
            &web,
            &db,
            Some(Handshake {
                received: 150,
                sent: 0
            }),
            false
        ));
    }

    #[test]
    fn proxy_handshakes_are_taken_off() {
        // SOCKS5: greeting 3 and request 10 read before the dial, method
        // reply 2 sent before it; then reply 10, and 78/300 relayed.
        let client = leg(1, 2, 3, 13 + 78, 2 + 10 + 300);
        let target = leg(5, 20, 9, 300, 78);
        let hs = Handshake {
            received: 13,
            sent: 2,
        };
        assert!(exchange(&client, &target, Some(hs), true));
        // An unknown protocol: a 20-byte request and a 5-byte "OK" after
        // the dial.
        let client = leg(1, 2, 8, 20 + 78, 5 + 300);
        let hs = Handshake {
            received: 20,
            sent: 0,
        };
        assert!(exchange(&client, &target, Some(hs), false));
        // An HTTP CONNECT proxy without the activity tracepoints: the
        // handshake is unknown, the known protocol bounds it.
        let client = leg(1, 2, 8, 60 + 78, 39 + 300);
        assert!(exchange(&client, &target, None, true));
        assert!(!exchange(&client, &target, None, false));
    }

    #[test]
    fn legs_that_never_overlapped_are_two_clients() {
        let mut a = leg(1, 2, 30, 78, 300);
        a.last_ns = 40 * MS;
        let mut b = leg(2000, 2025, 2015, 300, 78);
        b.last_ns = 2100 * MS;
        assert!(!exchange(&a, &b, None, false));
    }

    #[test]
    fn flows_older_than_the_monitor_are_judged_on_bytes() {
        let a = Counts {
            bytes_in: 50000,
            bytes_out: 90000,
            ..Counts::default()
        };
        let b = Counts {
            bytes_in: 90000,
            bytes_out: 49000,
            ..Counts::default()
        };
        assert!(bulk(&a, &b, 16384, false));
    }

    #[test]
    fn a_tunnel_carries_the_second_leg_inside_the_first() {
        // ssh -L: 78 bytes up and 300 down through an encrypted session
        // that added about 40 bytes a message and the channel's open,
        // confirm, EOF and close.
        let target = leg(10, 20, 12, 300, 78);
        let w = Window {
            received: 78 + 180,
            sent: 300 + 220,
        };
        assert!(tunnel(&w, &target));
        // Nothing moved on the session meanwhile (a PAM lookup, a web app
        // waiting for its database): no tunnel.
        assert!(!tunnel(
            &Window {
                received: 0,
                sent: 400
            },
            &target
        ));
        // The session was busy with far more than the leg carried.
        assert!(!tunnel(
            &Window {
                received: 50_000,
                sent: 400
            },
            &target
        ));
    }
}
