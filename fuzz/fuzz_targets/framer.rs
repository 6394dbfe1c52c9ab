//! Fuzzes the stream framer with arbitrary bytes in arbitrary chunks.
//!
//! Besides "never panics", it checks the framer's central promise: the events
//! and error do not depend on how the bytes were split. The first input bytes
//! steer the run (chunk sizes, limits, a valid header prefix, restarts) so the
//! fuzzer spends its effort past the stream header.
#![no_main]

use aviary_xmpp::{Event, Framer, Limits, StreamError};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

struct Run {
    limits: Limits,
    /// Restart after each element whose name starts with `a` (like `<auth/>`).
    restart: bool,
}

impl Run {
    fn transcript<'a>(
        &self,
        chunks: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<Result<Event, StreamError>> {
        let mut framer = Framer::new(self.limits);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.feed(chunk);
            loop {
                match framer.next_event() {
                    Ok(Some(ev)) => {
                        if self.restart
                            && matches!(&ev, Event::Element(el) if el.name().starts_with('a'))
                        {
                            framer.restart();
                        }
                        out.push(Ok(ev));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        assert_eq!(framer.next_event(), Err(e.clone()), "errors are sticky");
                        assert_eq!(framer.buffered_len(), 0);
                        out.push(Err(e));
                        return out;
                    }
                }
                assert!(
                    framer.buffered_len() <= self.limits.max_stanza_bytes.max(4096) + chunk.len()
                );
            }
        }
        out
    }
}

/// Splits `data` into chunks whose sizes come from `sizes`, cycling.
fn chunks<'a>(mut data: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let size = sizes
            .get(i % sizes.len().max(1))
            .map_or(1, |&s| usize::from(s) % 17 + 1);
        i += 1;
        let (chunk, rest) = data.split_at(size.min(data.len()));
        data = rest;
        Some(chunk)
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, n_sizes, rest @ ..] = data else {
        return;
    };
    let (sizes, body) = rest.split_at(usize::from(*n_sizes % 8).min(rest.len()));
    let run = Run {
        limits: if flags & 1 == 0 {
            Limits::default()
        } else {
            Limits {
                max_stanza_bytes: 64,
                max_depth: 3,
            }
        },
        restart: flags & 2 != 0,
    };
    let mut input = Vec::with_capacity(HEADER.len() + body.len());
    if flags & 4 != 0 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(body);

    let whole = run.transcript(std::iter::once(input.as_slice()));
    let split = run.transcript(chunks(&input, sizes));
    assert_eq!(whole, split, "chunking changed the outcome");
});
